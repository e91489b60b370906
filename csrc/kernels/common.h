// Shared, torch-free definitions for the lowbit CPU kernels: element types, the packed
// weight layout (header + tiles), scalar float conversions and the compile-time unroll
// helper. Everything here lives in an anonymous namespace on purpose: each ISA translation
// unit is compiled with different target flags, and an inline function shared across them
// could be merged by the linker into the copy built for the widest ISA (an ODR trap).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#if defined(__GNUC__)
#define LOWBIT_INLINE inline __attribute__((always_inline))
// on the unrolling lambdas: if GCC declines to inline one, the accumulator arrays it
// captures escape to memory and every FMA/dot is followed by a store
#define LOWBIT_LAMBDA __attribute__((always_inline))
#else
#define LOWBIT_INLINE inline
#define LOWBIT_LAMBDA
#endif

namespace lowbit {

// Element types crossing the binding (values fixed: the Python side maps torch dtypes to them).
enum class DType : int32_t { f32 = 0, bf16 = 1, f16 = 2 };
// How a packed weight stores its zero points.
//   symmetric: none stored, z = 2**(bits-1);  u8: integer zeros (exact int32 path);
//   f32: float zeros (HQQ, weight-only only): correction applied in fp32.
enum class ZeroKind : int32_t { symmetric = 0, u8 = 1, f32 = 2 };

// ---- the tile layout (docs/cpu_kernels.md has the byte-level picture) -----------------
constexpr int kTileN = 16;      // output rows per tile: the 32-bit lanes of one 512-bit vector
constexpr int kQuad = 4;        // k values per 32-bit lane: the vpdpbusd / sdot reduction width
constexpr int kBlockK = 32;     // k values per block: 8 code vectors of 16 rows x 4 k
constexpr int kCodeVecs = kBlockK / kQuad;   // 8
constexpr int kVecBytes = kTileN * kQuad;    // 64: one unpacked code vector
constexpr uint32_t kPackedMagic = 0x4C42574Bu;  // "KWBL"
constexpr uint32_t kPackedVersion = 3;  // 2: group records (scales beside their codes); 3: the W3 block layout
constexpr int kHeaderBytes = 64;

struct PackedHeader {     // first 64 bytes of a packed weight
  uint32_t magic, version;
  int32_t bits, group_size;
  int64_t n, k;
  int32_t scale_dtype, zero_kind;
  int64_t tile_bytes;      // bytes per 16-row tile (multiple of 64)
  // A tile is G group records, one after another: the group's code blocks, its scales [16],
  // its zeros [16]. Offsets of scales / zeros inside a record, and the record's size.
  int32_t scales_offset;
  int32_t zeros_offset;
  int64_t group_bytes;
};
static_assert(sizeof(PackedHeader) <= kHeaderBytes, "header must fit its slot");

namespace {

constexpr LOWBIT_INLINE int dtype_size(DType t) { return t == DType::f32 ? 4 : 2; }
constexpr LOWBIT_INLINE int zero_size(ZeroKind z) { return z == ZeroKind::symmetric ? 0 : (z == ZeroKind::u8 ? 1 : 4); }

LOWBIT_INLINE int64_t tile_codes_bytes(int64_t k, int bits) { return k / kBlockK * kVecBytes * bits; }

// Fill a header from the shape; returns the total packed size in bytes.
inline int64_t make_header(PackedHeader& h, int bits, int group_size, int64_t n, int64_t k, DType sdt, ZeroKind zk) {
  std::memset(&h, 0, sizeof h);
  h.magic = kPackedMagic;
  h.version = kPackedVersion;
  h.bits = bits;
  h.group_size = group_size;
  h.n = n;
  h.k = k;
  h.scale_dtype = static_cast<int32_t>(sdt);
  h.zero_kind = static_cast<int32_t>(zk);
  const int64_t groups = k / group_size;
  h.scales_offset = int32_t(tile_codes_bytes(group_size, bits));
  h.zeros_offset = h.scales_offset + kTileN * dtype_size(sdt);
  h.group_bytes = h.zeros_offset + kTileN * zero_size(zk);
  h.tile_bytes = (groups * h.group_bytes + 63) / 64 * 64;
  const int64_t tiles = (n + kTileN - 1) / kTileN;
  return kHeaderBytes + tiles * h.tile_bytes;
}

// ---- scalar float conversions (bit-exact with torch: round to nearest even) ----------
LOWBIT_INLINE uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
LOWBIT_INLINE float bits_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

LOWBIT_INLINE float bf16_to_f32(uint16_t h) { return bits_f32(uint32_t(h) << 16); }

LOWBIT_INLINE uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN stays a quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0) return bits_f32(sign);
    // subnormal half: value = mant * 2**-24, exact in fp32
    const float v = float(mant) * bits_f32(0x33800000u);  // 2**-24
    return sign ? -v : v;
  }
  return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

inline uint16_t f32_to_f16(float f) {
  uint32_t x = f32_bits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return sign | 0x7e00u;          // NaN
  if (x >= 0x477ff000u) return sign | 0x7c00u;         // rounds to inf (>= 65520)
  if (x < 0x38800000u) {                               // below 2**-14: half subnormal or zero
    // adding 0.5 puts the half-subnormal unit (2**-24) at the fp32 ulp: the FPU rounds (RNE)
    volatile float a = bits_f32(x) + 0.5f;
    return sign | uint16_t(f32_bits(a) - 0x3f000000u);
  }
  const uint32_t odd = (x >> 13) & 1u;
  x += 0xc8000000u + 0xfffu + odd;  // rebias exponent (127 -> 15) and round to nearest even
  return sign | uint16_t(x >> 13);
}

LOWBIT_INLINE float load_f32(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(p)[i];
    case DType::bf16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    default: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
  }
}

LOWBIT_INLINE void store_f32(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::f32: static_cast<float*>(p)[i] = v; break;
    case DType::bf16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(v); break;
    default: static_cast<uint16_t*>(p)[i] = f32_to_f16(v); break;
  }
}

// ---- compile-time unrolling: f(std::integral_constant<int, i>{}) for i in [0, N) -------
template <class F, int... I>
LOWBIT_INLINE void unroll_impl(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, class F>
LOWBIT_INLINE void unroll(F&& f) {
  unroll_impl(f, std::make_integer_sequence<int, N>{});
}

}  // namespace
}  // namespace lowbit
