// linear_{MR}x16x32_f32_{isa}: the int8-activation x b-bit-weight micro-kernel, one source
// for every ISA (the ISA supplies an `Isa` trait; see linear_avx512vnni.cpp for the model).
//
// Name: MR activation rows x 16 weight rows (output columns) per call, K consumed 32 at a
// time (one packed block), fp32 accumulation of the group sums, output cast at the store.
// Instantiated for bits 1..8 and MR in {1, 2, 4, 8}.
//
// Math, per output (m, n), bit-exact with lowbit.quant.int8_linear_reference:
//   for each group g (group_size = multiple of 32):
//     acc_g = sum_k xq[m,k] * q[n,k]  -  z[n,g] * xsum[m,g]          (int32, exact)
//     y     = y + s[n,g] * float(acc_g)                             (fp32 mul, then add)
//   y = y * sx[m];  y = y + bias[n];  out = cast(y)                  (round to nearest even)
// With float zeros (ZeroKind::f32, weight-only HQQ) the group term is instead
//   y = y + s * (float(sum_k xq*q) - z * float(xsum))               (fp32, not bit-exact
//   against a float reference: it approximates it; SIMD and scalar still agree bit for bit).
//
// Operands:
//   codes  u8 (0..2**bits-1), from the packed tile, unpacked by unpack_block<bits>;
//          a code vector is 16 rows x 4 consecutive k: 32-bit lane r = row r's 4 codes.
//   xq     s8 (-127..127), row-major [MR][K]; the 4 bytes at k..k+3 are broadcast to all
//          lanes, so one u8 x s8 4-way dot (vpdpbusd / sdot) updates 16 rows at once.
//   xsum   int32 [MR][G]: the activation group sums for the zero-point correction (the
//          activations are symmetric, so no weight sums are needed).
//   scales [G][16] in the model dtype (f32 / bf16 / f16), widened exactly to fp32.
//   zeros  none (symmetric: 2**(bits-1)), u8 [G][16], or f32 [G][16].
// Constraints: K and group_size multiples of 32; K * 127 * 255 < 2**31 (K <= 66,000).
// The ISA vector may cover only part of a 64-byte code vector (AVX2: 32 bytes = 8 rows,
// NEON: 16 bytes = 4 rows, scalar: 4 bytes = 1 row); the tile is then walked in P parts.
#pragma once

#include <cmath>
#include <type_traits>

#include "bitunpack.h"
#include "kernels.h"

