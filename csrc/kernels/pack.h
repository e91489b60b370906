// Torch-free weight repacking (canonical format -> tile layout) and low-bit embedding rows.
//
// Canonical format (lowbit/packing.py): per row, K codes in chunks of 8 codes = `bits`
// bytes; inside a chunk the planes of bits' binary decomposition, widest first, lowest bits
// first; a plane of width w keeps code i at byte (i*w)/8, bit (i*w)%8, LSB first.
#pragma once

#include <cstdint>

#include "common.h"

namespace lowbit {

// Decode one canonical row: qrow [k/8*bits] -> codes [k].
void decode_canonical_row(const uint8_t* qrow, int bits, int64_t k, uint8_t* codes);

// Pack the 16-row tile `t` of a canonical weight into `dst` (tile_bytes bytes).
//   qdata [n][k/8*bits] u8; scales [n][k/gs] of scale_dtype; zeros [n][k/gs] of zeros_dtype
//   (nullptr when symmetric). Rows past n are zero-filled (zero codes, zero scales).
// Returns false if a zero point cannot be stored as u8 (not an integer in 0..255).
bool pack_tile(const PackedHeader& h, int64_t t, const uint8_t* qdata, const void* scales, const void* zeros,
               DType zeros_dtype, uint8_t* dst);

// Embedding rows: out[i, :] = cast((float(q[idx[i], :]) - z) * s) for i in [i0, i1).
void embedding_rows(const int64_t* idx, int64_t i0, int64_t i1, const uint8_t* qdata, const void* scales,
                    DType scale_dtype, const void* zeros, DType zeros_dtype, int bits, int group_size, int64_t k,
                    void* out, DType out_dtype);

}  // namespace lowbit
