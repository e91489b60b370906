// linear_{MR}x16x32_f32_neondot: int8 micro-kernels on Arm NEON with the dot-product
// extension (sdot, vdotq_s32; Armv8.2-A+dotprod, HWCAP_ASIMDDP).
//
// A q register holds a quarter of a code vector (4 rows x 4 codes); a tile is four parts.
//   sdot acc.4s, codes.16b, x.16b      acc[r] += sum_j codes[4r+j] * x[j]
// with the 4 activation bytes of the k-quad duplicated in every lane. sdot is signed x
// signed: codes of up to 7 bits (<= 127) are already valid s8; 8-bit codes are flipped
// to q - 128 (eor 0x80) and the kernel adds 128 * xsum back in int32 (code_offset), which
// is exact. NEON has per-byte shifts, so unpacking needs no cross-byte masking care.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

#if defined(__aarch64__)
#include <arm_neon.h>

#pragma GCC target("arch=armv8.2-a+dotprod")

#include "linear_tile.h"

namespace lowbit {
namespace {

struct IsaNeonDot {
  static constexpr int kPartBytes = 16;
  static constexpr bool kMaskedPlanes = false;  // the dot needs codes <= 127 (or SWAR: no gain)
  static constexpr bool kUnrollParts = true;
  using V = uint8x16_t;
  using Acc = int32x4_t;
  using F = float32x4_t;

  static LOWBIT_INLINE V load(const uint8_t* p) { return vld1q_u8(p); }
  template <int S, int W>
  static LOWBIT_INLINE V extract(V v) {
    if constexpr (S != 0) v = vshrq_n_u8(v, S);
    if constexpr (S + W == 8) return v;  // a byte shift already cleared the high bits
    else return vandq_u8(v, vdupq_n_u8(uint8_t((1 << W) - 1)));
  }
  template <int S>
  static LOWBIT_INLINE V shl(V v) { return vshlq_n_u8(v, S); }
  static LOWBIT_INLINE V or_(V a, V b) { return vorrq_u8(a, b); }
  static constexpr bool kBitSelect = true;  // bsl
  template <int D>
  static LOWBIT_INLINE V shift(V v) {
    if constexpr (D > 0) return vshlq_n_u8(v, D);
    else if constexpr (D < 0) return vshrq_n_u8(v, -D);
    else return v;
  }
  template <int M>
  static LOWBIT_INLINE V select(V a, V b) { return vbslq_u8(vdupq_n_u8(uint8_t(M)), a, b); }
  static LOWBIT_INLINE Acc acc_zero() { return vdupq_n_s32(0); }
  static LOWBIT_INLINE F f_zero() { return vdupq_n_f32(0.f); }
  template <int BITS>
  static constexpr int32_t code_offset() { return BITS == 8 ? 128 : 0; }
  template <int BITS>
  static LOWBIT_INLINE Acc dot(Acc acc, V codes, const int8_t* x) {
    int32_t x4;
    std::memcpy(&x4, x, 4);
    const int8x16_t xb = vreinterpretq_s8_s32(vdupq_n_s32(x4));
    int8x16_t c;
    if constexpr (BITS == 8) c = vreinterpretq_s8_u8(veorq_u8(codes, vdupq_n_u8(0x80)));
    else c = vreinterpretq_s8_u8(codes);
    return vdotq_s32(acc, c, xb);
  }
  static LOWBIT_INLINE Acc acc_add(Acc a, Acc b) { return vaddq_s32(a, b); }
  static LOWBIT_INLINE Acc add_scalar(Acc a, int32_t b) { return vaddq_s32(a, vdupq_n_s32(b)); }
  static LOWBIT_INLINE F load_scales(const uint8_t* sp, DType sdt) {
    switch (sdt) {
      case DType::f32: return vld1q_f32(reinterpret_cast<const float*>(sp));
      case DType::bf16:
        return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(reinterpret_cast<const uint16_t*>(sp)), 16));
      default: return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const uint16_t*>(sp))));
    }
  }
  static LOWBIT_INLINE F group_update(F y, Acc acc, F s, const uint8_t* zp, ZeroKind zk, int32_t zsym,
                                      int32_t sumx) {
    switch (zk) {
      case ZeroKind::symmetric:
        acc = vsubq_s32(acc, vdupq_n_s32(zsym * sumx));
        return vaddq_f32(y, vmulq_f32(s, vcvtq_f32_s32(acc)));
      case ZeroKind::u8: {
        uint32_t z4;
        std::memcpy(&z4, zp, 4);
        const int32x4_t z = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(vmovl_u8(vcreate_u8(z4)))));
        acc = vsubq_s32(acc, vmulq_n_s32(z, sumx));
        return vaddq_f32(y, vmulq_f32(s, vcvtq_f32_s32(acc)));
      }
      default: {
        const F z = vld1q_f32(reinterpret_cast<const float*>(zp));
        const F t = vsubq_f32(vcvtq_f32_s32(acc), vmulq_f32(z, vdupq_n_f32(float(sumx))));
        return vaddq_f32(y, vmulq_f32(s, t));
      }
    }
  }
  static LOWBIT_INLINE void store(float* dst, F v) { vst1q_f32(dst, v); }
  // float-activation primitives
  template <int J>
  static LOWBIT_INLINE F widen(V v) {
    uint32x4_t u = vreinterpretq_u32_u8(v);
    if constexpr (J != 0) u = vshrq_n_u32(u, 8 * J);
    if constexpr (J != 3) u = vandq_u32(u, vdupq_n_u32(0xff));
    return vcvtq_f32_u32(u);
  }
  static LOWBIT_INLINE F fadd(F a, F b) { return vaddq_f32(a, b); }
  static LOWBIT_INLINE F fsub(F a, F b) { return vsubq_f32(a, b); }
  static LOWBIT_INLINE F fma(F a, F b, F c) { return vfmaq_f32(c, a, b); }
  static LOWBIT_INLINE F fbcast(float v) { return vdupq_n_f32(v); }
  static LOWBIT_INLINE F load_zeros_f(const uint8_t* zp, ZeroKind zk, int32_t zsym) {
    if (zk == ZeroKind::symmetric) return vdupq_n_f32(float(zsym));
    if (zk == ZeroKind::u8) {
      uint32_t z4;
      std::memcpy(&z4, zp, 4);
      return vcvtq_f32_u32(vmovl_u16(vget_low_u16(vmovl_u8(vcreate_u8(z4)))));
    }
    return vld1q_f32(reinterpret_cast<const float*>(zp));
  }
};

constexpr KernelSet kSet = make_kernel_set<IsaNeonDot>("neondot", 4, &quantize_row_generic);

}  // namespace

const KernelSet* kernels_neondot() { return &kSet; }

}  // namespace lowbit

#else  // not aarch64

#include "kernels.h"
namespace lowbit {
const KernelSet* kernels_neondot() { return nullptr; }
}  // namespace lowbit

#endif
