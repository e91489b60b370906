// linear_bf16act_{MR}x16x32_f32_avx512bf16: weight-only micro-kernels for bf16 activations on
// AVX-512 BF16 (vdpbf16ps), on the same tile layout as the int8 kernels.
//
//   vdpbf16ps acc, w, x      acc[r] += w[2r] * x[0] + w[2r+1] * x[1]     (fp32 accumulate)
//
// A code vector's 32-bit lane r holds row r's codes at k0..k3 (bytes 0..3). Read as 16-bit
// words, its even bytes (k0, k2) are the low bytes of the lane's two words and its odd bytes
// (k1, k3) the low bytes after a 16-bit shift by 8, so one vpermw each turns them into the
// bf16 values of (q - 2**(bits-1)): vpermw reads only the index's low 5 bits, the table has
// 32 entries, and bits of the neighbouring field above the code are ignored by repeating the
// table every 2**w entries (6-bit codes: vpermt2w, 64 entries). 7- and 8-bit codes are
// converted instead (wide_pairs: through the float 2**23 + q, ~7 ops a vector; looking them
// up as two nibbles with twice the dots was 1.1-1.8x slower from M = 4 on). The activations
// come reordered per k-quad as (x0, x2, x1, x3) so that the pair broadcast for the even words
// is (x0, x2) and for the odd ones (x1, x3). Per 16 rows x 4 k: 1 shift, 2 lookups, and 2
// dots per activation row (32 MACs each, twice vfmadd's 16).
//
// Math, per output (m, n):
//   for each group g:  t = sum_k bf16(q[n,k] - zs) * x[m,k]          (products exact in fp32,
//                                                                     fp32 sums; zs = 2**(bits-1))
//                      t = t - (z[n,g] - zs) * xgsum[m,g]           (asymmetric / float zeros)
//                      y = fma(s[n,g], t, y)
//   y = y + bias[n];  out = cast(y)
// q - zs is an integer in [-2**(bits-1), 2**(bits-1)), exact in bf16 (8 significant bits).
// Only bf16 activations take this path, so nothing is rounded that the model had not
// rounded: against the float reference it differs by summation order (vdpbf16ps sums two
// products per step), like the fp32 kernels; it is not bit-identical to them.
#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>

#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512bf16,f16c,fma,avx2,bmi2")

#include "isa_avx512.h"
#include "linear_tile.h"

