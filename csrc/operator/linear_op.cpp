#include "linear_op.h"

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

#include "../kernels/pack.h"
#include "thread_pool.h"

namespace lowbit {
namespace {

bool cpu_has(const std::string& isa) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (isa == "avx512vnni")
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vnni");
  if (isa == "avx512bf16") return cpu_has("avx512vnni") && __builtin_cpu_supports("avx512bf16");
  if (isa == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");  // F16C comes with both
#elif defined(__aarch64__) && defined(__linux__)
  if (isa == "neondot") return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#endif
  return isa == "scalar";
}

// Only call an ISA's accessor once the CPU is known to run it.
const KernelSet* kernels_for(const std::string& isa) {
  if (!cpu_has(isa)) return nullptr;
  if (isa == "avx512bf16") return kernels_avx512bf16();
  if (isa == "avx512vnni") return kernels_avx512vnni();
  if (isa == "avx2") return kernels_avx2();
  if (isa == "neondot") return kernels_neondot();
  if (isa == "scalar") return kernels_scalar();
  return nullptr;
}

const char* const kIsaOrder[] = {"avx512bf16", "avx512vnni", "avx2", "neondot", "scalar"};

void check(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument(msg);
}

int mr_index(int mr) { return mr >= 8 ? 3 : mr >= 4 ? 2 : mr >= 2 ? 1 : 0; }

// Split [0, total) into `parts` contiguous ranges; part i gets [begin, end).
void split(int64_t total, int parts, int i, int64_t& begin, int64_t& end) {
  const int64_t base = total / parts, rem = total % parts;
  begin = i * base + std::min<int64_t>(i, rem);
  end = begin + base + (i < rem ? 1 : 0);
}

}  // namespace

std::vector<std::string> available_isas() {
  std::vector<std::string> out;
  for (const char* isa : kIsaOrder)
    if (kernels_for(isa)) out.emplace_back(isa);
  return out;
}

const KernelSet* select_kernels(const std::string& isa) {
  if (isa.empty()) return kernels_for(available_isas().front());
  const KernelSet* ks = kernels_for(isa);
  if (!ks) throw std::invalid_argument("ISA '" + isa + "' is not available in this build on this CPU");
  return ks;
}

int pick_mr(const KernelSet& ks, int64_t rows_left) {
  const int64_t lim = std::min<int64_t>(rows_left, ks.max_mr);
  return lim >= 8 ? 8 : lim >= 4 ? 4 : lim >= 2 ? 2 : 1;
}

bool uses_bf16act(const KernelSet& ks, int bits, bool float_act, DType x_dtype) {
  return float_act && x_dtype == DType::bf16 && ks.bf16act && ks.bf16act->linear[bits - 1][0];
}

namespace {
// n elements of v's storage starting on a 64-byte line (the vector keeps 64 bytes of slack)
template <class T>
T* line_aligned(std::vector<T>& v, size_t n) {
  v.resize(n + 64 / sizeof(T));
  return reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(v.data()) + 63) & ~uintptr_t(63));
}

// Largest MR a family runs: the fp32-activation kernels stop at 4 (at MR=8, 8 accumulators +
// 4 widened codes + broadcasts, GCC's schedule was 2.6x slower per MAC than at MR=4)
int64_t mr_cap(bool float_act, bool bf16act) { return float_act && !bf16act ? 4 : 8; }
}  // namespace

std::string kernel_name(const KernelSet& ks, int64_t m, bool float_act, DType x_dtype, int bits) {
  const bool bf16 = uses_bf16act(ks, bits, float_act, x_dtype);
  const int mr = pick_mr(ks, std::min<int64_t>(m, mr_cap(float_act, bf16)));
  if (bf16) return "linear_bf16act_" + std::to_string(mr) + "x16x32_f32_" + ks.isa;
  return std::string(float_act ? "linear_fp32act_" : "linear_") + std::to_string(mr) + "x16x32_f32_" + ks.kernel_isa;
}

