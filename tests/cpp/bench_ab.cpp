// In-process A/B of builds of the CPU kernels: each build is a shared library (this file
// compiled with -DAB_SHIM into it), loaded with dlopen(RTLD_LOCAL); one round calls every
// build on cold weights and takes a one-thread read of the same bytes, builds in turn, so all
// builds see the same bandwidth phase. Prints the median per-round time ratio of each build
// to the first one, and each build's median ratio to the read. Not a test. From the repo root:
//   for v in A B; do  # e.g. B with -DLOWBIT_...=...
//     g++ -std=c++17 -O3 -ffp-contract=off -fno-math-errno -fPIC -shared -DAB_SHIM $FLAGS_$v \
//         csrc/kernels/*.cpp csrc/operator/*.cpp tests/cpp/bench_ab.cpp -o /tmp/ab_$v.so -ldl
//   done
//   g++ -std=c++17 -O3 -march=native tests/cpp/bench_ab.cpp -o /tmp/bench_ab -ldl
//   /tmp/bench_ab BITS GROUP M THREADS /tmp/ab_A.so /tmp/ab_B.so   (env N K ROUNDS ISA FACT)
// tests/cpp/run_ab.sh does both for a base tree and this one over a list of cases;
// tests/cpp/ab_ceiling.cpp is a build to hold the kernels against (a bare walk of the tiles).
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#ifdef AB_SHIM
#include "../../csrc/operator/linear_op.h"
using namespace lowbit;
extern "C" {
const void* ab_select(const char* isa) { return select_kernels(isa); }
int64_t ab_packed_size(int bits, int gs, int64_t n, int64_t k) {
  return packed_size(bits, gs, n, k, DType::bf16, ZeroKind::symmetric);
}
void ab_pack(const uint8_t* q, const uint16_t* s, int bits, int gs, int64_t n, int64_t k, uint8_t* dst, int64_t sz) {
  pack_weights(q, s, nullptr, DType::f32, bits, gs, n, k, DType::bf16, ZeroKind::symmetric, dst, sz, 1);
}
#ifndef AB_OWN_LINEAR  // a build that times something else in lowbit's place (ab_ceiling.cpp)
void ab_linear(const void* ks, const uint16_t* x, int m, int64_t k, const uint8_t* w, int64_t sz, uint16_t* out,
               int64_t n, int threads, bool fact) {
  LinearArgs a{x, DType::bf16, m, k, k, w, sz, nullptr, out, DType::bf16, n, threads, fact};
  linear(a, *static_cast<const KernelSet*>(ks));
}
#endif
}
#else
#include <dlfcn.h>

#include <cstring>

#include "bench_common.h"
using namespace bench;

namespace {
struct Build {
  const char* path;
  const void* ks;
  int64_t sz, stride;
  uint8_t* buf;
  void (*linear)(const void*, const uint16_t*, int, int64_t, const uint8_t*, int64_t, uint16_t*, int64_t, int, bool);
  std::vector<double> t, ratio;  // per-round median call time; call time / first build's
};
template <class T>
T sym(void* h, const char* name) {
  void* p = dlsym(h, name);
  if (!p) {
    std::fprintf(stderr, "%s\n", dlerror());
    std::exit(2);
  }
  return reinterpret_cast<T>(p);
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: %s BITS GROUP M THREADS LIB.so [LIB.so ...]\n", argv[0]);
    return 2;
  }
  const int bits = atoi(argv[1]), gs = atoi(argv[2]), M = atoi(argv[3]), threads = atoi(argv[4]);
  const int64_t N = getenv("N") ? atol(getenv("N")) : 14336, K = getenv("K") ? atol(getenv("K")) : 4096;
  const int rounds = getenv("ROUNDS") ? atoi(getenv("ROUNDS")) : 12, copies = 4;
  const bool fact = getenv("FACT") && atoi(getenv("FACT"));
  const Inputs in(bits, gs, M, N, K);
  std::vector<uint16_t> out(size_t(M) * N);
  std::vector<Build> builds;
  for (int i = 5; i < argc; ++i) {
    void* h = dlopen(argv[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      std::fprintf(stderr, "%s\n", dlerror());
      return 2;
    }
    Build b{argv[i]};
    b.ks = sym<const void* (*)(const char*)>(h, "ab_select")(getenv("ISA") ? getenv("ISA") : "avx512vnni");
    b.sz = sym<int64_t (*)(int, int, int64_t, int64_t)>(h, "ab_packed_size")(bits, gs, N, K);
    b.buf = huge_copies(b.sz, copies, &b.stride);
    auto pack = sym<void (*)(const uint8_t*, const uint16_t*, int, int, int64_t, int64_t, uint8_t*, int64_t)>(h, "ab_pack");
    for (int c = 0; c < copies; ++c) pack(in.q.data(), in.s.data(), bits, gs, N, K, b.buf + c * b.stride, b.sz);
    b.linear = sym<decltype(b.linear)>(h, "ab_linear");
    builds.push_back(b);
  }
  std::vector<double> tr;
  volatile int64_t sink = 0;
  int c = 0;
  for (int r = 0; r < rounds; ++r) {
    for (auto& b : builds) {
      std::vector<double> tk;
      for (int i = 0; i < 3; ++i, c = (c + 1) % copies) {
        const double t0 = now();
        b.linear(b.ks, in.x.data(), M, K, b.buf + c * b.stride, b.sz, out.data(), N, threads, fact);
        tk.push_back(now() - t0);
      }
      b.t.push_back(median(tk));
      const uint8_t* p = builds[0].buf + c * builds[0].stride;
      const double t0 = now();
      sink = sink + readsum(p, builds[0].sz / 256 * 256);
      tr.push_back(now() - t0);
    }
    for (auto& b : builds) b.ratio.push_back(b.t.back() / builds[0].t.back());
  }
  const double mr = median(tr);
  std::printf("W%d g%d M%d thr%d N%ld K%ld, %d rounds; one-thread read %.0f us (%.1f GB/s)\n", bits, gs, M, threads,
              long(N), long(K), rounds, mr * 1e6, builds[0].sz / mr / 1e9);
  for (auto& b : builds)
    std::printf("  %-28s %6.0f us  read/call %.3f  time / first build %.3f\n", b.path, median(b.t) * 1e6,
                mr / median(b.t) * double(b.sz) / double(builds[0].sz), median(b.ratio));
}
#endif
