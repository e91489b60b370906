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

// Final store of one tile: y * sx, + bias, cast. Scalar because it is O(MR*16) against
// O(MR*16*K) above.
template <int MR, int P, int L, class I>
LOWBIT_INLINE void store_tile(const TileArgs& a, typename I::F (&y)[MR][P]) {
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

constexpr int kPrefetchBlocks = 24;

// GEMV variant for ISAs whose dot product takes any u8 (AVX-512 VNNI): the codes are only
// masked, never shifted, so the field at bit S of a plane byte enters the dot as
// field << S. Each (plane, bit position) gets its own accumulator and the group sum is
//   sum over planes of ( acc_p0 + (acc_p1 >> w) + (acc_p2 >> 2w) + ... ) << plane_low,
// exact: every acc_pj is a multiple of 2**(j*w) and |acc| <= K*127*255 < 2**31. Per code
// vector and plane that is one AND and one dot. A multi-plane width (3, 5, 6, 7) thus runs
// one dot per plane instead of merging the planes with shift/or first; that pays once the
// group is long enough to amortize combining its 10-14 accumulators (linear_tile picks it
// from 4 blocks per group on: W3 M=1 -24% at group 128, +14% at group 32). 8-bit codes need
// no unpack and stay on the generic kernel, whose 4 partial sums hide the dot latency.
constexpr int masked_positions(int bits, int plane) { return 8 / plane_width(bits, plane); }
constexpr int masked_first_acc(int bits, int plane) {
  int n = 0;
  for (int i = 0; i < plane; ++i) n += masked_positions(bits, i);
  return n;
}
constexpr int masked_accs(int bits) { return masked_first_acc(bits, plane_count(bits)); }

template <int BITS, class I>
void linear_tile_gemv_masked(const TileArgs& a) {
  using Acc = typename I::Acc;
  using F = typename I::F;
  constexpr int NA = masked_accs(BITS);
  const int blocks_per_group = a.group_size / kBlockK;
  const int64_t groups = a.k / a.group_size;
  const int ssz = dtype_size(a.scale_dtype), zsz = zero_size(a.zero_kind);
  const int32_t zsym = 1 << (BITS - 1);
  const uint8_t* scales = a.tile + a.scales_offset;
  const uint8_t* zeros = a.tile + a.zeros_offset;
  F y[1][1] = {{I::f_zero()}};
  auto finish_group = [&](int64_t g, Acc t) LOWBIT_LAMBDA {
    y[0][0] = I::group_update(y[0][0], t, I::load_scales(scales + g * kTileN * ssz, a.scale_dtype),
                              zeros + g * kTileN * zsz, a.zero_kind, zsym, a.xsum[g]);
  };
  Acc prev = I::acc_zero();  // software-pipelined like linear_tile: see there
  for (int64_t g = 0; g < groups; ++g) {
    Acc acc[NA];
    for (int j = 0; j < NA; ++j) acc[j] = I::acc_zero();
    for (int b = 0; b < blocks_per_group; ++b) {
      const int64_t blk_index = g * blocks_per_group + b;
      const uint8_t* blk = a.tile + blk_index * (kVecBytes * BITS);
      const int8_t* xk = a.xq + blk_index * kBlockK;
      for (int l = 0; l < BITS; ++l) __builtin_prefetch(blk + (kPrefetchBlocks * BITS + l) * kVecBytes, 0, 2);
      unroll<plane_count(BITS)>([&](auto pi) LOWBIT_LAMBDA {
        constexpr int w = plane_width(BITS, decltype(pi)::value);
        constexpr int low = plane_low(BITS, decltype(pi)::value);
        constexpr int first = masked_first_acc(BITS, decltype(pi)::value);
        constexpr int per = 8 / w;
        unroll<w>([&](auto pv) LOWBIT_LAMBDA {
          constexpr int p = decltype(pv)::value;
          const typename I::V v = I::load(blk + (low + p) * kVecBytes);
          unroll<per>([&](auto jv) LOWBIT_LAMBDA {
            constexpr int jj = decltype(jv)::value;
            acc[first + jj] = I::template dot<BITS>(acc[first + jj], I::template mask<jj * w, w>(v), xk + (p * per + jj) * kQuad);
          });
        });
      });
    }
    if (g > 0) finish_group(g - 1, prev);
    Acc t = I::acc_zero();
    unroll<plane_count(BITS)>([&](auto pi) LOWBIT_LAMBDA {
      constexpr int w = plane_width(BITS, decltype(pi)::value);
      constexpr int low = plane_low(BITS, decltype(pi)::value);
      constexpr int first = masked_first_acc(BITS, decltype(pi)::value);
      Acc tp = acc[first];
      unroll<8 / w - 1>([&](auto jv) LOWBIT_LAMBDA {
        constexpr int jj = decltype(jv)::value + 1;
        tp = I::acc_add(tp, I::template srai<jj * w>(acc[first + jj]));
      });
      t = I::acc_add(t, I::template slli<low>(tp));
    });
    prev = t;
  }
  if (groups > 0) finish_group(groups - 1, prev);
  store_tile<1, 1, kTileN, I>(a, y);
}

template <int BITS, int MR, class I>
void linear_tile(const TileArgs& a) {
  if constexpr (MR == 1 && I::kMaskedPlanes && BITS != 8) {
    if (plane_count(BITS) == 1 || a.group_size >= 4 * kBlockK) {
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
  const uint8_t* scales = a.tile + a.scales_offset;
  const uint8_t* zeros = a.tile + a.zeros_offset;

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
      const F s = I::load_scales(scales + (g * kTileN + p * L) * ssz, a.scale_dtype);
      const uint8_t* zp = zeros + (g * kTileN + p * L) * zsz;
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
  for (int64_t g = 0; g < groups; ++g) {
    Acc acc[MR][P][S];
    for (int m = 0; m < MR; ++m)
      for (int p = 0; p < P; ++p)
        for (int q = 0; q < S; ++q) acc[m][p][q] = I::acc_zero();
    auto dot_block = [&](int64_t blk_index) LOWBIT_LAMBDA {
      const uint8_t* blk = a.tile + blk_index * (kVecBytes * BITS);
      const int8_t* xk = a.xq + blk_index * kBlockK;
      // software prefetch kPrefetchBlocks ahead (one cache line per bit of width): at M=1
      // the kernel is a pure weight stream and the hardware prefetcher alone lags behind.
      // Into L2 (prefetcht1): 2-10% faster at M=1 than prefetcht0 on Zen 4.
      for (int l = 0; l < BITS; ++l) __builtin_prefetch(blk + (kPrefetchBlocks * BITS + l) * kVecBytes, 0, 2);
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
      dot_block(g);  // group 32 straight-line: GCC's block loop copied every accumulator (M=4 -16%)
    } else {
      for (int b = 0; b < blocks_per_group; ++b) dot_block(g * blocks_per_group + b);
    }
    if (g > 0) finish_group(g - 1, prev);
    for (int m = 0; m < MR; ++m)
      for (int p = 0; p < P; ++p) {
        prev[m][p] = acc[m][p][0];
        for (int q = 1; q < S; ++q) prev[m][p] = I::acc_add(prev[m][p], acc[m][p][q]);
      }
  }
  if (groups > 0) finish_group(groups - 1, prev);

  store_tile<MR, P, L, I>(a, y);
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
template <int BITS, int MR, class I>
void linear_tile_fact(const TileArgs& a) {
  using V = typename I::V;
  using F = typename I::F;
  constexpr int P = kVecBytes / I::kPartBytes;
  constexpr int L = kTileN / P;
  const int blocks_per_group = a.group_size / kBlockK;
  const int64_t groups = a.k / a.group_size;
  const int ssz = dtype_size(a.scale_dtype), zsz = zero_size(a.zero_kind);
  const int32_t zsym = 1 << (BITS - 1);
  const uint8_t* scales = a.tile + a.scales_offset;
  const uint8_t* zeros = a.tile + a.zeros_offset;

  F y[MR][P];
  for (int m = 0; m < MR; ++m)
    for (int p = 0; p < P; ++p) y[m][p] = I::f_zero();

  // each (row, part) accumulator is a chain of dependent FMAs (32 per block): with few rows,
  // split it over S partial sums (the k position j % S) so the FMA latency overlaps
  constexpr int S = MR == 1 ? 4 : (MR == 2 ? 2 : 1);

  for (int64_t g = 0; g < groups; ++g) {
    F acc[MR][P][S];
    F zf[P];
    for (int p = 0; p < P; ++p) {
      zf[p] = I::load_zeros_f(zeros + (g * kTileN + p * L) * zsz, a.zero_kind, zsym);
      for (int m = 0; m < MR; ++m)
        for (int q = 0; q < S; ++q) acc[m][p][q] = I::f_zero();
    }
    for (int b = 0; b < blocks_per_group; ++b) {
      const int64_t blk_index = g * blocks_per_group + b;
      const uint8_t* blk = a.tile + blk_index * (kVecBytes * BITS);
      const float* xk = a.xf + blk_index * kBlockK;
      for_parts<P, I::kUnrollParts>([&](int p) LOWBIT_LAMBDA {
        V cv[kCodeVecs];
        unpack_block<BITS, I>(blk + p * I::kPartBytes, cv);
        unroll<kCodeVecs>([&](auto cc) LOWBIT_LAMBDA {
          constexpr int c = decltype(cc)::value;
          unroll<kQuad>([&](auto jj) LOWBIT_LAMBDA {
            constexpr int j = decltype(jj)::value;
            const F w = I::fsub(I::template widen<j>(cv[c]), zf[p]);
            unroll<MR>([&](auto mm) LOWBIT_LAMBDA {
              constexpr int m = decltype(mm)::value;
              acc[m][p][j % S] = I::fma(w, I::fbcast(xk[m * a.ldx + c * kQuad + j]), acc[m][p][j % S]);
            });
          });
        });
      });
    }
    for_parts<P, I::kUnrollParts>([&](int p) LOWBIT_LAMBDA {
      const F s = I::load_scales(scales + (g * kTileN + p * L) * ssz, a.scale_dtype);
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
