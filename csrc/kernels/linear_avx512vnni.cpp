// linear_{MR}x16x32_f32_avx512vnni: int8 x u8 micro-kernels on AVX-512 VNNI (vpdpbusd).
//
// One zmm holds a whole 16x4 code vector: lane r = row r's 4 codes (u8). The 4 activation
// bytes of the current k-quad are broadcast to all lanes ({1to16}) and
//   vpdpbusd acc, codes(u8), x(s8)     acc[r] += sum_j codes[4r+j] * x[j]
// updates 16 output rows per instruction, without saturation. Codes are unsigned and the
// activations signed, exactly vpdpbusd's operand types, so every width 1..8 runs unchanged.
// The group epilogue is vectorized over the 16 rows (scales widened from bf16/f16/f32,
// zero-point correction in int32, fp32 mul then add: no FMA, for bit-exactness).
// Built with function-level target flags (this file only), chosen at run time.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

#if defined(__x86_64__)
#include <immintrin.h>

#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma,avx2,bmi2")

#include "isa_avx512.h"
#include "linear_tile.h"

namespace lowbit {
namespace {

LOWBIT_INLINE __m512 load16(const void* x, DType t, int64_t i) {
  switch (t) {
    case DType::f32: return _mm512_loadu_ps(static_cast<const float*>(x) + i);
    case DType::bf16: {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(x) + i));
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    default:
      return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(x) + i)));
  }
}

// Vectorized activation quantization; same arithmetic as quantize_row_generic (true
// division, round half to even, clamp), so the two agree bit for bit. K, gs: multiples of 16.
void quantize_row_avx512(const void* x, DType t, int64_t k, int gs, int8_t* xq, int32_t* xsum, float* sx) {
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  __m512 vmax = _mm512_setzero_ps();
  for (int64_t i = 0; i < k; i += 16) vmax = _mm512_max_ps(vmax, _mm512_and_ps(load16(x, t, i), abs_mask));
  const float amax = _mm512_reduce_max_ps(vmax);
  const float s = amax > 0.f ? amax / 127.0f : 1.0f;
  const __m512 vs = _mm512_set1_ps(s), lo = _mm512_set1_ps(-127.f), hi = _mm512_set1_ps(127.f);
  for (int64_t g = 0; g < k / gs; ++g) {
    __m512i vsum = _mm512_setzero_si512();
    for (int64_t i = g * gs; i < (g + 1) * gs; i += 16) {
      __m512 q = _mm512_roundscale_ps(_mm512_div_ps(load16(x, t, i), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      q = _mm512_min_ps(_mm512_max_ps(q, lo), hi);
      const __m512i qi = _mm512_cvtps_epi32(q);
      vsum = _mm512_add_epi32(vsum, qi);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(xq + i), _mm512_cvtepi32_epi8(qi));
    }
    xsum[g] = _mm512_reduce_add_epi32(vsum);
  }
  *sx = s;
}

constexpr KernelSet kSet = make_kernel_set<IsaAvx512Vnni>("avx512vnni", 8, &quantize_row_avx512);

}  // namespace

const KernelSet* kernels_avx512vnni() { return &kSet; }

}  // namespace lowbit

#else  // not x86-64

#include "kernels.h"
namespace lowbit {
const KernelSet* kernels_avx512vnni() { return nullptr; }
}  // namespace lowbit

#endif
