// linear_{MR}x16x32_f32_avx2: int8 x u8 micro-kernels on AVX2 (no VNNI).
//
// A ymm holds half a code vector (8 rows x 4 codes); a tile is two parts. The 4-way dot is
//   vpmaddubsw t, codes(u8), x(s8)   t[i] = c[2i]*x[2i] + c[2i+1]*x[2i+1]   (s16, saturating)
//   vpmaddwd   d, t, 1               d[r] = t[2r] + t[2r+1]                  (s32)
// which is exact while 2 * code * 127 <= 32767, i.e. for codes <= 127 (bits <= 7). For
// 8-bit codes each byte is split into nibbles, dotted separately and recombined as
// lo + 16*hi by vpmaddwd with 1 and 16, so no partial sum can saturate.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

#if defined(__x86_64__)
#include <immintrin.h>

#pragma GCC target("avx2,fma,f16c,bmi2")

#include "linear_tile.h"

namespace lowbit {
namespace {

struct IsaAvx2 {
  static constexpr int kPartBytes = 32;
  static constexpr bool kMaskedPlanes = false;  // the dot needs codes <= 127 (or SWAR: no gain)
  static constexpr bool kUnrollParts = true;
  using V = __m256i;
  using Acc = __m256i;
  using F = __m256;

  static LOWBIT_INLINE V load(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  template <int S, int W>
  static LOWBIT_INLINE V extract(V v) {
    if constexpr (S != 0) v = _mm256_srli_epi16(v, S);
    if constexpr (W == 8) return v;
    else return _mm256_and_si256(v, _mm256_set1_epi8(char((1 << W) - 1)));
  }
  template <int S>
  static LOWBIT_INLINE V shl(V v) { return _mm256_slli_epi16(v, S); }
  static LOWBIT_INLINE V or_(V a, V b) { return _mm256_or_si256(a, b); }
  static constexpr bool kBitSelect = false;  // no one-op select: shift, mask, shift, or
  static LOWBIT_INLINE Acc acc_zero() { return _mm256_setzero_si256(); }
  static LOWBIT_INLINE F f_zero() { return _mm256_setzero_ps(); }
  template <int BITS>
  static constexpr int32_t code_offset() { return 0; }
  template <int BITS>
  static LOWBIT_INLINE Acc dot(Acc acc, V codes, const int8_t* x) {
    int32_t x4;
    std::memcpy(&x4, x, 4);
    const __m256i xb = _mm256_set1_epi32(x4);
    if constexpr (BITS < 8) {
      const __m256i t = _mm256_maddubs_epi16(codes, xb);
      return _mm256_add_epi32(acc, _mm256_madd_epi16(t, _mm256_set1_epi16(1)));
    } else {
      const __m256i nib = _mm256_set1_epi8(0x0f);
      const __m256i lo = _mm256_maddubs_epi16(_mm256_and_si256(codes, nib), xb);
      const __m256i hi = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(codes, 4), nib), xb);
      acc = _mm256_add_epi32(acc, _mm256_madd_epi16(lo, _mm256_set1_epi16(1)));
      return _mm256_add_epi32(acc, _mm256_madd_epi16(hi, _mm256_set1_epi16(16)));
    }
  }
  static LOWBIT_INLINE Acc acc_add(Acc a, Acc b) { return _mm256_add_epi32(a, b); }
  static LOWBIT_INLINE Acc add_scalar(Acc a, int32_t b) { return _mm256_add_epi32(a, _mm256_set1_epi32(b)); }
  static LOWBIT_INLINE F load_scales(const uint8_t* sp, DType sdt) {
    switch (sdt) {
      case DType::f32: return _mm256_loadu_ps(reinterpret_cast<const float*>(sp));
      case DType::bf16: {
        const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sp)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
      }
      default: return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sp)));
    }
  }
  static LOWBIT_INLINE F group_update(F y, Acc acc, F s, const uint8_t* zp, ZeroKind zk, int32_t zsym,
                                      int32_t sumx) {
    switch (zk) {
      case ZeroKind::symmetric:
        acc = _mm256_sub_epi32(acc, _mm256_set1_epi32(zsym * sumx));
        return _mm256_add_ps(y, _mm256_mul_ps(s, _mm256_cvtepi32_ps(acc)));
      case ZeroKind::u8: {
        const __m256i z = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(zp)));
        acc = _mm256_sub_epi32(acc, _mm256_mullo_epi32(z, _mm256_set1_epi32(sumx)));
        return _mm256_add_ps(y, _mm256_mul_ps(s, _mm256_cvtepi32_ps(acc)));
      }
      default: {
        const F z = _mm256_loadu_ps(reinterpret_cast<const float*>(zp));
        const F t = _mm256_sub_ps(_mm256_cvtepi32_ps(acc), _mm256_mul_ps(z, _mm256_set1_ps(float(sumx))));
        return _mm256_add_ps(y, _mm256_mul_ps(s, t));
      }
    }
  }
  static LOWBIT_INLINE void store(float* dst, F v) { _mm256_storeu_ps(dst, v); }
  // float-activation primitives
  template <int J>
  static LOWBIT_INLINE F widen(V v) {
    if constexpr (J != 0) v = _mm256_srli_epi32(v, 8 * J);
    if constexpr (J != 3) v = _mm256_and_si256(v, _mm256_set1_epi32(0xff));
    return _mm256_cvtepi32_ps(v);
  }
  static LOWBIT_INLINE F fadd(F a, F b) { return _mm256_add_ps(a, b); }
  static LOWBIT_INLINE F fsub(F a, F b) { return _mm256_sub_ps(a, b); }
  static LOWBIT_INLINE F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static LOWBIT_INLINE F fbcast(float v) { return _mm256_set1_ps(v); }
  static LOWBIT_INLINE F load_zeros_f(const uint8_t* zp, ZeroKind zk, int32_t zsym) {
    if (zk == ZeroKind::symmetric) return _mm256_set1_ps(float(zsym));
    if (zk == ZeroKind::u8)
      return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(zp))));
    return _mm256_loadu_ps(reinterpret_cast<const float*>(zp));
  }
};

constexpr KernelSet kSet = make_kernel_set<IsaAvx2>("avx2", 4, &quantize_row_generic);

}  // namespace

const KernelSet* kernels_avx2() { return &kSet; }

}  // namespace lowbit

#else  // not x86-64

#include "kernels.h"
namespace lowbit {
const KernelSet* kernels_avx2() { return nullptr; }
}  // namespace lowbit

#endif
