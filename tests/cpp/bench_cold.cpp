// Cold-weight timing of the real int8-activation linear against a one-thread read of the same
// bytes, interleaved (3 calls, 3 reads, per round; 4 weight copies on 2 MiB pages, rotated, so
// every call streams from DRAM). The ratio is what docs/cpu_kernels.md ("One stream per tile")
// compared between builds until bench_ab.cpp, which runs several builds in one process (this
// VM's bandwidth drifts: alternating binaries of this one moved +-5-10%). Not a test. From the
// repository root:
//   mkdir -p /tmp/lb && (cd /tmp/lb && g++ -std=c++17 -O3 -ffp-contract=off -fno-math-errno -pthread \
//       -c $OLDPWD/csrc/kernels/*.cpp $OLDPWD/csrc/operator/*.cpp)
//   g++ -std=c++17 -O3 -march=native -c tests/cpp/bench_cold.cpp -o /tmp/lb/bench_cold.o
//   g++ -pthread /tmp/lb/*.o -o /tmp/bench_cold -ldl
//   /tmp/bench_cold BITS GROUP M THREADS          (env N=14336 K=4096 ROUNDS=12 ISA=avx512vnni FACT=0)
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../../csrc/operator/linear_op.h"
#include "bench_common.h"
using namespace lowbit;
using namespace bench;
int main(int argc, char** argv) {
  int bits = argc > 1 ? atoi(argv[1]) : 4, gs = argc > 2 ? atoi(argv[2]) : 32, M = argc > 3 ? atoi(argv[3]) : 1;
  int threads = argc > 4 ? atoi(argv[4]) : 1;
  int64_t N = getenv("N") ? atol(getenv("N")) : 14336, K = getenv("K") ? atol(getenv("K")) : 4096;
  const bool fact = getenv("FACT") && atoi(getenv("FACT"));  // weight-only (fp32 activation) kernels
  int copies = 4, rounds = getenv("ROUNDS") ? atoi(getenv("ROUNDS")) : 12;
  const KernelSet* ks = select_kernels(getenv("ISA") ? getenv("ISA") : "avx512vnni");
  const Inputs in(bits, gs, M, N, K);
  int64_t sz = packed_size(bits, gs, N, K, DType::bf16, ZeroKind::symmetric), stride;
  uint8_t* buf = huge_copies(sz, copies, &stride);
  for (int c = 0; c < copies; ++c)
    pack_weights(in.q.data(), in.s.data(), nullptr, DType::f32, bits, gs, N, K, DType::bf16, ZeroKind::symmetric, buf + c * stride, sz, 1);
  std::vector<uint16_t> out(size_t(M) * N);
  std::vector<double> tk, tr;
  int c = 0;
  volatile int64_t sink = 0;
  for (int r = 0; r < rounds; ++r) {
    for (int i = 0; i < 3; ++i, c = (c + 1) % copies) {
      LinearArgs a{in.x.data(), DType::bf16, M, K, K, buf + c * stride, sz, nullptr, out.data(), DType::bf16, N, threads, fact};
      double t0 = now(); linear(a, *ks); tk.push_back(now() - t0);
    }
    for (int i = 0; i < 3; ++i, c = (c + 1) % copies) {
      double t0 = now(); sink = sink + readsum(buf + c * stride, sz / 256 * 256); tr.push_back(now() - t0);
    }
  }
  std::sort(tk.begin(), tk.end());
  double mk = median(tk), mr = median(tr);
  printf("W%d g%d M%d thr%d N%ld K%ld: kernel %.0f us (%.1f GB/s, best %.1f), 1-thread read %.0f us (%.1f GB/s)  ratio %.2f\n", bits, gs, M, threads, long(N), long(K),
         mk * 1e6, sz / mk / 1e9, sz / tk[0] / 1e9, mr * 1e6, sz / mr / 1e9, mr / mk);
}
