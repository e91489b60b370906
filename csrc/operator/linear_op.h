// The CPU operator: validates arguments, quantizes activations, picks micro-kernels from
// the ukernel table, tiles N (and M) over threads. Torch-free: raw pointers and sizes, so
// the binding and the C++ test harness call the very same code.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../kernels/kernels.h"

namespace lowbit {

// ---- ukernel selection --------------------------------------------------------------
// ISAs this build contains *and* this CPU runs, best first (always ends with "scalar").
std::vector<std::string> available_isas();
// The kernel set for `isa` ("" = best available). Throws std::invalid_argument if unavailable.
const KernelSet* select_kernels(const std::string& isa);
// Name of the micro-kernel used for the first MR rows of a call with m rows (float_act: the
// weight-only kernels, on bf16 activations when x_dtype is bf16 and the set has them for `bits`).
std::string kernel_name(const KernelSet& ks, int64_t m, bool float_act = false, DType x_dtype = DType::f32,
                        int bits = 4);
// Whether a weight-only call with these activations runs the bf16-activation kernels.
bool uses_bf16act(const KernelSet& ks, int bits, bool float_act, DType x_dtype);
// MR for `rows_left` rows on this kernel set: the largest of 8/4/2/1 <= min(rows_left, max_mr).
int pick_mr(const KernelSet& ks, int64_t rows_left);

// ---- weights ------------------------------------------------------------------------
int64_t packed_size(int bits, int group_size, int64_t n, int64_t k, DType scale_dtype, ZeroKind zero_kind);
// Repack canonical (qdata, scales, zeros) into dst (packed_size bytes). Throws on bad args
// or on zeros that do not fit ZeroKind::u8.
void pack_weights(const uint8_t* qdata, const void* scales, const void* zeros, DType zeros_dtype, int bits,
                  int group_size, int64_t n, int64_t k, DType scale_dtype, ZeroKind zero_kind, uint8_t* dst,
                  int64_t dst_bytes, int nthreads);
// Header of a packed weight, validated against its size. Throws if it is not one.
PackedHeader read_header(const uint8_t* packed, int64_t packed_bytes);

// ---- ops ----------------------------------------------------------------------------
struct LinearArgs {
  const void* x;             // [m, k] rows at x + i*ldx elements
  DType x_dtype;
  int64_t m, k, ldx;
  const uint8_t* packed;     // packed weight (pack_weights)
  int64_t packed_bytes;
  const float* bias;         // [n] fp32 or nullptr
  void* out;                 // [m, n] rows at out + i*ldo elements
  DType out_dtype;
  int64_t ldo;
  int nthreads;
  bool float_act;            // true: weight-only kernels (on bf16 activations where the set has
                             // them and x is bf16, else fp32); false: int8 dynamic
};
// out = x @ W.T + bias with int8 dynamic activations (bit-exact, see linear_tile.h) or,
// with float_act, on fp32 activations (weight-only).
void linear(const LinearArgs& a, const KernelSet& ks);

// out[i, :] = embedding row idx[i] (see pack.h). Throws std::out_of_range on a bad index.
void embedding(const int64_t* idx, int64_t nidx, const uint8_t* qdata, const void* scales, DType scale_dtype,
               const void* zeros, DType zeros_dtype, int bits, int group_size, int64_t n, int64_t k, void* out,
               DType out_dtype, int nthreads);

}  // namespace lowbit
