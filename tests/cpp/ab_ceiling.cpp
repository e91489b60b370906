// A "build" for tests/cpp/bench_ab.cpp whose linear is not lowbit's operator but the ceiling it
// is held against: a plain walk over the same packed W4 group-32 tiles with the M=1 masked
// kernel's per-block work (4 code loads, 8 masks, 8 vpdpbusd with the activations broadcast
// from memory, the bf16 scales widened and applied per group) and nothing per tile or per call
// beyond a function call and a 16-float store. Wrong results (no zero point, no activation
// quantization); the timing is the point: on 2026-12-06 it read 1.02 of the one-core read
// where the operator read 0.85, which is how the per-tile stalls in docs/cpu_kernels.md
// ("Per-call work out of the tiles") were found. Only BITS=4 GROUP=32 M=1.
//   g++ -std=c++17 -O3 -march=native -fPIC -shared tests/cpp/ab_ceiling.cpp \
//       csrc/kernels/*.cpp csrc/operator/*.cpp -o /tmp/ab_ceiling.so -ldl -pthread
//   N=14336 K=4096 /tmp/bench_ab 4 32 1 1 /tmp/ab_new.so /tmp/ab_ceiling.so
//   N=14336 K=4096 READ_THREADS=2 /tmp/bench_ab 4 32 1 2 /tmp/ab_new.so /tmp/ab_ceiling.so   (both cores)
#define AB_SHIM
#define AB_OWN_LINEAR
#include "bench_ab.cpp"  // the other exports (kernel selection, packing) as in every build

#include <immintrin.h>

namespace {
// vpdpbusd with the 4 activation bytes broadcast from memory, as the kernel's I::dot_mem
inline __m512i dot_mem(__m512i acc, __m512i codes, const int8_t* x4) {
  asm("vpdpbusd %[x]%{1to16%}, %[c], %[acc]" : [acc] "+v"(acc) : [c] "v"(codes), [x] "m"(*(const int32_t*)x4));
  return acc;
}

alignas(64) int8_t g_x[1 << 17];  // activations (zeros: values do not change the timing)

constexpr int64_t kRecord = 288;  // W4 g32 bf16 symmetric: 256 bytes of codes, 16 bf16 scales

__attribute__((noinline)) void walk_tile(const uint8_t* tile, int64_t groups, float* out) {
  const __m512i lo = _mm512_set1_epi8(0x0f), hi = _mm512_set1_epi8(char(0xf0));
  __m512 y = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* rec = tile + g * kRecord;
    const int8_t* xk = g_x + g * 32;
    __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
    for (int v = 0; v < 4; ++v) {
      const __m512i c = _mm512_loadu_si512(rec + 64 * v);
      a0 = dot_mem(a0, _mm512_and_si512(c, lo), xk + 8 * v);
      a1 = dot_mem(a1, _mm512_and_si512(c, hi), xk + 8 * v + 4);
    }
    const __m512i t = _mm512_add_epi32(a0, _mm512_srai_epi32(a1, 4));
    const __m256i sb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rec + 256));
    const __m512 s = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(sb), 16));
    y = _mm512_add_ps(y, _mm512_mul_ps(s, _mm512_cvtepi32_ps(t)));
  }
  _mm512_storeu_ps(out, y);
}
}  // namespace

extern "C" void ab_linear(const void*, const uint16_t*, int m, int64_t k, const uint8_t* w, int64_t sz,
                          uint16_t* out, int64_t n, int threads, bool) {
  const PackedHeader h = read_header(w, sz);
  if (h.bits != 4 || h.group_size != 32 || m != 1 || k > int64_t(sizeof g_x)) {
    std::fprintf(stderr, "ab_ceiling: only BITS=4 GROUP=32 M=1, K <= %zu\n", sizeof g_x);
    std::exit(2);
  }
  // threads > 1: contiguous shares of the tiles on lowbit's pool (the operator hands out
  // contiguous chunks too)
  const int64_t tiles = (n + 15) / 16, per = (tiles + threads - 1) / threads;
  parallel_run(threads, [&](int id) {
    alignas(64) float y[16];
    for (int64_t t = id * per; t < std::min(tiles, (id + 1) * per); ++t) {
      walk_tile(w + kHeaderBytes + t * h.tile_bytes, k / 32, y);
      out[t % n] = uint16_t(_mm_cvtsi128_si32(_mm_castps_si128(_mm_set_ss(y[0]))) >> 16);
    }
  });
}