namespace lowbit {
namespace {

using I = IsaAvx512Vnni;

// bf16 bit pattern of a small integer (|v| <= 255: exact, 8 significant bits)
constexpr uint16_t bf16_of_int(int v) {
  if (v == 0) return 0;
  const uint16_t sign = v < 0 ? 0x8000 : 0;
  const int m = v < 0 ? -v : v;
  int e = 0;
  while ((m >> (e + 1)) != 0) ++e;
  return uint16_t(sign | ((127 + e) << 7) | ((m << (7 - e)) & 0x7f));
}

// Lookup table: entry i = bf16((i mod 2**W) - OFF), 64 entries (vpermw uses 32)
template <int W, int OFF>
struct CodeTable {
  alignas(64) uint16_t v[64];
  constexpr CodeTable() : v{} {
    for (int i = 0; i < 64; ++i) v[i] = bf16_of_int((i & ((1 << W) - 1)) - OFF);
  }
};

template <int W, int OFF>
struct Lut {
  static constexpr CodeTable<W, OFF> kTable{};
  __m512i lo, hi;
  LOWBIT_INLINE Lut() {
    lo = _mm512_load_si512(kTable.v);
    if constexpr (W == 6) hi = _mm512_load_si512(kTable.v + 32);
  }
  // bf16 value of the code in the low bits of each 16-bit word of idx
  LOWBIT_INLINE __m512i operator()(__m512i idx) const {
    if constexpr (W == 6) return _mm512_permutex2var_epi16(lo, idx, hi);
    else return _mm512_permutexvar_epi16(idx, lo);
  }
};

template <int S>
LOWBIT_INLINE __m512i srl16(__m512i v) {
  if constexpr (S == 0) return v;
  else return _mm512_srli_epi16(v, S);
}

// acc + the 2-way bf16 dot of w with the pair at x broadcast to every lane, the broadcast
// folded into the instruction ({1to16}); GCC keeps a separate vpbroadcastd for the intrinsic
LOWBIT_INLINE __m512 dot_pair(__m512 acc, __m512i w, const uint16_t* x) {
  __asm__("vdpbf16ps %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*reinterpret_cast<const int32_t*>(x)));
  return acc;
}

// 7/8-bit codes (too many for a one-instruction lookup): the bf16 pairs (q_J - ZS, q_J+2 - ZS)
// of each 32-bit lane (J = 0: bytes 0 and 2, J = 1: bytes 1 and 3). I::widen_biased<J> is the
// float 2**23 + q_J without a conversion; subtracting 2**23 + ZS leaves q_J - ZS exactly, an
// integer of at most 8 significant bits, so its bf16 is its upper 16 bits (exact truncation).
template <int J, int ZS>
LOWBIT_INLINE __m512i wide_pairs(__m512i v) {
  const __m512 bias = _mm512_set1_ps(8388608.0f + ZS);
  const __m512i lo = _mm512_castps_si512(_mm512_sub_ps(I::widen_biased<J>(v), bias));
  const __m512i hi = _mm512_castps_si512(_mm512_sub_ps(I::widen_biased<J + 2>(v), bias));
  // (hi & 0xffff0000) | (lo >> 16): vpternlogd "A ? B : C" with A the mask
  return _mm512_ternarylogic_epi32(_mm512_set1_epi32(int(0xffff0000u)), hi, _mm512_srli_epi32(lo, 16), 0xCA);
}

template <int BITS, int MR, DType SDT, ZeroKind ZK>
void linear_tile_bf16act_impl(const TileArgs& a) {
  constexpr int NP = plane_count(BITS);
  // independent accumulator chains: vdpbf16ps issues once a cycle here with ~6 cycles of
  // latency, so 8 at least (S per row and parity)
  constexpr int S = MR == 1 ? 4 : (MR == 2 ? 2 : 1);
  // software prefetch: none for the light M=1 single-plane kernel (the hardware prefetcher
  // follows the tile's one stream), the heavy distance otherwise (see kPrefetchBytes)
  const TileWalk<BITS, SDT, ZK, 0, (MR > 1 || NP > 1)> tw(a);
  constexpr int kZs = 1 << (BITS - 1);
  // the lookup's index width: a plane's field in place, else a whole code (unused from 7 bits)
  const Lut<NP == 1 ? (BITS == 8 ? 5 : BITS) : (BITS == 6 ? 6 : 5), kZs> lut;

  __m512 y[MR][1];
  for (int m = 0; m < MR; ++m) y[m][0] = _mm512_setzero_ps();

  for (int64_t g = 0; g < tw.groups; ++g) {
    __m512 acc[MR][S][2];
    for (int m = 0; m < MR; ++m)
      for (int s = 0; s < S; ++s) acc[m][s][0] = acc[m][s][1] = _mm512_setzero_ps();
    tw.prefetch_params(g);
    for (int b = 0; b < tw.bpg; ++b) {
      const uint8_t* blk = tw.block(g, b);
      const uint16_t* xk = a.xbf + (g * tw.bpg + b) * kBlockK;
      if constexpr (MR == 1) prefetch_act(a, xk);
      auto dots = [&](auto cc, __m512i even, __m512i odd) LOWBIT_LAMBDA {
        constexpr int c = decltype(cc)::value;
        unroll<MR>([&](auto mm) LOWBIT_LAMBDA {
          constexpr int m = decltype(mm)::value;
          acc[m][c % S][0] = dot_pair(acc[m][c % S][0], even, xk + m * a.ldx + c * kQuad);
          acc[m][c % S][1] = dot_pair(acc[m][c % S][1], odd, xk + m * a.ldx + c * kQuad + 2);
        });
      };
      if constexpr (BITS >= 7) {
        __m512i cv[kCodeVecs];
        unpack_block<BITS, I>(blk, cv);
        unroll<kCodeVecs>([&](auto cc) LOWBIT_LAMBDA {
          constexpr int c = decltype(cc)::value;
          dots(cc, wide_pairs<0, kZs>(cv[c]), wide_pairs<1, kZs>(cv[c]));
        });
      } else if constexpr (NP == 1) {
        // one plane (1, 2, 4 bits): the field at bit jj*w of a plane byte is looked up in place
        constexpr int w = BITS, per = 8 / w;
        unroll<w>([&](auto pv) LOWBIT_LAMBDA {
          constexpr int p = decltype(pv)::value;
          const __m512i v = I::load(blk + p * kVecBytes);
          unroll<per>([&](auto jv) LOWBIT_LAMBDA {
            constexpr int jj = decltype(jv)::value;
            dots(std::integral_constant<int, p * per + jj>{}, lut(srl16<jj * w>(v)), lut(srl16<8 + jj * w>(v)));
          });
        });
      } else {
        __m512i cv[kCodeVecs];
        unpack_block<BITS, I>(blk, cv);
        unroll<kCodeVecs>([&](auto cc) LOWBIT_LAMBDA { dots(cc, lut(cv[decltype(cc)::value]), lut(srl16<8>(cv[decltype(cc)::value]))); });
      }
    }
    const __m512 s = I::load_scales(tw.group_scales(g), SDT);
    __m512 zc = _mm512_setzero_ps();
    if constexpr (ZK == ZeroKind::u8)
      zc = _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tw.group_zeros(g))))),
                         _mm512_set1_ps(float(kZs)));
    else if constexpr (ZK == ZeroKind::f32)
      zc = _mm512_sub_ps(_mm512_loadu_ps(tw.group_zeros(g)), _mm512_set1_ps(float(kZs)));
    for (int m = 0; m < MR; ++m) {
      __m512 t = _mm512_add_ps(acc[m][0][0], acc[m][0][1]);
      for (int q = 1; q < S; ++q) t = _mm512_add_ps(t, _mm512_add_ps(acc[m][q][0], acc[m][q][1]));
      if constexpr (ZK != ZeroKind::symmetric) t = _mm512_fnmadd_ps(zc, _mm512_set1_ps(a.xgsum[m * a.ldxs + g]), t);
      y[m][0] = _mm512_fmadd_ps(s, t, y[m][0]);
    }
  }
  // a.sx is all ones here (the operator's, weight-only: x * 1 is exact). No TileArgs copy with
  // sx replaced: its vector stores, read back as fields, stalled every tile's end.
  __m512 yo[MR][1];  // a copy for the store (see store_tile)
  for (int m = 0; m < MR; ++m) yo[m][0] = y[m][0];
  store_tile<MR, 1, kTileN, I>(a, yo);
}

