// The torch-free kernel tier: what each ISA translation unit exports.
//
// A KernelSet is one ISA's ukernel table: linear micro-kernels indexed by [bits-1][log2 MR]
// and an activation quantizer. The operator (csrc/operator) picks a set from the CPU's
// features, then a micro-kernel per (bits, rows left); the kernels themselves never
// allocate, never thread and never check shapes: the caller hands them one tile.
#pragma once

#include <cstdint>

#include "common.h"

namespace lowbit {

// One call = MR activation rows x one 16-row weight tile, the whole K.
struct TileArgs {
  const uint8_t* tile;        // packed tile: G group records [codes [bpg][64*bits], scales [16], zeros [16]]
  int64_t scales_offset;      // byte offsets of scales / zeros inside a group record (PackedHeader)
  int64_t zeros_offset;
  int64_t group_bytes;        // size of a group record: group g starts at tile + g * group_bytes
  const int8_t* xq;           // quantized activations, row m at xq + m*ldx   (int8, K used)
  int64_t ldx;
  const int32_t* xsum;        // per-group sums of xq, row m at xsum + m*ldxs  (G used)
  const int32_t* xzero;       // symmetric weights: -(xsum << (bits-1)), the masked kernels' accumulator
                              // start, row m at xzero + m*ldxs (once per call: a per-tile table cost
                              // 2-6% at M=1, docs/cpu_kernels.md "Per-call work out of the tiles")
  int64_t ldxs;
  const float* sx;            // [MR] per-row activation scales
  const float* xf;            // float-activation kernels: fp32 activations, row m at xf + m*ldx
  const uint16_t* xbf;        // bf16-activation kernels: bf16 activations, each k-quad stored as
                              // (x0, x2, x1, x3), row m at xbf + m*ldx
  const float* xgsum;         // bf16-activation kernels: fp32 group sums of x, row m at xgsum + m*ldxs
  const float* bias;          // fp32 bias indexed by output column, or nullptr
  void* out;                  // output, row m at out + m*ldo elements, column n0
  int64_t ldo;
  DType out_dtype;
  int64_t n0;                 // first output column of the tile
  int nvalid;                 // valid rows of this tile (the last tile of an odd N has < 16)
  int64_t k;
  int group_size;             // multiple of 32
  DType scale_dtype;
  ZeroKind zero_kind;
  bool prefetch_x;            // M=1 kernels: prefetch the activations ahead (they leave L1 within a tile)
};

// Group g's record in a tile: its code blocks, then scales [16] at scales_offset, zeros [16] at
// zeros_offset (the one place the kernels compute it; the packer fills the same layout)
LOWBIT_INLINE const uint8_t* group_record(const TileArgs& a, int64_t g) { return a.tile + g * a.group_bytes; }

// The operator sets TileArgs::prefetch_x when a tile's bytes plus one activation row's exceed
// this: the activations then leave L1 within a tile (linear_tile.h, prefetch_act).
#ifndef LOWBIT_ACT_PREFETCH_MIN_BYTES
#define LOWBIT_ACT_PREFETCH_MIN_BYTES (48 << 10)
#endif
constexpr int64_t kActPrefetchMinBytes = LOWBIT_ACT_PREFETCH_MIN_BYTES;

using LinearTileFn = void (*)(const TileArgs&);
// x: [k] of dtype t -> xq [k] int8, xsum [k/gs] int32, *sx: the per-token int8 quantization
using QuantizeRowFn = void (*)(const void* x, DType t, int64_t k, int gs, int8_t* xq, int32_t* xsum, float* sx);

constexpr int kMrVariants = 4;  // MR in {1, 2, 4, 8}

// x: [k] bf16 -> xbf [k] (each k-quad reordered to (x0, x2, x1, x3): the pairs a 2-way bf16
// dot takes against codes split into even / odd bytes) and xgsum [k/gs] fp32 group sums
using PrepareBf16RowFn = void (*)(const uint16_t* x, int64_t k, int gs, uint16_t* xbf, float* xgsum);

// Weight-only kernels on bf16 activations with a 2-way bf16 dot (AVX-512 BF16 vdpbf16ps):
// [bits-1][log2(MR)] (a nullptr entry would send that width to the fp32-activation kernels)
struct Bf16ActKernels {
  LinearTileFn linear[8][kMrVariants];
  PrepareBf16RowFn prepare_row;
};

struct KernelSet {
  const char* isa;                        // "avx512bf16", "avx512vnni", "avx2", "neondot", "scalar"
  const char* kernel_isa;                 // suffix of the int8 / fp32act kernel names (avx512bf16
                                          // runs avx512vnni's)
  int max_mr;                             // largest MR worth using on this ISA
  LinearTileFn linear[8][kMrVariants];    // int8 activations: [bits-1][log2(MR)]
  LinearTileFn linear_fact[8][kMrVariants];  // fp32 activations (weight-only): [bits-1][log2(MR)]
  QuantizeRowFn quantize_row;
  const Bf16ActKernels* bf16act;          // bf16-activation weight-only kernels, or nullptr
};

// Each returns nullptr when the translation unit was not built for this architecture.
// Whether the CPU can run it is the operator's question (cpu_features).
const KernelSet* kernels_scalar();
const KernelSet* kernels_avx2();
const KernelSet* kernels_avx512vnni();
const KernelSet* kernels_neondot();
// avx512vnni's set plus the bf16-activation kernels (the CPU must have AVX-512 BF16 too)
const KernelSet* kernels_avx512bf16();

}  // namespace lowbit
