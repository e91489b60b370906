// Shared by the cold-weight timing tools (bench_cold.cpp, bench_ab.cpp): the clock, the
// one-thread read they compare against, and the random bf16 weights / activations they pack.
#pragma once

#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

namespace bench {

inline double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// int64 sum of n bytes (a multiple of 256): the one-thread read the kernels are held against
__attribute__((noinline, target("avx512f"))) inline int64_t readsum(const uint8_t* p, size_t n) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < n; i += 256) {
    a0 = _mm512_add_epi64(a0, _mm512_load_si512(p + i));
    a1 = _mm512_add_epi64(a1, _mm512_load_si512(p + i + 64));
    a2 = _mm512_add_epi64(a2, _mm512_load_si512(p + i + 128));
    a3 = _mm512_add_epi64(a3, _mm512_load_si512(p + i + 192));
  }
  return _mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
}

// Canonical inputs of one shape: bf16 activations x [M][K], codes q (bits per code, packed
// canonically: any byte is valid), bf16 scales s [N][K/gs]; fixed seed.
struct Inputs {
  std::vector<uint16_t> x, s;
  std::vector<uint8_t> q;
  Inputs(int bits, int gs, int m, int64_t n, int64_t k) : x(size_t(m) * k), s(size_t(n) * (k / gs)), q(size_t(n) * k * bits / 8) {
    std::mt19937 rng(1);
    for (auto& v : x) v = uint16_t(0x3f80 + (rng() % 0x7f) - 0x40) ^ ((rng() & 1) << 15);
    for (auto& v : q) v = uint8_t(rng());
    for (auto& v : s) v = 0x3c00 + rng() % 256;
  }
};

// `copies` buffers of `bytes` each on 2 MiB pages, `*stride` apart (rotated so every call reads
// from DRAM)
inline uint8_t* huge_copies(int64_t bytes, int copies, int64_t* stride) {
  *stride = (bytes + (2 << 20) - 1) / (2 << 20) * (2 << 20);
  auto* buf = static_cast<uint8_t*>(std::aligned_alloc(2 << 20, *stride * copies));
  madvise(buf, *stride * copies, MADV_HUGEPAGE);
  return buf;
}

}  // namespace bench