int64_t packed_size(int bits, int group_size, int64_t n, int64_t k, DType scale_dtype, ZeroKind zero_kind) {
  check(bits >= 1 && bits <= 8, "bits must be in 1..8, got " + std::to_string(bits));
  check(n >= 1 && k >= 1, "weight shape must be positive");
  check(k % kBlockK == 0, "K must be a multiple of 32 for the CPU kernels, got " + std::to_string(k));
  check(group_size > 0 && group_size % kBlockK == 0 && k % group_size == 0,
        "group_size must be a multiple of 32 dividing K, got " + std::to_string(group_size));
  check(k * 127LL * 255LL < (1LL << 31), "K too large for exact int32 accumulation: " + std::to_string(k));
  PackedHeader h;
  return make_header(h, bits, group_size, n, k, scale_dtype, zero_kind);
}

void pack_weights(const uint8_t* qdata, const void* scales, const void* zeros, DType zeros_dtype, int bits,
                  int group_size, int64_t n, int64_t k, DType scale_dtype, ZeroKind zero_kind, uint8_t* dst,
                  int64_t dst_bytes, int nthreads) {
  const int64_t size = packed_size(bits, group_size, n, k, scale_dtype, zero_kind);
  check(dst_bytes == size, "packed buffer has " + std::to_string(dst_bytes) + " bytes, expected " + std::to_string(size));
  check((zero_kind == ZeroKind::symmetric) == (zeros == nullptr), "zeros must be given exactly when not symmetric");
  PackedHeader h;
  make_header(h, bits, group_size, n, k, scale_dtype, zero_kind);
  std::memcpy(dst, &h, sizeof h);
  std::memset(dst + sizeof h, 0, kHeaderBytes - sizeof h);
  const int64_t tiles = (n + kTileN - 1) / kTileN;
  std::atomic<bool> ok{true};
  const int nt = int(std::max<int64_t>(1, std::min<int64_t>(nthreads, tiles)));
  parallel_run(nt, [&](int tid) {
    int64_t t0, t1;
    split(tiles, nt, tid, t0, t1);
    for (int64_t t = t0; t < t1; ++t)
      if (!pack_tile(h, t, qdata, scales, zeros, zeros_dtype, dst + kHeaderBytes + t * h.tile_bytes)) ok = false;
  });
  check(ok, "zero points must be integers in 0..255 for the integer (u8) zero-point path");
}

PackedHeader read_header(const uint8_t* packed, int64_t packed_bytes) {
  check(packed != nullptr && packed_bytes >= kHeaderBytes, "packed weight is too small to hold a header");
  PackedHeader h;
  std::memcpy(&h, packed, sizeof h);
  check(h.magic == kPackedMagic, "not a lowbit CPU packed weight (bad magic)");
  check(h.version == kPackedVersion, "packed weight version " + std::to_string(h.version) + " is not supported");
  PackedHeader want;
  const int64_t size = make_header(want, h.bits, h.group_size, h.n, h.k, DType(h.scale_dtype), ZeroKind(h.zero_kind));
  check(size == packed_bytes && std::memcmp(&want, &h, sizeof h) == 0, "packed weight header does not match its size");
  return h;
}

