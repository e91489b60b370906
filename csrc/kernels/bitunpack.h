// Bit-unpacking of one 16x32 block of the tile layout into eight 16x4 code vectors.
//
// One routine, instantiated per width (1..8) and per ISA: the width picks the planes at
// compile time and the ISA supplies five vector primitives (the `Ops` trait below), so the
// same source yields force-inlined shift/mask sequences for AVX-512, AVX2, NEON and a
// scalar 32-bit SWAR fallback. The dot-product micro-kernels never see packed bits.
//
// Block layout (64*bits bytes; docs/cpu_kernels.md): a width is split into the planes of its
// binary decomposition, widest first, exactly like the canonical format (7 = 4+2+1, low bits
// in the first plane). A plane of width w is w byte-vectors of 64 bytes. Byte i of
// byte-vector p holds, at bit offset jj*w, the plane bits of byte i of code vector
// c = p*(8/w) + jj. Code vector c is 64 bytes: byte 4*r + j = code of row r at k = 4*c + j.
// So unpacking is per-byte "shift right, mask, shift left into place, or" and never moves
// a value between bytes: a 16-bit (x86) or 8-bit (NEON) lane shift plus a byte mask suffices.
//
// W3 is the exception: its 3 byte-vectors B0, B1, B2 hold whole codes, so a kernel that can
// dot a field in place (AVX-512: any u8) masks six of the eight code vectors with one AND
// each instead of merging a 2-bit and a 1-bit plane (a shift, an AND and a select each).
// Byte i of each (bit 7 first):
//   B0 = c6[2:1] c1 c0      B1 = c7[2:1] c3 c2      B2 = c7[0] c6[0] c5 c4
// c6 and c7 are split: their high bits sit where a select against B2's bit moved next to them
// leaves the whole code at bits 5..7 (w3_fields in linear_tile.h).
//
// Ops trait (all static, force-inlined):
//   V                      vector holding kVecBytes/P bytes of a code vector
//   V load(const uint8_t*)  unaligned load of one vector
//   V extract<S, W>(V)      (byte >> S) & (2**W - 1) in every byte
//   V shl<S>(V)             byte << S in every byte (caller guarantees no carry out of a byte)
//   V or_(V, V)
//   kBitSelect              true if the ISA has a one-op bitwise select; then also
//   V shift<D>(V)           byte << D (D > 0) or byte >> -D (D < 0); bits may cross into the
//                           neighbouring byte of a wider lane (the select never takes them)
//   V select<M>(V a, V b)   bits of byte mask M from a, the others from b
#pragma once

#include "common.h"

namespace lowbit {
namespace {

// planes of `bits`, widest first: i-th plane width, and the bit (and byte-vector) offset
constexpr int plane_count(int bits) { return ((bits >> 3) & 1) + ((bits >> 2) & 1) + ((bits >> 1) & 1) + (bits & 1); }
constexpr int plane_width(int bits, int i) {
  for (int w = 8; w >= 1; w >>= 1)
    if (bits & w) {
      if (i == 0) return w;
      --i;
    }
  return 0;
}
constexpr int plane_low(int bits, int i) {
  int low = 0;
  for (int j = 0; j < i; ++j) low += plane_width(bits, j);
  return low;
}

// Unpack block `blk` (already offset to this ISA vector's part of each 64-byte vector)
// into out[0..7], the codes of k-quads 0..7 of the block.
template <int BITS, class Ops>
LOWBIT_INLINE void unpack_block(const uint8_t* blk, typename Ops::V (&out)[kCodeVecs]) {
  static_assert(BITS >= 1 && BITS <= 8, "1..8 bits");
  if constexpr (BITS == 3) {
    using V = typename Ops::V;
    const V b[3] = {Ops::load(blk), Ops::load(blk + kVecBytes), Ops::load(blk + 2 * kVecBytes)};
    unroll<3>([&](auto bv) LOWBIT_LAMBDA {
      constexpr int i = decltype(bv)::value;
      out[2 * i] = Ops::template extract<0, 3>(b[i]);
      out[2 * i + 1] = Ops::template extract<3, 3>(b[i]);
    });
    unroll<2>([&](auto hv) LOWBIT_LAMBDA {
      constexpr int h = decltype(hv)::value;  // c6 (h = 0), c7: high bits in b[h], low bit in b[2]
      out[6 + h] = Ops::or_(Ops::template shl<1>(Ops::template extract<6, 2>(b[h])),
                            Ops::template extract<6 + h, 1>(b[2]));
    });
    return;
  }
  unroll<plane_count(BITS)>([&](auto pi) LOWBIT_LAMBDA {
    constexpr int w = plane_width(BITS, decltype(pi)::value);
    constexpr int low = plane_low(BITS, decltype(pi)::value);
    constexpr int per = 8 / w;
    unroll<w>([&](auto pv) LOWBIT_LAMBDA {
      constexpr int p = decltype(pv)::value;
      const typename Ops::V v = Ops::load(blk + (low + p) * kVecBytes);
      unroll<per>([&](auto jv) LOWBIT_LAMBDA {
        constexpr int jj = decltype(jv)::value;
        constexpr int c = p * per + jj;
        if constexpr (low == 0) {
          out[c] = Ops::template extract<jj * w, w>(v);
        } else if constexpr (Ops::kBitSelect) {
          // one shift takes the field straight to bit `low`, one select merges it: 2 ops, not 4
          out[c] = Ops::template select<((1 << w) - 1) << low>(Ops::template shift<low - jj * w>(v), out[c]);
        } else {
          out[c] = Ops::or_(out[c], Ops::template shl<low>(Ops::template extract<jj * w, w>(v)));
        }
      });
    });
  });
}

}  // namespace
}  // namespace lowbit