namespace lowbit {
namespace {

template <int P, bool Unrolled, class F>
LOWBIT_INLINE void for_parts(F&& f) {
  if constexpr (Unrolled) {
    unroll<P>([&](auto p) LOWBIT_LAMBDA { f(int(decltype(p)::value)); });
  } else {
    for (int p = 0; p < P; ++p) f(p);
  }
}

// ISAs with a one-vector row store (I::kStoreRow, I::store_row(a, y, m): AVX-512)
template <class I, class = void>
struct HasStoreRow : std::false_type {};
template <class I>
struct HasStoreRow<I, std::void_t<decltype(I::kStoreRow)>> : std::true_type {};

// Final store of one tile: y * sx, + bias, cast. Scalar (O(MR*16) against O(MR*16*K)
// above) except where a vector holds a whole row: ~100 cycles a row saved on AVX-512.
// Callers pass a copy of their accumulators, not the array the tile loop updates: bound here
// by reference, GCC kept rows of it in memory through the whole loop (W4 MR=4: a load and a
// store per row and group; W8 g128 M=1 from DRAM 0.84 -> 0.96-1.0 of the read with the copy).
// A copy made inside this function instead fixed the MR kernel but not the generic one
// (W8 g128 M=1 6-8% slower than with the caller's copy), so the copy stays with the callers.
template <int MR, int P, int L, class I>
LOWBIT_INLINE void store_tile(const TileArgs& a, typename I::F (&y)[MR][P]) {
  if constexpr (P == 1 && HasStoreRow<I>::value) {
    if (a.out_dtype != DType::f16) {
      for (int m = 0; m < MR; ++m) I::store_row(a, y[m][0], m);
      return;
    }
  }
  alignas(64) float yb[MR][kTileN];
  for (int m = 0; m < MR; ++m)
    for (int p = 0; p < P; ++p) I::store(&yb[m][p * L], y[m][p]);
  for (int m = 0; m < MR; ++m) {
    const float s = a.sx[m];
    for (int r = 0; r < a.nvalid; ++r) {
      float v = yb[m][r] * s;
      if (a.bias) v = v + a.bias[a.n0 + r];
      store_f32(a.out, a.out_dtype, m * a.ldo + a.n0 + r, v);
    }
  }
}

// Software prefetch: which kernels, and how far ahead. A tile is one stream (group records:
// codes, then that group's scales and zeros), which the hardware prefetcher follows on its
// own. Measured on one Zen 4 core from DRAM (docs/cpu_kernels.md, "One stream per tile"):
// kernels with little work per byte (M=1 on a single plane or on 8-bit codes) stream
// fastest with no software prefetch at all (W4 M=1 -20%, W8 M=1 -43% against 6 KiB);
// heavier ones (M >= 2, the multi-plane M=1 kernel of W5-W7) fall behind the hardware
// prefetcher and need it 6 KiB ahead (W4 M=4 2x slower without; 1-3 KiB was worse than
// both). The two distances are build-time settings (LOWBIT_PREFETCH_BYTES for the heavy
// kernels, LOWBIT_LIGHT_PREFETCH_BYTES for the light ones; 0: no software prefetch).
#ifndef LOWBIT_PREFETCH_BYTES
#define LOWBIT_PREFETCH_BYTES 6144
#endif
#ifndef LOWBIT_LIGHT_PREFETCH_BYTES  // the light kernels' distance (0: no software prefetch)
#define LOWBIT_LIGHT_PREFETCH_BYTES 0
#endif
constexpr int kPrefetchBytes = LOWBIT_PREFETCH_BYTES;
constexpr int kLightPrefetchBytes = LOWBIT_LIGHT_PREFETCH_BYTES;
// How far ahead in a tile's stream a kernel prefetches, in bytes: the distance rounded up to
// whole blocks of its width (0: no software prefetch)
template <int BITS, bool HEAVY>
constexpr int64_t prefetch_ahead() {
  constexpr int64_t block = int64_t(kVecBytes) * BITS, bytes = HEAVY ? kPrefetchBytes : kLightPrefetchBytes;
  return (bytes + block - 1) / block * block;
}

// Software prefetch (into L2) of every cache line touching [p, p + BYTES). Group records are
// not line-aligned (a W4 group-32 record is 288 bytes), so prefetching "one line per 64
// bytes from p" would skip a line in every other record, a demand miss the heavier kernels
// (M >= 4) stall on. A fixed count (one line per 64 bytes, then the last byte's line, which
// may repeat one) rather than a loop to the end: no loop branch whose trip count alternates.
template <int64_t BYTES>
LOWBIT_INLINE void prefetch_lines(const uint8_t* p) {
  for (int64_t l = 0; l < (BYTES + 63) / 64; ++l) __builtin_prefetch(p + 64 * l, 0, 2);
  __builtin_prefetch(p + BYTES - 1, 0, 2);
}
// the same for a size known at run time (the generic kernel's scales and zeros)
LOWBIT_INLINE void prefetch_lines(const uint8_t* p, int64_t bytes) {
  const uintptr_t lo = reinterpret_cast<uintptr_t>(p) & ~uintptr_t(63);
  const uintptr_t hi = reinterpret_cast<uintptr_t>(p) + bytes;
  for (uintptr_t q = lo; q < hi; q += 64) __builtin_prefetch(reinterpret_cast<const void*>(q), 0, 2);
}

// Activation prefetch for the M=1 kernels. A tile streams all its group records between two
// uses of the same activations, so once a tile is larger than L1 (W4 g32 at K = 14336:
// 126 KiB against Zen 4's 32 KiB) the codes evict the activations and the dots wait on L2.
// Measured on one Zen 4 core from DRAM (docs/cpu_kernels.md, "Activations out of L1"): with
// the activations held in L1, W4 M=1 at K = 14336 ran 14-16% faster; prefetching them 128 k
// ahead took 4-9% off (W2 5-13%), 64 or 256 k ahead nothing. The operator turns it on from
// the tile's size (TileArgs::prefetch_x, kActPrefetchMinBytes): at W4 K = 4096 it cost 2-4%.
constexpr int kActPrefetchK = 128;  // how far ahead, in activation elements

// Prefetch (into L1) the lines of the 32 activations kActPrefetchK past xk when a.prefetch_x,
// else (a branch per block made GCC keep one pointer register per dot) the block's own, which
// the dots load next anyway.
template <class T>
LOWBIT_INLINE void prefetch_act(const TileArgs& a, const T* xk) {
  const uint8_t* p = reinterpret_cast<const uint8_t*>(xk) + (a.prefetch_x ? kActPrefetchK * sizeof(T) : 0);
  for (int l = 0; l < int(kBlockK * sizeof(T)); l += 64) __builtin_prefetch(p + l, 0, 3);
}

// GEMV variant for ISAs whose dot product takes any u8 (AVX-512 VNNI): the codes are only
// masked, never shifted down, so the field at bit S of a plane byte enters the dot as
// field << S. A plane of width w has two accumulators, weight 1 and weight 2**w: fields
// 2s and 2s+1 of a byte are masked out of (byte >> 2s*w) in place (masks (2**w-1) and
// (2**w-1) << w), so one 16-bit shift serves two fields and the group sum is
//   sum over planes of ( acc_lo + (acc_hi >> w) ) << plane_low,
// exact: acc_hi is a multiple of 2**w and |acc| <= K*127*255 < 2**31. Per code vector that
// is one AND and one dot (plus a shift per two fields from w <= 2); against one accumulator
// per field position (W2: 4, W1: 8) it saves 4 / 12 combining ops per group, which at group
// 32 is a fifth of the work. A multi-plane width (5, 6, 7) runs one dot per plane instead
// of merging the planes first; that pays from 4 blocks per group (linear_tile picks it).
// W3 has no planes here: its whole codes are masked in place (w3_fields), one dot each.
// 8-bit codes need no unpack and stay on the generic kernel.
//
// At M=1 the kernel is a weight stream, and at group 32 a block (W2: 128 bytes of codes)
// is only ~10 cycles of work, so every instruction counts (the front end, not the vector
// pipes, was the limit: 17 cycles per W2 block with the dispatch on scale dtype / zero kind
// inside the loop). Hence: scale dtype, zero kind and "one block per group" are template
// parameters (no branches in the loop), the activations are broadcast straight from memory
// into the dot (I::dot_mem), the symmetric zero-point correction -z*xsum[g] is precomputed
// once per call (TileArgs::xzero) and is the initial value of the weight-1 accumulator (no
// scalar multiply, no GPR broadcast, no subtract per group), and two groups are unrolled per
// iteration.
//
// Software prefetch only for the multi-plane widths other than W3 (see kPrefetchBytes): W3's
// whole-code blocks are as light as a single plane's (from DRAM, one thread: 6 KiB ahead
// 3-6% slower than none).
#ifndef LOWBIT_MASKED_MIN_GS
#define LOWBIT_MASKED_MIN_GS (4 * kBlockK)
#endif

// W3's code vectors as the masked kernels dot them, each in place in its byte (bitunpack.h,
// "W3"): calls f(c, a, code) for c = 0..7, where `code` holds code vector c at bit kW3Shift[a]
// and so goes to accumulator a, whose sum is taken >> kW3Shift[a]. Six are one AND each; c6
// and c7 take their low bit from B2 (a shift and an AND) and select it under their high bits.
// 12 vector ops a block against 28 for the 2+1 planes merged in place.
constexpr int kW3Shift[3] = {0, 3, 5};
// Widths whose codes the masked kernels dot as whole fields of a byte: the single planes 1, 2,
// 4 and W3's whole codes (5-7 are planes, one dot each, 8 needs no unpack).
constexpr bool masked_fields(int bits) { return bits >= 1 && bits <= 4; }
// Their accumulators per activation row: single planes of width w have two (fields 2s and
// 2s+1 of a byte, at bit 0 and w), W3 three (kW3Shift).
template <int BITS>
constexpr int masked_accs() { return BITS == 3 ? 3 : 2; }
template <int BITS>
constexpr int masked_acc_shift(int i) { return BITS == 3 ? kW3Shift[i] : i * BITS; }
// the group sum of one row's accumulators: each taken down from its bit (exact: accumulator i
// is a multiple of 2**shift)
template <int BITS, class I>
LOWBIT_INLINE typename I::Acc masked_sum(const typename I::Acc (&acc)[masked_accs<BITS>()]) {
  typename I::Acc t = acc[0];
  unroll<masked_accs<BITS>() - 1>([&](auto iv) LOWBIT_LAMBDA {
    constexpr int i = decltype(iv)::value + 1;
    t = I::acc_add(t, I::template srai<masked_acc_shift<BITS>(i)>(acc[i]));
  });
  return t;
}
template <class I, class Fn>
LOWBIT_INLINE void w3_fields(const uint8_t* blk, Fn&& f) {
  using V = typename I::V;
  using A = std::integral_constant<int, 0>;
  using B = std::integral_constant<int, 1>;
  using C = std::integral_constant<int, 2>;
  const V b0 = I::load(blk), b1 = I::load(blk + kVecBytes), b2 = I::load(blk + 2 * kVecBytes);
  f(std::integral_constant<int, 0>{}, A{}, I::template mask<0, 3>(b0));
  f(std::integral_constant<int, 1>{}, B{}, I::template mask<3, 3>(b0));
  f(std::integral_constant<int, 6>{}, C{}, I::template select<0xC0>(b0, I::template mask<5, 1>(I::template shift<-1>(b2))));
  f(std::integral_constant<int, 2>{}, A{}, I::template mask<0, 3>(b1));
  f(std::integral_constant<int, 3>{}, B{}, I::template mask<3, 3>(b1));
  f(std::integral_constant<int, 7>{}, C{}, I::template select<0xC0>(b1, I::template mask<5, 1>(I::template shift<-2>(b2))));
  f(std::integral_constant<int, 4>{}, A{}, I::template mask<0, 3>(b2));
  f(std::integral_constant<int, 5>{}, B{}, I::template mask<3, 3>(b2));
}

// A tile's group records as the masked kernels walk them: where each group's codes, scales
// and zeros live, and the software prefetch (HEAVY: kPrefetchBytes, else kLightPrefetchBytes)
// ahead in the stream they form; past the tile's end that is the next tile in memory (the
// thread's next tile, except at the end of its chunk), whose first records would otherwise
// start cold.
template <int BITS, DType SDT, ZeroKind ZK, int BPG, bool HEAVY>
struct TileWalk {
  static constexpr int ssz = dtype_size(SDT);
  static constexpr int zsz = zero_size(ZK);
  static constexpr int kParamBytes = kTileN * (ssz + zsz);
  static constexpr int64_t kBlockBytes = int64_t(kVecBytes) * BITS;
  static constexpr int64_t kAhead = prefetch_ahead<BITS, HEAVY>();
  // with BPG known the record size is a constant: no multiply by a runtime stride per group
  static constexpr int64_t kGroupBytes = BPG * kBlockBytes + kParamBytes;
  const TileArgs& a;
  const int bpg;  // blocks per group
  const int64_t groups;
  explicit LOWBIT_INLINE TileWalk(const TileArgs& t)
      : a(t), bpg(BPG ? BPG : t.group_size / kBlockK), groups(t.k / t.group_size) {}
  LOWBIT_INLINE const uint8_t* record(int64_t g) const { return BPG ? a.tile + g * kGroupBytes : group_record(a, g); }
  LOWBIT_INLINE const uint8_t* group_scales(int64_t g) const { return record(g) + (BPG ? BPG * kBlockBytes : a.scales_offset); }
  LOWBIT_INLINE const uint8_t* group_zeros(int64_t g) const { return group_scales(g) + kTileN * ssz; }
  LOWBIT_INLINE void prefetch_params(int64_t g) const {  // the lines kAhead past group g's scales and zeros
    if constexpr (kAhead != 0 && kParamBytes != 0) prefetch_lines<kParamBytes>(group_scales(g) + kAhead);
  }
  // block ``b`` of group ``g``; prefetches the lines kAhead past it
  LOWBIT_INLINE const uint8_t* block(int64_t g, int b) const {
    const uint8_t* blk = record(g) + b * kBlockBytes;
    if constexpr (kAhead != 0) prefetch_lines<kBlockBytes>(blk + kAhead);
    return blk;
  }
};

template <int BITS, class I, DType SDT, ZeroKind ZK, int BPG>
void linear_tile_gemv_masked_impl(const TileArgs& a) {
  using Acc = typename I::Acc;
  using F = typename I::F;
  using V = typename I::V;
  constexpr int NP = plane_count(BITS);
  const TileWalk<BITS, SDT, ZK, BPG, (NP > 1 && BITS != 3)> tw(a);
  const int bpg = tw.bpg;
  const int64_t groups = tw.groups;

  F y = I::f_zero();
  auto finish_group = [&](int64_t g, Acc t) LOWBIT_LAMBDA {
    const int32_t sumx = ZK == ZeroKind::symmetric ? 0 : a.xsum[g];
    y = I::group_update(y, t, I::load_scales(tw.group_scales(g), SDT), tw.group_zeros(g), ZK, 0, sumx);
  };
  auto group_sum = [&](int64_t g) LOWBIT_LAMBDA {
    Acc acc[NP][2], acc3[masked_accs<3>()];  // acc3: W3's
    unroll<NP>([&](auto pi) LOWBIT_LAMBDA {
      constexpr int i = decltype(pi)::value;
      acc[i][0] = (ZK == ZeroKind::symmetric && i == 0) ? I::acc_bcast(a.xzero + g) : I::acc_zero();
      acc[i][1] = I::acc_zero();
    });
    if constexpr (BITS == 3) acc3[0] = acc[0][0], acc3[1] = acc3[2] = I::acc_zero();
    tw.prefetch_params(g);
    for (int b = 0; b < bpg; ++b) {
      const int64_t blk_index = g * bpg + b;
      const uint8_t* blk = tw.block(g, b);
      const int8_t* xk = a.xq + blk_index * kBlockK;
      prefetch_act(a, xk);
      if constexpr (BITS == 3) {
        w3_fields<I>(blk, [&](auto cc, auto aa, V code) LOWBIT_LAMBDA {
          Acc& t = acc3[decltype(aa)::value];
          t = I::dot_mem(t, code, xk + decltype(cc)::value * kQuad);
        });
      } else {
      unroll<NP>([&](auto pi) LOWBIT_LAMBDA {
        constexpr int i = decltype(pi)::value;
        constexpr int w = plane_width(BITS, i);
        constexpr int low = plane_low(BITS, i);
        constexpr int per = 8 / w;
        unroll<w>([&](auto pv) LOWBIT_LAMBDA {
          constexpr int p = decltype(pv)::value;
          const V v = I::load(blk + (low + p) * kVecBytes);
          unroll<per / 2>([&](auto sv) LOWBIT_LAMBDA {
            constexpr int s2 = decltype(sv)::value;
            const V vs = I::template shift<-(2 * s2 * w)>(v);
            constexpr int c = p * per + 2 * s2;
            acc[i][0] = I::dot_mem(acc[i][0], I::template mask<0, w>(vs), xk + c * kQuad);
            acc[i][1] = I::dot_mem(acc[i][1], I::template mask<w, w>(vs), xk + (c + 1) * kQuad);
          });
        });
      });
      }
    }
    if constexpr (BITS == 3) return masked_sum<3, I>(acc3);
    Acc t = I::acc_zero();
    unroll<NP>([&](auto pi) LOWBIT_LAMBDA {
      constexpr int i = decltype(pi)::value;
      constexpr int w = plane_width(BITS, i);
      constexpr int low = plane_low(BITS, i);
      const Acc tp = masked_sum<w, I>(acc[i]);
      t = i == 0 ? I::template slli<low>(tp) : I::acc_add(t, I::template slli<low>(tp));
    });
    return t;
  };
  // software-pipelined like linear_tile: group g-1's epilogue after group g's dots
  Acc prev = I::acc_zero();
#pragma GCC unroll 2
  for (int64_t g = 0; g < groups; ++g) {
    const Acc t = group_sum(g);
    if (g > 0) finish_group(g - 1, prev);
    prev = t;
  }
  if (groups > 0) finish_group(groups - 1, prev);
  F yy[1][1] = {{y}};
  store_tile<1, 1, kTileN, I>(a, yy);
}

// Runtime tile parameters (scale dtype, zero kind, one block per group) -> template
// parameters, so the kernels' loops carry no switches. K::run<SDT, ZK, ONE_BLOCK_GROUPS>.
template <class K, DType SDT, ZeroKind ZK>
LOWBIT_INLINE void by_block_groups(const TileArgs& a) {
  if (a.group_size == kBlockK) K::template run<SDT, ZK, 1>(a);
  else K::template run<SDT, ZK, 0>(a);
}

template <class K, DType SDT>
LOWBIT_INLINE void by_zero_kind(const TileArgs& a) {
  switch (a.zero_kind) {
    case ZeroKind::symmetric: by_block_groups<K, SDT, ZeroKind::symmetric>(a); break;
    case ZeroKind::u8: by_block_groups<K, SDT, ZeroKind::u8>(a); break;
    default: by_block_groups<K, SDT, ZeroKind::f32>(a); break;
  }
}

template <class K>
LOWBIT_INLINE void by_tile_params(const TileArgs& a) {
  switch (a.scale_dtype) {
    case DType::f32: by_zero_kind<K, DType::f32>(a); break;
    case DType::bf16: by_zero_kind<K, DType::bf16>(a); break;
    default: by_zero_kind<K, DType::f16>(a); break;
  }
}

template <int BITS, class I>
struct GemvMasked {
  template <DType SDT, ZeroKind ZK, int BPG>
  static void run(const TileArgs& a) { linear_tile_gemv_masked_impl<BITS, I, SDT, ZK, BPG>(a); }
};

template <int BITS, class I>
void linear_tile_gemv_masked(const TileArgs& a) {
  by_tile_params<GemvMasked<BITS, I>>(a);
}

// MR 2 and 4, single-plane widths (1, 2, 4 bits) and W3's whole codes (w3_fields, three
// accumulators per row), ISAs with a masked-plane dot (AVX-512 VNNI):
// the M=1 masked kernel's treatment for the activation-row-blocked kernel. A plane byte holds
// 8/w fields; fields 2s and 2s+1 are masked in place out of (byte >> 2s*w) (one shift per two
// fields from w <= 2, none at w = 4), each mask shared by the MR rows, and dotted into two
// accumulators per row, weight 1 and 2**w, so the group sum is acc_lo + (acc_hi >> w) (exact:
// acc_hi is a multiple of 2**w). Against the generic kernel (one accumulator per row, a chain
// of 8 dots per block, a vpbroadcastd per dot, runtime scale/zero switches) that halves each
// dependency chain, folds the activation broadcast into the dot ({1to16}), and makes scale
// dtype / zero kind / one-block groups template parameters; the symmetric zero correction
// -2**(w-1)*xsum[m][g] (TileArgs::xzero) is the initial value of the low accumulator, and two
// groups run per loop iteration.
template <int BITS, int MR, class I, DType SDT, ZeroKind ZK, int BPG>
void linear_tile_masked_mr_impl(const TileArgs& a) {
  static_assert(masked_fields(BITS), "1, 2, 3 or 4 bits");
  constexpr int per = 8 / BITS;  // fields per plane byte (single-plane widths)
  constexpr int NA = masked_accs<BITS>();
  using Acc = typename I::Acc;
  using F = typename I::F;
  using V = typename I::V;
  const TileWalk<BITS, SDT, ZK, BPG, true> tw(a);
  const int bpg = tw.bpg;
  const int64_t groups = tw.groups;

  F y[MR][1];
  for (int m = 0; m < MR; ++m) y[m][0] = I::f_zero();
  auto finish_group = [&](int64_t g, Acc (&t)[MR]) LOWBIT_LAMBDA {
    const F s = I::load_scales(tw.group_scales(g), SDT);
    const uint8_t* zp = tw.group_zeros(g);
    unroll<MR>([&](auto mm) LOWBIT_LAMBDA {
      constexpr int m = decltype(mm)::value;
      const int32_t sumx = ZK == ZeroKind::symmetric ? 0 : a.xsum[m * a.ldxs + g];
      y[m][0] = I::group_update(y[m][0], t[m], s, zp, ZK, 0, sumx);
    });
  };
  auto group_sum = [&](int64_t g, Acc (&t)[MR]) LOWBIT_LAMBDA {
    Acc acc[MR][NA];  // acc[m][i] holds its codes at bit masked_acc_shift(i)
    unroll<MR>([&](auto mm) LOWBIT_LAMBDA {
      constexpr int m = decltype(mm)::value;
      acc[m][0] = ZK == ZeroKind::symmetric ? I::acc_bcast(a.xzero + m * a.ldxs + g) : I::acc_zero();
      for (int i = 1; i < NA; ++i) acc[m][i] = I::acc_zero();
    });
    tw.prefetch_params(g);
    for (int b = 0; b < bpg; ++b) {
      const int64_t blk_index = g * bpg + b;
      const uint8_t* blk = tw.block(g, b);
      const int8_t* xk = a.xq + blk_index * kBlockK;
      // each masked code vector c serves the MR rows, into its accumulator i
      auto dot_rows = [&](auto cc, auto ii, V code) LOWBIT_LAMBDA {
        unroll<MR>([&](auto mm) LOWBIT_LAMBDA {
          constexpr int m = decltype(mm)::value;
          Acc& t = acc[m][decltype(ii)::value];
          t = I::dot_mem(t, code, xk + m * a.ldx + decltype(cc)::value * kQuad);
        });
      };
      if constexpr (BITS == 3) {
        w3_fields<I>(blk, dot_rows);
      } else
      unroll<BITS>([&](auto pv) LOWBIT_LAMBDA {
        constexpr int p = decltype(pv)::value;
        const V v = I::load(blk + p * kVecBytes);
        unroll<per / 2>([&](auto sv) LOWBIT_LAMBDA {
          constexpr int s2 = decltype(sv)::value;
          constexpr int c = p * per + 2 * s2;  // code vectors c and c+1
          const V vs = I::template shift<-(2 * s2 * BITS)>(v);
          dot_rows(std::integral_constant<int, c>{}, std::integral_constant<int, 0>{}, I::template mask<0, BITS>(vs));
          dot_rows(std::integral_constant<int, c + 1>{}, std::integral_constant<int, 1>{}, I::template mask<BITS, BITS>(vs));
        });
      });
    }
    unroll<MR>([&](auto mm) LOWBIT_LAMBDA {
      constexpr int m = decltype(mm)::value;
      t[m] = masked_sum<BITS, I>(acc[m]);
    });
  };
  Acc prev[MR];
#pragma GCC unroll 2
  for (int64_t g = 0; g < groups; ++g) {
    Acc t[MR];
    group_sum(g, t);
    if (g > 0) finish_group(g - 1, prev);
    for (int m = 0; m < MR; ++m) prev[m] = t[m];
  }
  if (groups > 0) finish_group(groups - 1, prev);
  F yo[MR][1];  // a copy for the store (see store_tile)
  for (int m = 0; m < MR; ++m) yo[m][0] = y[m][0];
  store_tile<MR, 1, kTileN, I>(a, yo);
}

template <int BITS, int MR, class I>
struct MaskedMr {
  template <DType SDT, ZeroKind ZK, int BPG>
  static void run(const TileArgs& a) { linear_tile_masked_mr_impl<BITS, MR, I, SDT, ZK, BPG>(a); }
};

// MR 8 stays on the generic kernel: 16 accumulators plus the pipelined sums and outputs
// exceed 32 zmm (hot per block 82 -> 87 cycles with this kernel at W4)
#ifndef LOWBIT_MASKED_MR_MAX
#define LOWBIT_MASKED_MR_MAX 4
#endif

template <int BITS, int MR, class I>
void linear_tile(const TileArgs& a) {
  if constexpr (MR >= 2 && MR <= LOWBIT_MASKED_MR_MAX && masked_fields(BITS) && I::kMaskedPlanes) {
    by_tile_params<MaskedMr<BITS, MR, I>>(a);
    return;
  }
  if constexpr (MR == 1 && I::kMaskedPlanes && BITS != 8) {
    if (masked_fields(BITS) || a.group_size >= LOWBIT_MASKED_MIN_GS) {
      linear_tile_gemv_masked<BITS, I>(a);
      return;
    }
  }
  using V = typename I::V;
  using Acc = typename I::Acc;
  using F = typename I::F;
  constexpr int P = kVecBytes / I::kPartBytes;   // ISA vectors per code vector
  constexpr int L = kTileN / P;                   // rows per ISA vector
  constexpr int32_t kOffset = I::template code_offset<BITS>();
  const int blocks_per_group = a.group_size / kBlockK;
  const int64_t groups = a.k / a.group_size;
  const int ssz = dtype_size(a.scale_dtype), zsz = zero_size(a.zero_kind);
  const int32_t zsym = 1 << (BITS - 1);

  // The dot products of one (row, group) form a dependent chain of vpdpbusd / sdot; with few
  // activation rows there are too few chains to hide its latency, so each is split over S
  // partial sums (integer adds: exact in any order). Per-channel M=1: 2x faster. From MR=4
  // on, the MR chains plus the pipelined epilogue below are enough (S=2 at MR=4 cost 10%).
  constexpr int S = MR <= 2 ? 4 : 1;

  F y[MR][P];
  for (int m = 0; m < MR; ++m)
    for (int p = 0; p < P; ++p) y[m][p] = I::f_zero();

  // group epilogue: integer zero-point correction, then y += s * float(acc); the scales are
  // widened once per part and shared by the MR rows
  auto finish_group = [&](int64_t g, Acc (&sum)[MR][P]) LOWBIT_LAMBDA {
    for_parts<P, I::kUnrollParts>([&](int p) LOWBIT_LAMBDA {
      const F s = I::load_scales(group_record(a, g) + a.scales_offset + p * L * ssz, a.scale_dtype);
      const uint8_t* zp = group_record(a, g) + a.zeros_offset + p * L * zsz;
      unroll<MR>([&](auto mm) LOWBIT_LAMBDA {
        constexpr int m = decltype(mm)::value;
        const int32_t sumx = a.xsum[m * a.ldxs + g];
        Acc t = sum[m][p];
        if constexpr (kOffset != 0) t = I::add_scalar(t, kOffset * sumx);  // undo the ISA's code shift
        y[m][p] = I::group_update(y[m][p], t, s, zp, a.zero_kind, zsym, sumx);
      });
    });
  };

  // Software-pipelined by one group: group g-1's epilogue is issued after group g's dot
  // products, so it never waits on their dependency chains and the out-of-order window holds
  // ready work while they drain (with MR rows and one block per group the window cannot
  // reach past a whole group on its own). Group 32, per block: W4 M=4 -11%, W3 M=4 -20%.
  Acc prev[MR][P];
  // software prefetch at MR >= 2 only (see kPrefetchBytes), kAhead bytes on in the tile's stream
  constexpr int64_t kAhead = prefetch_ahead<BITS, (MR >= 2)>();
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* rec = group_record(a, g);
    if constexpr (kAhead != 0) prefetch_lines(rec + a.scales_offset + kAhead, a.group_bytes - a.scales_offset);
    Acc acc[MR][P][S];
    for (int m = 0; m < MR; ++m)
      for (int p = 0; p < P; ++p)
        for (int q = 0; q < S; ++q) acc[m][p][q] = I::acc_zero();
    auto dot_block = [&](int b) LOWBIT_LAMBDA {
      const uint8_t* blk = rec + b * (kVecBytes * BITS);
      const int8_t* xk = a.xq + (g * blocks_per_group + b) * kBlockK;
      // into L2 (prefetcht1): 2-10% faster than prefetcht0 on Zen 4 (measured at M=1)
      if constexpr (kAhead != 0) prefetch_lines<int64_t(kVecBytes) * BITS>(blk + kAhead);
      for_parts<P, I::kUnrollParts>([&](int p) LOWBIT_LAMBDA {
        V cv[kCodeVecs];
        unpack_block<BITS, I>(blk + p * I::kPartBytes, cv);
        unroll<kCodeVecs>([&](auto cc) LOWBIT_LAMBDA {
          constexpr int c = decltype(cc)::value;
          unroll<MR>([&](auto mm) LOWBIT_LAMBDA {
            constexpr int m = decltype(mm)::value;
            acc[m][p][c % S] = I::template dot<BITS>(acc[m][p][c % S], cv[c], xk + m * a.ldx + c * kQuad);
          });
        });
      });
    };
    if (blocks_per_group == 1) {
      dot_block(0);  // group 32 straight-line: GCC's block loop copied every accumulator (M=4 -16%)
    } else {
      for (int b = 0; b < blocks_per_group; ++b) dot_block(b);
    }
    if (g > 0) finish_group(g - 1, prev);
    for (int m = 0; m < MR; ++m)
      for (int p = 0; p < P; ++p) {
        prev[m][p] = acc[m][p][0];
        for (int q = 1; q < S; ++q) prev[m][p] = I::acc_add(prev[m][p], acc[m][p][q]);
      }
  }
  if (groups > 0) finish_group(groups - 1, prev);

