// Hot per-block timing of the int8-activation linear (AVX-512 VNNI kernels), one thread,
// weights L1/L2-resident: the compute cost of a 16x32 block without DRAM, from the
// difference of two N (so per-call costs cancel; per-tile costs do not). Not a test.
//   g++ -std=c++17 -O3 -ffp-contract=off -fno-math-errno -pthread tests/cpp/bench_tile.cpp \
//       csrc/kernels/*.cpp csrc/operator/*.cpp -o /tmp/bench_tile
//   /tmp/bench_tile BITS[,BITS...] [GROUP=32] [M=1]      (KB_K=K, KB_NS=n0,n1,n2 override)
// Cycles assume 3.64 GHz (the 2-core Zen4 VM's measured clock).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <random>
#include <algorithm>
#include "../../csrc/operator/linear_op.h"
using namespace lowbit;
static double time_call(const LinearArgs& a, const KernelSet& ks, int iters) {
  std::vector<double> ts;
  for (int r = 0; r < 7; ++r) {
    auto s = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) linear(a, ks);
    auto e = std::chrono::steady_clock::now();
    ts.push_back(std::chrono::duration<double, std::nano>(e - s).count() / iters);
  }
  std::sort(ts.begin(), ts.end());
  return ts[3];
}
int main(int argc, char** argv) {
  int K = getenv("KB_K") ? atoi(getenv("KB_K")) : 4096, gs = argc > 2 ? atoi(argv[2]) : 32;
  int M = argc > 3 ? atoi(argv[3]) : 1;
  const char* bitsl = argc > 1 ? argv[1] : "1,2,3,4";
  const KernelSet* ks = select_kernels("avx512vnni");
  std::mt19937 rng(1);
  std::vector<uint16_t> x(size_t(M) * K);
  for (auto& v : x) v = uint16_t(0x3f80 + (rng() % 0x7f) - 0x40) ^ ((rng() & 1) << 15);
  for (const char* p = bitsl; *p; ) {
    int bits = atoi(p);
    while (*p && *p != ',') ++p;
    if (*p) ++p;
    double res[3];
    int Ns[3] = {32, 256, 64};
    if (getenv("KB_NS")) sscanf(getenv("KB_NS"), "%d,%d,%d", &Ns[0], &Ns[1], &Ns[2]);  // tiles: 32 rows (L1-ish), 256 rows (L2)
    for (int t = 0; t < 3; ++t) {
      int N = Ns[t];
      std::vector<uint8_t> q(size_t(N) * K * bits / 8);
      for (auto& v : q) v = uint8_t(rng());
      std::vector<uint16_t> s(size_t(N) * (K / gs));
      for (auto& v : s) v = 0x3c00 + rng() % 256;
      int64_t sz = packed_size(bits, gs, N, K, DType::bf16, ZeroKind::symmetric);
      std::vector<uint8_t> buf(sz + 64);
      uint8_t* dst = buf.data() + (64 - (uintptr_t(buf.data()) & 63)) % 64;
      pack_weights(q.data(), s.data(), nullptr, DType::f32, bits, gs, N, K, DType::bf16, ZeroKind::symmetric, dst, sz, 1);
      std::vector<uint16_t> out(size_t(M) * N);
      LinearArgs a{x.data(), DType::bf16, M, K, K, dst, sz, nullptr, out.data(), DType::bf16, N, 1, false};
      res[t] = time_call(a, *ks, 20000000 / (N * K / 16) + 10);
    }
    double blocks_small = Ns[0] / 16 * K / 32, blocks_big = Ns[1] / 16 * K / 32, blocks_mid = Ns[2]/16*K/32;
    double per_blk = (res[1] - res[0]) / (blocks_big - blocks_small);
    double per_blk_l1 = (res[2] - res[0]) / (blocks_mid - blocks_small);
    printf("W%d g%d M%d: N32 %.0f ns, N64 %.0f, N256 %.0f ns  -> %.2f ns/block (L2) = %.1f cyc; L1-ish %.2f ns = %.1f cyc\n", bits, gs, M, res[0], res[2], res[1], per_blk, per_blk * 3.64, per_blk_l1, per_blk_l1*3.64);
  }
}