template <int BITS, int MR>
struct Bf16Act {
  template <DType SDT, ZeroKind ZK, int>
  static void run(const TileArgs& a) { linear_tile_bf16act_impl<BITS, MR, SDT, ZK>(a); }
};

template <int BITS, int MR>
void linear_tile_bf16act(const TileArgs& a) {
  by_tile_params<Bf16Act<BITS, MR>>(a);
}

// bf16 row -> k-quads reordered to (x0, x2, x1, x3), and fp32 group sums. K, gs: multiples of 32.
void prepare_bf16_row(const uint16_t* x, int64_t k, int gs, uint16_t* xbf, float* xgsum) {
  alignas(64) static constexpr uint16_t kOrder[32] = {0,  2,  1,  3,  4,  6,  5,  7,  8,  10, 9,  11, 12, 14, 13, 15,
                                                      16, 18, 17, 19, 20, 22, 21, 23, 24, 26, 25, 27, 28, 30, 29, 31};
  const __m512i order = _mm512_load_si512(kOrder);
  for (int64_t i = 0; i < k; i += 32)
    _mm512_storeu_si512(xbf + i, _mm512_permutexvar_epi16(order, _mm512_loadu_si512(x + i)));
  for (int64_t g = 0; g < k / gs; ++g) {
    __m512 sum = _mm512_setzero_ps();
    for (int64_t i = g * gs; i < (g + 1) * gs; i += 16) {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
      sum = _mm512_add_ps(sum, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
    }
    xgsum[g] = _mm512_reduce_add_ps(sum);
  }
}

template <int BITS>
constexpr void fill_bf16_bits(Bf16ActKernels& t) {
  t.linear[BITS - 1][0] = &linear_tile_bf16act<BITS, 1>;
  t.linear[BITS - 1][1] = &linear_tile_bf16act<BITS, 2>;
  t.linear[BITS - 1][2] = &linear_tile_bf16act<BITS, 4>;
  t.linear[BITS - 1][3] = &linear_tile_bf16act<BITS, 8>;
}

constexpr Bf16ActKernels make_bf16act() {
  Bf16ActKernels t{};
  fill_bf16_bits<1>(t);
  fill_bf16_bits<2>(t);
  fill_bf16_bits<3>(t);
  fill_bf16_bits<4>(t);
  fill_bf16_bits<5>(t);
  fill_bf16_bits<6>(t);
  fill_bf16_bits<7>(t);
  fill_bf16_bits<8>(t);
  t.prepare_row = &prepare_bf16_row;
  return t;
}

constexpr Bf16ActKernels kBf16Act = make_bf16act();

}  // namespace

// The int8 and fp32-activation kernels are avx512vnni's (this CPU has VNNI too); only the
// bf16-activation table is this unit's. Built on first call, after the operator's CPU check.
const KernelSet* kernels_avx512bf16() {
  static const KernelSet set = [] {
    KernelSet s = *kernels_avx512vnni();
    s.isa = "avx512bf16";
    s.bf16act = &kBf16Act;
    return s;
  }();
  return &set;
}

}  // namespace lowbit

#else  // not x86-64

#include "kernels.h"
namespace lowbit {
const KernelSet* kernels_avx512bf16() { return nullptr; }
}  // namespace lowbit

#endif