  F yo[MR][P];  // a copy for the store (see store_tile)
  for (int m = 0; m < MR; ++m)
    for (int p = 0; p < P; ++p) yo[m][p] = y[m][p];
  store_tile<MR, P, L, I>(a, yo);
}

// linear_fp32act_{MR}x16x32_f32_{isa}: the weight-only (float activation) micro-kernel.
// Same tile layout and unpack; the codes are widened to fp32 in registers instead:
//   per group g:  acc_j = sum_k fma(float(q[n,k]) - z[n,g], x[m,k], acc_j)  over the k with
//                         k % 4 in the j-th of S classes (k in order; S = 4/2/1 for MR 1/2/4)
//                 y   = fma(s[n,g], acc_0 + acc_1 + ..., y)
//   y = y + bias[n];  out = cast(y)
// Every lane (output row) sees the same fused operations in the same order on every ISA,
// so SIMD and scalar agree bit for bit; against the float reference (dequantize, then
// matmul) it differs only by summation order (~1e-6 relative in fp32).
// Extra Isa primitives: widen<J>(V) = fp32 of byte J of each 32-bit lane; fsub; fma(a,b,c)
// = a*b+c fused; fbcast(float); load_zeros_f(zp, zk, zsym) = the zero points as fp32.
// ISAs that widen a code to 2**23 + q without a conversion (I::kBiasedWiden, I::widen_biased<J>:
// AVX-512), detected like HasStoreRow
template <class I, class = void>
struct HasBiasedWiden : std::false_type {};
template <class I>
struct HasBiasedWiden<I, std::void_t<decltype(I::kBiasedWiden)>> : std::true_type {};

// BIASED: codes widened as 2**23 + q and integer zero points loaded as 2**23 + z, so
// w = q - z is the same exact value with one conversion less per code (float zeros: no)
template <int BITS, int MR, class I, bool BIASED>
void linear_tile_fact_impl(const TileArgs& a) {
  using V = typename I::V;
  using F = typename I::F;
  constexpr int P = kVecBytes / I::kPartBytes;
  constexpr int L = kTileN / P;
  const int blocks_per_group = a.group_size / kBlockK;
  const int64_t groups = a.k / a.group_size;
  const int ssz = dtype_size(a.scale_dtype), zsz = zero_size(a.zero_kind);
  const int32_t zsym = 1 << (BITS - 1);

  F y[MR][P];
  for (int m = 0; m < MR; ++m)
    for (int p = 0; p < P; ++p) y[m][p] = I::f_zero();

  // each (row, part) accumulator is a chain of dependent FMAs (32 per block): with few rows,
  // split it over S partial sums (the k position j % S) so the FMA latency overlaps
  constexpr int S = MR == 1 ? 4 : (MR == 2 ? 2 : 1);

  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* rec = group_record(a, g);
    F acc[MR][P][S];
    F zf[P];
    for (int p = 0; p < P; ++p) {
      zf[p] = I::load_zeros_f(rec + a.zeros_offset + p * L * zsz, a.zero_kind, zsym);
      if constexpr (BIASED) zf[p] = I::fadd(zf[p], I::fbcast(8388608.0f));  // 2**23 + z, exact for z <= 255
      for (int m = 0; m < MR; ++m)
        for (int q = 0; q < S; ++q) acc[m][p][q] = I::f_zero();
    }
    for (int b = 0; b < blocks_per_group; ++b) {
      const uint8_t* blk = rec + b * (kVecBytes * BITS);
      const float* xk = a.xf + (g * blocks_per_group + b) * kBlockK;
      for_parts<P, I::kUnrollParts>([&](int p) LOWBIT_LAMBDA {
        V cv[kCodeVecs];
        unpack_block<BITS, I>(blk + p * I::kPartBytes, cv);
        unroll<kCodeVecs>([&](auto cc) LOWBIT_LAMBDA {
          constexpr int c = decltype(cc)::value;
          unroll<kQuad>([&](auto jj) LOWBIT_LAMBDA {
            constexpr int j = decltype(jj)::value;
            F q;
            if constexpr (BIASED) q = I::template widen_biased<j>(cv[c]);
            else q = I::template widen<j>(cv[c]);
            const F w = I::fsub(q, zf[p]);
            unroll<MR>([&](auto mm) LOWBIT_LAMBDA {
              constexpr int m = decltype(mm)::value;
              acc[m][p][j % S] = I::fma(w, I::fbcast(xk[m * a.ldx + c * kQuad + j]), acc[m][p][j % S]);
            });
          });
        });
      });
    }
    for_parts<P, I::kUnrollParts>([&](int p) LOWBIT_LAMBDA {
      const F s = I::load_scales(rec + a.scales_offset + p * L * ssz, a.scale_dtype);
      for (int m = 0; m < MR; ++m) {
        F t = acc[m][p][0];
        for (int q = 1; q < S; ++q) t = I::fadd(t, acc[m][p][q]);
        y[m][p] = I::fma(s, t, y[m][p]);
      }
    });
  }

