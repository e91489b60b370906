// DRAM streaming of one or more threads over 256 MiB each on huge pages, for the question of
// what one core can read while it works (docs/cpu_kernels.md, "Software prefetch distance").
// Not a test, and not lowbit's kernel: a loop that reads S interleaved streams per thread and,
// with WORK=1, does a W4-like unpack (two masks) and 8 vpdpbusd per 256-byte block.
//   g++ -std=c++17 -O2 -march=native -pthread tests/cpp/bench_stream.cpp -o /tmp/bench_stream
//   /tmp/bench_stream THREADS STREAMS PREFETCH_BYTES WORK      (best of 5, GB/s of all threads)
#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

constexpr size_t kBytes = 256ul << 20;  // per thread, >> L3
constexpr size_t kBlock = 256;          // one W4 block of the 16x32 tile: 4 vectors

// Per block: software prefetch ``dist`` bytes ahead (prefetcht1, as the kernels), the loads,
// and with ``work`` the unpack + dots; S streams are walked block by block in turn.
template <int S>
int64_t walk(const char* p, size_t dist, bool work) {
  __m512i acc[8];
  for (auto& a : acc) a = _mm512_setzero_si512();
  const __m512i x = _mm512_set1_epi8(3), low = _mm512_set1_epi8(15);
  const size_t per = kBytes / S;
  for (size_t i = 0; i < per; i += kBlock) {
    for (int s = 0; s < S; ++s) {
      const char* b = p + s * per + i;
      if (dist)
        for (int l = 0; l < 4; ++l) _mm_prefetch(b + dist + 64 * l, _MM_HINT_T1);
      for (int l = 0; l < 4; ++l) {
        const __m512i v = _mm512_load_si512(b + 64 * l);
        if (work) {
          acc[2 * l] = _mm512_dpbusd_epi32(acc[2 * l], _mm512_and_si512(v, low), x);
          acc[2 * l + 1] = _mm512_dpbusd_epi32(acc[2 * l + 1], _mm512_and_si512(_mm512_srli_epi16(v, 4), low), x);
        } else {
          acc[l] = _mm512_add_epi64(acc[l], v);
        }
      }
    }
  }
  __m512i t = acc[0];
  for (int i = 1; i < 8; ++i) t = _mm512_add_epi32(t, acc[i]);
  return _mm512_reduce_add_epi32(t);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s THREADS STREAMS(1,2,4) PREFETCH_BYTES WORK(0,1)\n", argv[0]);
    return 2;
  }
  const int threads = std::atoi(argv[1]), streams = std::atoi(argv[2]), work = std::atoi(argv[4]);
  const size_t dist = std::strtoul(argv[3], nullptr, 10);
  if (threads < 1 || (streams != 1 && streams != 2 && streams != 4)) {
    std::fprintf(stderr, "THREADS >= 1 and STREAMS in 1, 2, 4\n");
    return 2;
  }
  std::vector<char*> bufs;
  for (int t = 0; t < threads; ++t) {
    const size_t n = kBytes + (1 << 20);  // slack for prefetches past the end
    char* b = static_cast<char*>(std::aligned_alloc(2 << 20, n));
    madvise(b, n, MADV_HUGEPAGE);
    std::memset(b, 1, n);
    bufs.push_back(b);
  }
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        volatile int64_t sink = streams == 1 ? walk<1>(bufs[t], dist, work)
                                : streams == 2 ? walk<2>(bufs[t], dist, work) : walk<4>(bufs[t], dist, work);
        (void)sink;
      });
    for (auto& th : pool) th.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, threads * kBytes / s / 1e9);
  }
  std::printf("threads %d streams %d prefetch %zu B work %d: %.1f GB/s\n", threads, streams, dist, work, best);
  for (char* b : bufs) std::free(b);
  return 0;
}
