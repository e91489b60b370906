// linear_{MR}x16x32_f32_scalar: the portable reference micro-kernels (any CPU).
//
// The "vector" is one row's four codes in a uint32 (SWAR: per-byte shifts and masks on a
// 32-bit word are exactly the per-byte operations of the SIMD kernels), walked over the 16
// rows of a tile. Every SIMD kernel is tested bit for bit against these.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

#include "linear_tile.h"

namespace lowbit {
namespace {

struct IsaScalar {
  static constexpr int kPartBytes = 4;       // one row's 4 codes
  static constexpr bool kMaskedPlanes = false;  // the dot needs codes <= 127 (or SWAR: no gain)
  static constexpr bool kUnrollParts = false;  // 16 parts: keep the loop, not 16 copies
  using V = uint32_t;
  using Acc = int32_t;
  using F = float;

  static LOWBIT_INLINE V load(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
  }
  template <int S, int W>
  static LOWBIT_INLINE V extract(V v) {
    constexpr uint32_t mask = ((1u << W) - 1u) * 0x01010101u;
    return (v >> S) & mask;
  }
  template <int S>
  static LOWBIT_INLINE V shl(V v) { return v << S; }
  static LOWBIT_INLINE V or_(V a, V b) { return a | b; }
  static constexpr bool kBitSelect = false;  // no one-op select: shift, mask, shift, or
  static LOWBIT_INLINE Acc acc_zero() { return 0; }
  static LOWBIT_INLINE F f_zero() { return 0.f; }
  template <int BITS>
  static constexpr int32_t code_offset() { return 0; }
  template <int BITS>
  static LOWBIT_INLINE Acc dot(Acc acc, V v, const int8_t* x) {
    for (int j = 0; j < kQuad; ++j) acc += int32_t((v >> (8 * j)) & 0xffu) * int32_t(x[j]);
    return acc;
  }
  static LOWBIT_INLINE Acc acc_add(Acc a, Acc b) { return a + b; }
  static LOWBIT_INLINE Acc add_scalar(Acc a, int32_t b) { return a + b; }
  static LOWBIT_INLINE F group_update(F y, Acc acc, F s, const uint8_t* zp, ZeroKind zk, int32_t zsym,
                                      int32_t sumx) {
    switch (zk) {
      case ZeroKind::symmetric:
        return y + s * float(acc - zsym * sumx);
      case ZeroKind::u8:
        return y + s * float(acc - int32_t(zp[0]) * sumx);
      default: {
        float z;
        std::memcpy(&z, zp, 4);
        const float t = float(acc) - z * float(sumx);
        return y + s * t;
      }
    }
  }
  static LOWBIT_INLINE void store(float* dst, F v) { *dst = v; }
  // float-activation primitives
  static LOWBIT_INLINE F load_scales(const uint8_t* sp, DType sdt) { return load_f32(sp, sdt, 0); }
  template <int J>
  static LOWBIT_INLINE F widen(V v) { return float((v >> (8 * J)) & 0xffu); }
  static LOWBIT_INLINE F fadd(F a, F b) { return a + b; }
  static LOWBIT_INLINE F fsub(F a, F b) { return a - b; }
  static LOWBIT_INLINE F fma(F a, F b, F c) { return std::fma(a, b, c); }
  static LOWBIT_INLINE F fbcast(float v) { return v; }
  static LOWBIT_INLINE F load_zeros_f(const uint8_t* zp, ZeroKind zk, int32_t zsym) {
    if (zk == ZeroKind::symmetric) return float(zsym);
    if (zk == ZeroKind::u8) return float(zp[0]);
    float z;
    std::memcpy(&z, zp, 4);
    return z;
  }
};

constexpr KernelSet kSet = make_kernel_set<IsaScalar>("scalar", 4, &quantize_row_generic);

}  // namespace

const KernelSet* kernels_scalar() { return &kSet; }

}  // namespace lowbit