  alignas(64) float yb[MR][kTileN];
  for (int m = 0; m < MR; ++m)
    for (int p = 0; p < P; ++p) I::store(&yb[m][p * L], y[m][p]);
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < a.nvalid; ++r) {
      float v = yb[m][r];
      if (a.bias) v = v + a.bias[a.n0 + r];
      store_f32(a.out, a.out_dtype, m * a.ldo + a.n0 + r, v);
    }
}

// From DRAM, one core, W4 (tests/cpp/bench_cold.cpp FACT=1): M=1 -8..-18%, M=2 -5..-9%; at MR=4
// the widened code serves 4 rows' FMAs and the biased form was 2-5% slower, so MR <= 2 only.
template <int BITS, int MR, class I>
void linear_tile_fact(const TileArgs& a) {
  if constexpr (HasBiasedWiden<I>::value && MR <= 2) {
    if (a.zero_kind != ZeroKind::f32) return linear_tile_fact_impl<BITS, MR, I, true>(a);
  }
  linear_tile_fact_impl<BITS, MR, I, false>(a);
}

// Scalar activation quantization (torch semantics: sx = amax/127, round half to even).
inline void quantize_row_generic(const void* x, DType t, int64_t k, int gs, int8_t* xq, int32_t* xsum, float* sx) {
  float amax = 0.f;
  for (int64_t i = 0; i < k; ++i) {
    const float v = std::fabs(load_f32(x, t, i));
    amax = v > amax ? v : amax;
  }
  const float s = amax > 0.f ? amax / 127.0f : 1.0f;
  for (int64_t g = 0; g < k / gs; ++g) {
    int32_t sum = 0;
    for (int64_t i = g * gs; i < (g + 1) * gs; ++i) {
      float q = std::nearbyint(load_f32(x, t, i) / s);
      q = q < -127.f ? -127.f : (q > 127.f ? 127.f : q);
      xq[i] = int8_t(q);
      sum += int32_t(q);
    }
    xsum[g] = sum;
  }
  *sx = s;
}

