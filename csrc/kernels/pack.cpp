// Canonical -> tile repacking and embedding lookup (scalar: run once per weight, or
// bandwidth-trivial per looked-up row).
#include "pack.h"

#include <cmath>
#include <vector>

namespace lowbit {

void decode_canonical_row(const uint8_t* qrow, int bits, int64_t k, uint8_t* codes) {
  for (int64_t ch = 0; ch < k / 8; ++ch) {
    const uint8_t* c = qrow + ch * bits;
    uint8_t* o = codes + ch * 8;
    for (int i = 0; i < 8; ++i) o[i] = 0;
    int off = 0;  // byte offset of the plane inside the chunk == its low bit
    for (int w = 8; w >= 1; w >>= 1) {
      if (!(bits & w)) continue;
      const uint8_t mask = uint8_t((1u << w) - 1u);
      for (int i = 0; i < 8; ++i) {
        const int bit = i * w;
        o[i] |= uint8_t(((c[off + bit / 8] >> (bit % 8)) & mask) << off);
      }
      off += w;
    }
  }
}

bool pack_tile(const PackedHeader& h, int64_t t, const uint8_t* qdata, const void* scales, const void* zeros,
               DType zeros_dtype, uint8_t* dst) {
  const int bits = h.bits;
  const int64_t k = h.k, n = h.n, groups = k / h.group_size;
  const int64_t row_bytes = k / 8 * bits;
  const DType sdt = static_cast<DType>(h.scale_dtype);
  const ZeroKind zk = static_cast<ZeroKind>(h.zero_kind);
  std::vector<uint8_t> codes(size_t(kTileN * k), 0);
  for (int r = 0; r < kTileN; ++r) {
    const int64_t row = t * kTileN + r;
    if (row < n) decode_canonical_row(qdata + row * row_bytes, bits, k, codes.data() + r * k);
  }
  std::memset(dst, 0, size_t(h.tile_bytes));
  // codes: block b, plane (widest first) of width w at byte-vector offset `low`, byte-vector
  // p, byte i = 4*r + j carries code vector c = p*(8/w) + jj at bit jj*w; 3 bits: whole codes
  const int64_t bpg = h.group_size / kBlockK;
  for (int64_t b = 0; b < k / kBlockK; ++b) {
    uint8_t* blk = dst + (b / bpg) * h.group_bytes + (b % bpg) * kVecBytes * bits;
    if (bits == 3) {  // whole codes, not planes (bitunpack.h, "W3")
      for (int i = 0; i < kVecBytes; ++i) {
        const int r = i / kQuad, j = i % kQuad;
        unsigned c[kCodeVecs];
        for (int cv = 0; cv < kCodeVecs; ++cv) c[cv] = codes[size_t(r * k + b * kBlockK + cv * kQuad + j)];
        blk[i] = uint8_t(c[0] | c[1] << 3 | (c[6] >> 1) << 6);
        blk[kVecBytes + i] = uint8_t(c[2] | c[3] << 3 | (c[7] >> 1) << 6);
        blk[2 * kVecBytes + i] = uint8_t(c[4] | c[5] << 3 | (c[6] & 1) << 6 | (c[7] & 1) << 7);
      }
      continue;
    }
    int low = 0;
    for (int w = 8; w >= 1; w >>= 1) {
      if (!(bits & w)) continue;
      const int per = 8 / w;
      const unsigned mask = (1u << w) - 1u;
      for (int p = 0; p < w; ++p)
        for (int i = 0; i < kVecBytes; ++i) {
          const int r = i / kQuad, j = i % kQuad;
          unsigned v = 0;
          for (int jj = 0; jj < per; ++jj) {
            const int c = p * per + jj;
            const unsigned code = codes[size_t(r * k + b * kBlockK + c * kQuad + j)];
            v |= ((code >> low) & mask) << (jj * w);
          }
          blk[(low + p) * kVecBytes + i] = uint8_t(v);
        }
      low += w;
    }
  }
  // after each group's codes: its scales [16] (raw bytes of the model dtype), zeros [16] as u8 or f32
  const int ssz = dtype_size(sdt);
  for (int r = 0; r < kTileN; ++r) {
    const int64_t row = t * kTileN + r;
    if (row >= n) break;
    for (int64_t g = 0; g < groups; ++g) {
      uint8_t* rec = dst + g * h.group_bytes;
      std::memcpy(rec + h.scales_offset + r * ssz, static_cast<const uint8_t*>(scales) + (row * groups + g) * ssz, ssz);
      if (zk == ZeroKind::symmetric) continue;
      const float z = load_f32(zeros, zeros_dtype, row * groups + g);
      if (zk == ZeroKind::u8) {
        if (!(z >= 0.f && z <= 255.f && z == std::floor(z))) return false;
        rec[h.zeros_offset + r] = uint8_t(z);
      } else {
        std::memcpy(rec + h.zeros_offset + r * 4, &z, 4);
      }
    }
  }
  return true;
}

void embedding_rows(const int64_t* idx, int64_t i0, int64_t i1, const uint8_t* qdata, const void* scales,
                    DType scale_dtype, const void* zeros, DType zeros_dtype, int bits, int group_size, int64_t k,
                    void* out, DType out_dtype) {
  const int64_t row_bytes = k / 8 * bits, groups = k / group_size;
  const float zsym = float(1 << (bits - 1));
  std::vector<uint8_t> codes(static_cast<size_t>(k));
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t row = idx[i];
    decode_canonical_row(qdata + row * row_bytes, bits, k, codes.data());
    for (int64_t g = 0; g < groups; ++g) {
      const float s = load_f32(scales, scale_dtype, row * groups + g);
      const float z = zeros ? load_f32(zeros, zeros_dtype, row * groups + g) : zsym;
      for (int64_t e = g * group_size; e < (g + 1) * group_size; ++e)
        store_f32(out, out_dtype, i * k + e, (float(codes[size_t(e)]) - z) * s);
    }
  }
}

}  // namespace lowbit
