// Cold-weight timing of the real int8-activation linear against a one-thread read of the same
// bytes, interleaved (3 calls, 3 reads, per round; 4 weight copies on 2 MiB pages, rotated, so
// every call streams from DRAM). The ratio is what docs/cpu_kernels.md ("One stream per tile")
// compares between builds: run two builds' binaries alternately, since this VM's bandwidth
// drifts. Not a test. From the repository root:
//   mkdir -p /tmp/lb && (cd /tmp/lb && g++ -std=c++17 -O3 -ffp-contract=off -fno-math-errno -pthread \
//       -c $OLDPWD/csrc/kernels/*.cpp $OLDPWD/csrc/operator/*.cpp)
//   g++ -std=c++17 -O3 -march=native -c tests/cpp/bench_cold.cpp -o /tmp/lb/bench_cold.o
//   g++ -pthread /tmp/lb/*.o -o /tmp/bench_cold -ldl
//   /tmp/bench_cold BITS GROUP M THREADS          (env N=14336 K=4096 ROUNDS=12 ISA=avx512vnni FACT=0)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <random>
#include <algorithm>
#include <sys/mman.h>
#include <immintrin.h>
#include "../../csrc/operator/linear_op.h"
using namespace lowbit;
static double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
__attribute__((noinline)) int64_t readsum(const uint8_t* p, size_t n) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < n; i += 256) {
    a0 = _mm512_add_epi64(a0, _mm512_load_si512(p + i)); a1 = _mm512_add_epi64(a1, _mm512_load_si512(p + i + 64));
    a2 = _mm512_add_epi64(a2, _mm512_load_si512(p + i + 128)); a3 = _mm512_add_epi64(a3, _mm512_load_si512(p + i + 192));
  }
  return _mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
}
int main(int argc, char** argv) {
  int bits = argc > 1 ? atoi(argv[1]) : 4, gs = argc > 2 ? atoi(argv[2]) : 32, M = argc > 3 ? atoi(argv[3]) : 1;
  int threads = argc > 4 ? atoi(argv[4]) : 1;
  int64_t N = getenv("N") ? atol(getenv("N")) : 14336, K = getenv("K") ? atol(getenv("K")) : 4096;
  const bool fact = getenv("FACT") && atoi(getenv("FACT"));  // weight-only (fp32 activation) kernels
  int copies = 4, rounds = getenv("ROUNDS") ? atoi(getenv("ROUNDS")) : 12;
  const KernelSet* ks = select_kernels(getenv("ISA") ? getenv("ISA") : "avx512vnni");
  std::mt19937 rng(1);
  std::vector<uint16_t> x(size_t(M) * K);
  for (auto& v : x) v = uint16_t(0x3f80 + (rng() % 0x7f) - 0x40) ^ ((rng() & 1) << 15);
  std::vector<uint8_t> q(size_t(N) * K * bits / 8);
  for (auto& v : q) v = uint8_t(rng());
  std::vector<uint16_t> s(size_t(N) * (K / gs));
  for (auto& v : s) v = 0x3c00 + rng() % 256;
  int64_t sz = packed_size(bits, gs, N, K, DType::bf16, ZeroKind::symmetric);
  size_t stride = (sz + (2 << 20) - 1) / (2 << 20) * (2 << 20);
  uint8_t* buf = (uint8_t*)std::aligned_alloc(2 << 20, stride * copies);
  madvise(buf, stride * copies, MADV_HUGEPAGE);
  for (int c = 0; c < copies; ++c)
    pack_weights(q.data(), s.data(), nullptr, DType::f32, bits, gs, N, K, DType::bf16, ZeroKind::symmetric, buf + c * stride, sz, 1);
  std::vector<uint16_t> out(size_t(M) * N);
  std::vector<double> tk, tr;
  int c = 0;
  volatile int64_t sink = 0;
  for (int r = 0; r < rounds; ++r) {
    for (int i = 0; i < 3; ++i, c = (c + 1) % copies) {
      LinearArgs a{x.data(), DType::bf16, M, K, K, buf + c * stride, sz, nullptr, out.data(), DType::bf16, N, threads, fact};
      double t0 = now(); linear(a, *ks); tk.push_back(now() - t0);
    }
    for (int i = 0; i < 3; ++i, c = (c + 1) % copies) {
      double t0 = now(); sink += readsum(buf + c * stride, sz / 256 * 256); tr.push_back(now() - t0);
    }
  }
  std::sort(tk.begin(), tk.end()); std::sort(tr.begin(), tr.end());
  double mk = tk[tk.size() / 2], mr = tr[tr.size() / 2];
  printf("W%d g%d M%d thr%d N%ld K%ld: kernel %.0f us (%.1f GB/s, best %.1f), 1-thread read %.0f us (%.1f GB/s)  ratio %.2f\n", bits, gs, M, threads, N, K,
         mk * 1e6, sz / mk / 1e9, sz / tk[0] / 1e9, mr * 1e6, sz / mr / 1e9, mr / mk);
}