// Fill a KernelSet's table with linear_tile<bits, MR, I> for all bits and MR.
template <class I, int BITS>
constexpr void fill_bits(KernelSet& ks) {
  ks.linear[BITS - 1][0] = &linear_tile<BITS, 1, I>;
  ks.linear[BITS - 1][1] = &linear_tile<BITS, 2, I>;
  ks.linear[BITS - 1][2] = &linear_tile<BITS, 4, I>;
  ks.linear[BITS - 1][3] = &linear_tile<BITS, 8, I>;
  ks.linear_fact[BITS - 1][0] = &linear_tile_fact<BITS, 1, I>;
  ks.linear_fact[BITS - 1][1] = &linear_tile_fact<BITS, 2, I>;
  ks.linear_fact[BITS - 1][2] = &linear_tile_fact<BITS, 4, I>;
  ks.linear_fact[BITS - 1][3] = &linear_tile_fact<BITS, 8, I>;
}

// constexpr: the tables are constant-initialized, so no ISA-specific code runs at load time
template <class I>
constexpr KernelSet make_kernel_set(const char* isa, int max_mr, QuantizeRowFn q) {
  KernelSet ks{};
  ks.isa = isa;
  ks.kernel_isa = isa;
  ks.max_mr = max_mr;
  ks.quantize_row = q;
  fill_bits<I, 1>(ks);
  fill_bits<I, 2>(ks);
  fill_bits<I, 3>(ks);
  fill_bits<I, 4>(ks);
  fill_bits<I, 5>(ks);
  fill_bits<I, 6>(ks);
  fill_bits<I, 7>(ks);
  fill_bits<I, 8>(ks);
  return ks;
}

}  // namespace
}  // namespace lowbit