void linear(const LinearArgs& a, const KernelSet& ks) {
  const PackedHeader h = read_header(a.packed, a.packed_bytes);
  check(a.k == h.k, "x has K=" + std::to_string(a.k) + " but the weight has K=" + std::to_string(h.k));
  check(a.m >= 0 && a.ldx >= a.k && a.ldo >= h.n, "bad activation/output sizes or strides");
  if (a.m == 0) return;
  const int64_t m = a.m, k = h.k, n = h.n, groups = k / h.group_size;
  const int64_t tiles = (n + kTileN - 1) / kTileN;
  const int nthreads = std::max(1, a.nthreads);

  // 1. activations: int8 per-token quantization, or fp32 for the weight-only kernels
  //    (rows over threads). Scratch is per calling thread and reused across calls; the
  //    workers get raw pointers (a thread_local named inside the lambdas would be theirs).
  //    The activation rows start on a cache line: malloc's 16-byte alignment split half the
  //    int8 blocks (32 bytes) and every bf16 block (64 bytes) over two lines, and at M=1 the
  //    activations come from L2 once a tile outgrows L1.
  thread_local std::vector<int8_t> xq_buf;
  thread_local std::vector<int32_t> xsum_buf, xzero_buf;
  thread_local std::vector<float> sx_buf, xf_buf, xgsum_buf;
  thread_local std::vector<uint16_t> xbf_buf;
  const int xsz = dtype_size(a.x_dtype);
  const int qt = int(std::min<int64_t>(nthreads, m));
  int8_t* xq = nullptr;
  int32_t* xsum = nullptr;
  int32_t* xzero = nullptr;
  float* sx = nullptr;
  const float* xf = nullptr;
  const uint16_t* xbf = nullptr;
  const float* xgsum = nullptr;
  int64_t ldx = k;
  const bool bf16act = uses_bf16act(ks, h.bits, a.float_act, a.x_dtype);
  if (bf16act) {
    uint16_t* dst = line_aligned(xbf_buf, size_t(m * k));
    xgsum_buf.resize(size_t(m * groups));
    float* gsum = xgsum_buf.data();
    parallel_run(qt, [&](int tid) {
      int64_t r0, r1;
      split(m, qt, tid, r0, r1);
      for (int64_t r = r0; r < r1; ++r)
        ks.bf16act->prepare_row(static_cast<const uint16_t*>(a.x) + r * a.ldx, k, h.group_size, dst + r * k,
                                gsum + r * groups);
    });
    xbf = dst;
    xgsum = gsum;
  } else if (!a.float_act) {
    xq = line_aligned(xq_buf, size_t(m * k));
    xsum_buf.resize(size_t(m * groups));
    sx_buf.resize(size_t(m));
    xsum = xsum_buf.data();
    sx = sx_buf.data();
    parallel_run(qt, [&](int tid) {
      int64_t r0, r1;
      split(m, qt, tid, r0, r1);
      for (int64_t r = r0; r < r1; ++r)
        ks.quantize_row(static_cast<const uint8_t*>(a.x) + r * a.ldx * xsz, a.x_dtype, k, h.group_size, xq + r * k,
                        xsum + r * groups, sx + r);
    });
    if (ZeroKind(h.zero_kind) == ZeroKind::symmetric) {
      // the masked kernels' accumulator start, once per call rather than per tile
      xzero_buf.resize(size_t(m * groups));
      xzero = xzero_buf.data();
      for (int64_t i = 0; i < m * groups; ++i) xzero[i] = -(xsum[i] * (1 << (h.bits - 1)));
    }
  } else if (a.x_dtype == DType::f32) {
    xf = static_cast<const float*>(a.x);
    ldx = a.ldx;
  } else {
    float* dst = line_aligned(xf_buf, size_t(m * k));
    for (int64_t r = 0; r < m; ++r)
      for (int64_t i = 0; i < k; ++i) dst[r * k + i] = load_f32(a.x, a.x_dtype, r * a.ldx + i);
    xf = dst;
  }

  // 2. tiles of 16 output columns over threads; inside a tile all M rows, MR at a time,
  //    so the tile's codes come from DRAM once and from L1/L2 for the other row blocks
  TileArgs base{};
  base.scales_offset = h.scales_offset;
  base.zeros_offset = h.zeros_offset;
  base.group_bytes = h.group_bytes;
  base.ldx = ldx;
  base.ldxs = groups;
  base.bias = a.bias;
  base.ldo = a.ldo;
  base.out_dtype = a.out_dtype;
  base.k = k;
  base.group_size = h.group_size;
  base.scale_dtype = DType(h.scale_dtype);
  base.zero_kind = ZeroKind(h.zero_kind);
  // read by the M=1 int8 and bf16-activation kernels (the fp32-activation ones do not prefetch)
  base.prefetch_x = h.tile_bytes + k * (bf16act ? 2 : 1) > kActPrefetchMinBytes;
  const LinearTileFn* fns =
      bf16act ? ks.bf16act->linear[h.bits - 1] : (a.float_act ? ks.linear_fact[h.bits - 1] : ks.linear[h.bits - 1]);
  const int64_t max_mr = mr_cap(a.float_act, bf16act);
  const int osz = dtype_size(a.out_dtype);
  // The row blocks (MR rows each) are fixed for the call, so their kernel and arguments are
  // set up once; per tile only the tile's own fields change (a per-tile re-setup of the row
  // pointers and the MR choice cost 2-5% at M=1, docs/cpu_kernels.md).
  struct RowBlock {
    LinearTileFn fn;
    TileArgs args;
  };
  thread_local std::vector<RowBlock> blocks;  // reused across calls: no allocation per call
  blocks.clear();
  for (int64_t m0 = 0; m0 < m;) {
    const int mr = pick_mr(ks, std::min<int64_t>(m - m0, max_mr));
    TileArgs ta = base;
    if (bf16act) {
      static const float kOnes[8] = {1.f, 1.f, 1.f, 1.f, 1.f, 1.f, 1.f, 1.f};
      ta.sx = kOnes;  // weight-only: the kernels' row store multiplies by 1 (exact)
      ta.xbf = xbf + m0 * k;
      ta.xgsum = xgsum + m0 * groups;
    } else if (a.float_act) {
      ta.xf = xf + m0 * ldx;
    } else {
      ta.xq = xq + m0 * k;
      ta.xsum = xsum + m0 * groups;
      ta.xzero = xzero ? xzero + m0 * groups : nullptr;
      ta.sx = sx + m0;
    }
    ta.out = static_cast<uint8_t*>(a.out) + m0 * a.ldo * osz;
    blocks.push_back({fns[mr_index(mr)], ta});
    m0 += mr;
  }
  const RowBlock* const rb = blocks.data();  // the workers see the caller's blocks through this
  const size_t nrb = blocks.size();
  // Tiles are handed out in chunks from an atomic counter rather than split statically:
  // on a shared machine one slowed thread would otherwise hold up the whole call. Guided
  // schedule: each chunk is 1/(2*nt) of the tiles left, so the first ones are long
  // contiguous weight streams (for the prefetchers) and the last ones single tiles (the
  // threads finish together; fixed chunks of tiles/(8*nt) were 2-3% slower at M=1-4).
  const int nt = int(std::min<int64_t>(nthreads, tiles));
  std::atomic<int64_t> next{0};
  auto grab = [&](int64_t& t0, int64_t& t1) {
    t0 = next.load(std::memory_order_relaxed);
    do {
      if (t0 >= tiles) return false;
      t1 = t0 + std::max<int64_t>(1, (tiles - t0) / (2 * int64_t(nt)));
    } while (!next.compare_exchange_weak(t0, t1, std::memory_order_relaxed));
    return true;
  };
  parallel_run(nt, [&](int) {
    thread_local std::vector<RowBlock> mine;  // this worker's arguments (the tile fields change)
    mine.assign(rb, rb + nrb);
    for (int64_t t0, t1; grab(t0, t1);) {
      for (int64_t t = t0; t < t1; ++t) {
        const uint8_t* tile = a.packed + kHeaderBytes + t * h.tile_bytes;
        const int nvalid = int(std::min<int64_t>(kTileN, n - t * kTileN));
        for (RowBlock& b : mine) {
          b.args.tile = tile;
          b.args.n0 = t * kTileN;
          b.args.nvalid = nvalid;
          b.fn(b.args);
        }
      }
    }
  });
}

void embedding(const int64_t* idx, int64_t nidx, const uint8_t* qdata, const void* scales, DType scale_dtype,
               const void* zeros, DType zeros_dtype, int bits, int group_size, int64_t n, int64_t k, void* out,
               DType out_dtype, int nthreads) {
  check(bits >= 1 && bits <= 8, "bits must be in 1..8");
  check(k % 8 == 0 && group_size > 0 && k % group_size == 0, "group_size must divide K (a multiple of 8)");
  for (int64_t i = 0; i < nidx; ++i)
    if (idx[i] < 0 || idx[i] >= n)
      throw std::out_of_range("embedding index " + std::to_string(idx[i]) + " is out of range for " +
                              std::to_string(n) + " rows");
  const int nt = int(std::max<int64_t>(1, std::min<int64_t>(nthreads, nidx / 4)));
  parallel_run(nt, [&](int tid) {
    int64_t i0, i1;
    split(nidx, nt, tid, i0, i1);
    embedding_rows(idx, i0, i1, qdata, scales, scale_dtype, zeros, zeros_dtype, bits, group_size, k, out, out_dtype);
  });
}

}  // namespace lowbit
