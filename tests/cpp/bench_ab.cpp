// In-process A/B of builds of the CPU kernels: each build is a shared library (this file
// compiled with -DAB_SHIM into it), loaded with dlopen(RTLD_LOCAL); one round calls every
// build on cold weights in the same buffers and takes a one-thread read of as many bytes,
// builds in turn, so all builds see the same bandwidth phase and the same pages. Prints the median per-round time ratio of each build
// to the first one, and each build's median ratio to the read. Not a test. From the repo root:
//   for v in A B; do  # e.g. B with -DLOWBIT_...=...
//     g++ -std=c++17 -O3 -ffp-contract=off -fno-math-errno -fPIC -shared -DAB_SHIM $FLAGS_$v \
//         csrc/kernels/*.cpp csrc/operator/*.cpp tests/cpp/bench_ab.cpp -o /tmp/ab_$v.so -ldl
//   done
//   g++ -std=c++17 -O3 -march=native tests/cpp/bench_ab.cpp -o /tmp/bench_ab -ldl
//   /tmp/bench_ab BITS GROUP M THREADS /tmp/ab_A.so /tmp/ab_B.so   (env N K ROUNDS ISA FACT READ_THREADS PHASE_GBS)
// tests/cpp/run_ab.sh does both for a base tree and this one over a list of cases;
// tests/cpp/ab_ceiling.cpp is a build to hold the kernels against (a bare walk of the tiles).
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#ifdef AB_SHIM
#include "../../csrc/operator/linear_op.h"
#include "../../csrc/operator/thread_pool.h"
#include "bench_common.h"
using namespace lowbit;
extern "C" {
// the reference read on `threads` threads of lowbit's pool (contiguous parts, as the operator's)
int64_t ab_read(const uint8_t* p, int64_t n, int threads) {
  std::vector<int64_t> part(size_t(threads), 0);
  const int64_t per = n / threads / 256 * 256;
  parallel_run(threads, [&](int t) { part[size_t(t)] = bench::readsum(p + t * per, size_t(per)); });
  int64_t s = 0;
  for (int64_t v : part) s += v;
  return s;
}
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
  int64_t sz;
  std::vector<uint8_t> master;  // the packed weights, copied into the shared buffers before each use
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
  const int rounds = getenv("ROUNDS") ? atoi(getenv("ROUNDS")) : 12, copies = 3;  // calls a round, each on its own copy
  const bool fact = getenv("FACT") && atoi(getenv("FACT"));
  // READ_THREADS=t: the reference read on t threads (the first build's lowbit pool; default 1)
  const int read_threads = getenv("READ_THREADS") ? atoi(getenv("READ_THREADS")) : 1;
  const Inputs in(bits, gs, M, N, K);
  std::vector<uint16_t> out(size_t(M) * N);
  std::vector<Build> builds;
  int64_t (*read_mt)(const uint8_t*, int64_t, int) = nullptr;
  for (int i = 5; i < argc; ++i) {
    void* h = dlopen(argv[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      std::fprintf(stderr, "%s\n", dlerror());
      return 2;
    }
    Build b{argv[i]};
    b.ks = sym<const void* (*)(const char*)>(h, "ab_select")(getenv("ISA") ? getenv("ISA") : "avx512vnni");
    b.sz = sym<int64_t (*)(int, int, int64_t, int64_t)>(h, "ab_packed_size")(bits, gs, N, K);
    b.master.resize(size_t(b.sz));
    sym<void (*)(const uint8_t*, const uint16_t*, int, int, int64_t, int64_t, uint8_t*, int64_t)>(h, "ab_pack")(
        in.q.data(), in.s.data(), bits, gs, N, K, b.master.data(), b.sz);
    b.linear = sym<decltype(b.linear)>(h, "ab_linear");
    if (builds.empty()) read_mt = sym<decltype(read_mt)>(h, "ab_read");
    builds.push_back(std::move(b));
  }
  // Every build runs on the same buffers: its packed weights are copied into them before its
  // calls. With a buffer set per build, identical builds differed by up to 40% in one process
  // (where the pages landed), and reading the first build's next copy as the reference left
  // it warm in L3 for that build (a ~10% bias in its favour until 2026-12-06). A 64 MiB read
  // between the copy and the calls leaves the weights cold; the builds run forwards, then
  // backwards. The reference read walks buffers of its own.
  int64_t sz = 0;
  for (auto& b : builds) sz = std::max(sz, b.sz);
  int64_t stride, fstride, rstride;
  uint8_t* buf = huge_copies(sz, copies, &stride);
  uint8_t* flush = huge_copies(64 << 20, 1, &fstride);
  uint8_t* rbuf = huge_copies(builds[0].sz, copies, &rstride);
  std::memset(flush, 1, size_t(fstride));
  std::memset(rbuf, 1, size_t(rstride * copies));
  std::vector<double> tr;
  volatile int64_t sink = 0;
  int rc = 0;
  for (int r = 0; r < rounds; ++r) {
    for (size_t j = 0; j < builds.size(); ++j) {
      Build& b = builds[r % 2 ? builds.size() - 1 - j : j];
      for (int c = 0; c < copies; ++c) std::memcpy(buf + c * stride, b.master.data(), size_t(b.sz));
      sink = sink + readsum(flush, size_t(fstride));
      std::vector<double> tk;
      for (int c = 0; c < copies; ++c) {
        const double t0 = now();
        b.linear(b.ks, in.x.data(), M, K, buf + c * stride, b.sz, out.data(), N, threads, fact);
        tk.push_back(now() - t0);
      }
      b.t.push_back(median(tk));
      const double t0 = now();
      if (read_threads > 1) sink = sink + read_mt(rbuf + rc * rstride, builds[0].sz, read_threads);
      else sink = sink + readsum(rbuf + rc * rstride, builds[0].sz / 256 * 256);
      tr.push_back(now() - t0);
      rc = (rc + 1) % copies;
    }
    for (auto& b : builds) b.ratio.push_back(b.t.back() / builds[0].t.back());
  }
  const double mr = median(tr);
  std::printf("W%d g%d M%d thr%d N%ld K%ld, %d rounds; %d-thread read %.0f us (%.1f GB/s)\n", bits, gs, M, threads,
              long(N), long(K), rounds, read_threads, mr * 1e6, builds[0].sz / mr / 1e9);
  for (auto& b : builds)
    std::printf("  %-28s %6.0f us  read/call %.3f  time / first build %.3f\n", b.path, median(b.t) * 1e6,
                mr / median(b.t) * double(b.sz) / double(builds[0].sz), median(b.ratio));
  // PHASE_GBS=x: the same per build, over the calls whose round-neighbour read ran >= x GB/s
  // (the VM's high-bandwidth phases come and go; tr[i] is the read right after call set i)
  if (const char* ph = getenv("PHASE_GBS")) {
    const double gbs = atof(ph);
    for (auto& b : builds) {
      std::vector<double> rr;
      for (size_t r = 0; r < b.t.size(); ++r) {
        const size_t i = r * builds.size() + (r % 2 ? builds.size() - 1 - size_t(&b - builds.data()) : size_t(&b - builds.data()));
        if (builds[0].sz / tr[i] / 1e9 >= gbs) rr.push_back(tr[i] / b.t[r] * double(b.sz) / double(builds[0].sz));
      }
      if (rr.empty()) std::printf("  %-28s no round read >= %.0f GB/s\n", b.path, gbs);
      else std::printf("  %-28s read/call %.3f over %zu rounds read >= %.0f GB/s\n", b.path, median(rr), rr.size(), gbs);
    }
  }
}
#endif
