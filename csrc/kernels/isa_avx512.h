// The AVX-512 Isa trait of the micro-kernel templates (linear_tile.h): one zmm holds a whole
// 16x4 code vector. Included by the AVX-512 translation units only (linear_avx512vnni.cpp,
// linear_avx512bf16.cpp), after their `#pragma GCC target`, inside their anonymous namespace
// like everything in common.h (each unit's copy is built for its own target flags).
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "linear_tile.h"

namespace lowbit {
namespace {

struct IsaAvx512Vnni {
  static constexpr int kPartBytes = 64;
  static constexpr bool kUnrollParts = true;
  static constexpr bool kMaskedPlanes = true;  // vpdpbusd takes any u8: see linear_tile_gemv_masked
  using V = __m512i;
  using Acc = __m512i;
  using F = __m512;

  static LOWBIT_INLINE V load(const uint8_t* p) { return _mm512_loadu_si512(p); }
  template <int S, int W>
  static LOWBIT_INLINE V extract(V v) {
    if constexpr (S != 0) v = _mm512_srli_epi16(v, S);  // 16-bit shift: bits from the next byte are masked off
    if constexpr (W == 8) return v;
    else return _mm512_and_si512(v, _mm512_set1_epi8(char((1 << W) - 1)));
  }
  template <int S>
  static LOWBIT_INLINE V shl(V v) { return _mm512_slli_epi16(v, S); }
  template <int S, int W>
  static LOWBIT_INLINE V mask(V v) {
    if constexpr (W == 8) return v;
    else return _mm512_and_si512(v, _mm512_set1_epi8(char(((1 << W) - 1) << S)));
  }
  template <int S>
  static LOWBIT_INLINE Acc srai(Acc a) {
    if constexpr (S == 0) return a;
    else return _mm512_srai_epi32(a, S);
  }
  template <int S>
  static LOWBIT_INLINE Acc slli(Acc a) {
    if constexpr (S == 0) return a;
    else return _mm512_slli_epi32(a, S);
  }
  static LOWBIT_INLINE V or_(V a, V b) { return _mm512_or_si512(a, b); }
  static constexpr bool kBitSelect = true;  // vpternlogd
  template <int D>
  static LOWBIT_INLINE V shift(V v) {
    if constexpr (D > 0) return _mm512_slli_epi16(v, D);
    else if constexpr (D < 0) return _mm512_srli_epi16(v, -D);
    else return v;
  }
  template <int M>
  static LOWBIT_INLINE V select(V a, V b) {
    // b first: vpternlogd overwrites its first operand, and b (the partial code) dies here
    return _mm512_ternarylogic_epi32(b, a, _mm512_set1_epi8(char(M)), 0xD8);  // M ? a : b
  }
  static LOWBIT_INLINE Acc acc_zero() { return _mm512_setzero_si512(); }
  static LOWBIT_INLINE F f_zero() { return _mm512_setzero_ps(); }
  template <int BITS>
  static constexpr int32_t code_offset() { return 0; }
  template <int BITS>
  static LOWBIT_INLINE Acc dot(Acc acc, V codes, const int8_t* x) {
    int32_t x4;
    std::memcpy(&x4, x, 4);
    return _mm512_dpbusd_epi32(acc, codes, _mm512_set1_epi32(x4));
  }
  // acc + dot(codes, the 4 bytes at x broadcast), the broadcast folded into the dot as an
  // embedded {1to16} memory operand (GCC keeps a separate vpbroadcastd for the intrinsic):
  // one instruction instead of two, which matters where the front end is the limit (M=1)
  static LOWBIT_INLINE Acc dot_mem(Acc acc, V codes, const int8_t* x) {
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(codes), "m"(*reinterpret_cast<const int32_t*>(x)));
    return acc;
  }
  static LOWBIT_INLINE Acc acc_bcast(const int32_t* p) { return _mm512_set1_epi32(*p); }
  static LOWBIT_INLINE Acc acc_add(Acc a, Acc b) { return _mm512_add_epi32(a, b); }
  static LOWBIT_INLINE Acc add_scalar(Acc a, int32_t b) { return _mm512_add_epi32(a, _mm512_set1_epi32(b)); }
  static LOWBIT_INLINE F load_scales(const uint8_t* sp, DType sdt) {
    switch (sdt) {
      case DType::f32: return _mm512_loadu_ps(sp);
      case DType::bf16: {
        const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sp)));
        return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
      }
      default: return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sp)));
    }
  }
  static LOWBIT_INLINE F group_update(F y, Acc acc, F s, const uint8_t* zp, ZeroKind zk, int32_t zsym,
                                      int32_t sumx) {
    switch (zk) {
      case ZeroKind::symmetric:
        acc = _mm512_sub_epi32(acc, _mm512_set1_epi32(zsym * sumx));
        return _mm512_add_ps(y, _mm512_mul_ps(s, _mm512_cvtepi32_ps(acc)));
      case ZeroKind::u8: {
        const __m512i z = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zp)));
        acc = _mm512_sub_epi32(acc, _mm512_mullo_epi32(z, _mm512_set1_epi32(sumx)));
        return _mm512_add_ps(y, _mm512_mul_ps(s, _mm512_cvtepi32_ps(acc)));
      }
      default: {
        const F t = _mm512_sub_ps(_mm512_cvtepi32_ps(acc), _mm512_mul_ps(_mm512_loadu_ps(zp), _mm512_set1_ps(float(sumx))));
        return _mm512_add_ps(y, _mm512_mul_ps(s, t));
      }
    }
  }
  static LOWBIT_INLINE void store(float* dst, F v) { _mm512_storeu_ps(dst, v); }
  // One output row of a tile, 16 columns at once: y * sx, + bias, cast; the same fp32
  // operations and the same rounding (f32_to_bf16: RNE, NaN -> 0x7fc0) as store_tile's
  // scalar loop, which at M=1 cost ~10% of a K=4096 W2 tile. f16 (its NaN/subnormal
  // handling is not worth duplicating) returns false: the caller then stores per element.
  static constexpr bool kStoreRow = true;
  static LOWBIT_INLINE bool store_row(const TileArgs& a, F y, int m = 0) {
    if (a.out_dtype == DType::f16) return false;
    const __mmask16 k = a.nvalid >= kTileN ? __mmask16(0xffff) : __mmask16((1u << a.nvalid) - 1);
    __m512 v = _mm512_mul_ps(y, _mm512_set1_ps(a.sx[m]));
    if (a.bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, a.bias + a.n0));
    const int64_t at = m * a.ldo + a.n0;
    if (a.out_dtype == DType::f32) {
      _mm512_mask_storeu_ps(static_cast<float*>(a.out) + at, k, v);
      return true;
    }
    const __m512i u = _mm512_castps_si512(v);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7fc0));
    _mm512_mask_cvtepi32_storeu_epi16(static_cast<uint16_t*>(a.out) + at, k, r);
    return true;
  }
  // float-activation primitives
  template <int J>
  static LOWBIT_INLINE F widen(V v) {
    if constexpr (J != 0) v = _mm512_srli_epi32(v, 8 * J);
    if constexpr (J != 3) v = _mm512_and_si512(v, _mm512_set1_epi32(0xff));
    return _mm512_cvtepi32_ps(v);
  }
  // 2**23 + (byte J of each lane) as a float, with no conversion: the byte ORed into the
  // mantissa of 2**23 (one vpternlogd (v & 0xff) | bits(2**23); J = 3 needs no mask). With
  // the zero point loaded as 2**23 + z the kernel's subtraction gives the same exact q - z.
  static constexpr bool kBiasedWiden = true;
  template <int J>
  static LOWBIT_INLINE F widen_biased(V v) {
    const __m512i two23 = _mm512_set1_epi32(0x4B000000);
    if constexpr (J == 3) return _mm512_castsi512_ps(_mm512_or_si512(_mm512_srli_epi32(v, 24), two23));
    if constexpr (J != 0) v = _mm512_srli_epi32(v, 8 * J);
    return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(v, _mm512_set1_epi32(0xff), two23, 0xEA));  // (A&B)|C
  }
  static LOWBIT_INLINE F fadd(F a, F b) { return _mm512_add_ps(a, b); }
  static LOWBIT_INLINE F fsub(F a, F b) { return _mm512_sub_ps(a, b); }
  static LOWBIT_INLINE F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static LOWBIT_INLINE F fbcast(float v) { return _mm512_set1_ps(v); }
  static LOWBIT_INLINE F load_zeros_f(const uint8_t* zp, ZeroKind zk, int32_t zsym) {
    if (zk == ZeroKind::symmetric) return _mm512_set1_ps(float(zsym));
    if (zk == ZeroKind::u8) return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zp))));
    return _mm512_loadu_ps(zp);
  }
};

}  // namespace
}  // namespace lowbit
