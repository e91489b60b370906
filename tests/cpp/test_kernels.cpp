// C++ test harness for the torch-free CPU kernels (built from the same csrc/ sources as
// the extension; natively, and cross-compiled for aarch64 to run the NEON kernels under
// qemu). For every ISA this CPU runs it checks, bit for bit:
//   * scalar micro-kernels vs a naive reference written here from the unpacked codes,
//   * every SIMD ISA vs scalar, for the int8 path and the fp32-activation path,
//   * embedding rows vs a naive dequantization;
// and the bf16-activation weight-only kernels (avx512bf16; a different summation order, so
// not bit-identical) within one bf16 rounding plus 1e-5 of the terms' magnitude of a double
// reference,
// over bits 1..8, group sizes 32..256 and per-channel, symmetric / u8 / float zeros, all
// MR remainders, an odd N, and f32 / bf16 / f16 scales and outputs.
// Exit status 0 = all equal; the first mismatches are printed.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../../csrc/kernels/pack.h"
#include "../../csrc/operator/linear_op.h"

using namespace lowbit;

namespace {

std::mt19937 rng(1234);
int failures = 0;

uint16_t to_dtype_bits(float v, DType t) { return t == DType::bf16 ? f32_to_bf16(v) : f32_to_f16(v); }

// a tensor of `count` values of dtype t, as raw bytes, and their exact fp32 values
struct Buf {
  std::vector<uint8_t> raw;
  std::vector<float> val;
};
Buf make_buf(int64_t count, DType t, float lo, float hi, bool integral = false) {
  std::uniform_real_distribution<float> d(lo, hi);
  Buf b;
  b.raw.resize(size_t(count * dtype_size(t)));
  b.val.resize(size_t(count));
  for (int64_t i = 0; i < count; ++i) {
    float v = d(rng);
    if (integral) v = std::floor(v);
    if (t == DType::f32) std::memcpy(&b.raw[size_t(i * 4)], &v, 4);
    else {
      const uint16_t h = to_dtype_bits(v, t);
      std::memcpy(&b.raw[size_t(i * 2)], &h, 2);
    }
    b.val[size_t(i)] = load_f32(b.raw.data(), t, i);
  }
  return b;
}

// canonical packing, written independently of lowbit/packing.py's torch code
std::vector<uint8_t> pack_canonical(const std::vector<uint8_t>& codes, int64_t n, int64_t k, int bits) {
  std::vector<uint8_t> out(size_t(n * k / 8 * bits), 0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t ch = 0; ch < k / 8; ++ch) {
      uint8_t* c = &out[size_t(r * (k / 8 * bits) + ch * bits)];
      int low = 0;
      for (int w = 8; w >= 1; w >>= 1) {
        if (!(bits & w)) continue;
        for (int i = 0; i < 8; ++i) {
          const unsigned v = (codes[size_t(r * k + ch * 8 + i)] >> low) & ((1u << w) - 1u);
          c[low + (i * w) / 8] |= uint8_t(v << ((i * w) % 8));
        }
        low += w;
      }
    }
  return out;
}

bool same_bits(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, const std::string& what, DType t) {
  if (a == b) return true;
  const int sz = dtype_size(t);
  int shown = 0;
  for (size_t i = 0; i < a.size() / sz && shown < 4; ++i)
    if (std::memcmp(&a[i * sz], &b[i * sz], sz)) {
      std::printf("  MISMATCH %s at element %zu: %.9g vs %.9g\n", what.c_str(), i, load_f32(a.data(), t, i),
                  load_f32(b.data(), t, i));
      ++shown;
    }
  ++failures;
  return false;
}

void test_linear(const std::vector<std::string>& isas, int bits, int gs, ZeroKind zk, DType sdt, DType xdt,
                 int64_t n, int64_t k) {
  const int64_t groups = k / gs;
  std::vector<uint8_t> codes(static_cast<size_t>(n * k));
  std::uniform_int_distribution<int> cd(0, (1 << bits) - 1);
  for (auto& c : codes) c = uint8_t(cd(rng));
  const std::vector<uint8_t> q = pack_canonical(codes, n, k, bits);
  Buf scales = make_buf(n * groups, sdt, 0.001f, 0.05f);
  Buf zeros;
  DType zdt = sdt;
  if (zk == ZeroKind::u8) zeros = make_buf(n * groups, sdt, 0.f, float(1 << bits), true);
  if (zk == ZeroKind::f32) zeros = make_buf(n * groups, sdt, 0.f, float((1 << bits) - 1));
  const void* zp = zk == ZeroKind::symmetric ? nullptr : zeros.raw.data();
  std::vector<uint8_t> packed(static_cast<size_t>(packed_size(bits, gs, n, k, sdt, zk)));
  pack_weights(q.data(), scales.raw.data(), zp, zdt, bits, gs, n, k, sdt, zk, packed.data(), int64_t(packed.size()), 2);
  std::vector<float> bias(static_cast<size_t>(n));
  for (auto& b : bias) b = std::uniform_real_distribution<float>(-1.f, 1.f)(rng);

  for (int64_t m : {1, 2, 3, 4, 5, 8, 17}) {
    Buf x = make_buf(m * k, xdt, -3.f, 3.f);
    for (bool float_act : {false, true}) {
      if (!float_act && zk == ZeroKind::f32) continue;  // float zeros are weight-only
      std::vector<uint8_t> want(static_cast<size_t>(m * n * dtype_size(xdt)));
      if (!float_act) {
        // naive int8 reference (lowbit.quant.int8_linear_reference)
        for (int64_t i = 0; i < m; ++i) {
          float amax = 0.f;
          for (int64_t e = 0; e < k; ++e) amax = std::max(amax, std::fabs(x.val[size_t(i * k + e)]));
          const float sx = amax > 0.f ? amax / 127.0f : 1.0f;
          std::vector<int32_t> xq(static_cast<size_t>(k));
          for (int64_t e = 0; e < k; ++e)
            xq[size_t(e)] = int32_t(std::min(127.f, std::max(-127.f, std::nearbyint(x.val[size_t(i * k + e)] / sx))));
          for (int64_t r = 0; r < n; ++r) {
            float y = 0.f;
            for (int64_t g = 0; g < groups; ++g) {
              int64_t dot = 0, sum = 0;
              for (int64_t e = g * gs; e < (g + 1) * gs; ++e) {
                dot += int64_t(xq[size_t(e)]) * codes[size_t(r * k + e)];
                sum += xq[size_t(e)];
              }
              const int64_t z = zk == ZeroKind::symmetric ? (1 << (bits - 1)) : int64_t(zeros.val[size_t(r * groups + g)]);
              const float p = scales.val[size_t(r * groups + g)] * float(int32_t(dot - z * sum));
              y = y + p;
            }
            y = y * sx;
            y = y + bias[size_t(r)];
            store_f32(want.data(), xdt, i * n + r, y);
          }
        }
      }
      std::vector<uint8_t> scalar_out;
      // the weight-only result in double, and the magnitude of its terms (error bound)
      auto near_double_reference = [&](const std::vector<uint8_t>& out, const std::string& what) {
        for (int64_t i = 0; i < m; ++i)
          for (int64_t r = 0; r < n; ++r) {
            double y = bias[size_t(r)], mag = std::fabs(bias[size_t(r)]);
            for (int64_t e = 0; e < k; ++e) {
              const int64_t g = e / gs;
              const double z = zk == ZeroKind::symmetric ? double(1 << (bits - 1)) : double(zeros.val[size_t(r * groups + g)]);
              const double t = double(scales.val[size_t(r * groups + g)]) * (codes[size_t(r * k + e)] - z) * x.val[size_t(i * k + e)];
              y += t;
              mag += std::fabs(t);
            }
            const double got = load_f32(out.data(), xdt, i * n + r);
            if (std::fabs(got - y) > std::ldexp(std::fabs(y), -8) + 1e-5 * mag) {
              std::printf("  MISMATCH %s at (%ld, %ld): %.9g vs double %.9g\n", what.c_str(), long(i), long(r), got, y);
              ++failures;
              return;
            }
          }
      };
      for (const std::string& isa : isas) {
        std::vector<uint8_t> out(want.size(), 0xAB);
        LinearArgs a{x.raw.data(), xdt, m, k, k, packed.data(), int64_t(packed.size()), bias.data(), out.data(), xdt,
                     n, 2, float_act};
        linear(a, *select_kernels(isa));
        char what[160];
        std::snprintf(what, sizeof what, "%s bits=%d gs=%d zk=%d sdt=%d xdt=%d m=%ld %s", isa.c_str(), bits, gs, int(zk),
                      int(sdt), int(xdt), long(m), float_act ? "fp32act" : "int8");
        if (isa == "scalar") {
          scalar_out = out;
          if (!float_act) same_bits(out, want, std::string(what) + " vs naive", xdt);
        } else if (uses_bf16act(*select_kernels(isa), bits, float_act, xdt)) {
          near_double_reference(out, std::string(what) + " bf16act");
        } else {
          same_bits(out, scalar_out, std::string(what) + " vs scalar", xdt);
        }
      }
    }
  }
}

void test_embedding(int bits, DType sdt) {
  const int64_t n = 50, k = 64;
  const int gs = 32;
  std::vector<uint8_t> codes(static_cast<size_t>(n * k));
  std::uniform_int_distribution<int> cd(0, (1 << bits) - 1);
  for (auto& c : codes) c = uint8_t(cd(rng));
  const std::vector<uint8_t> q = pack_canonical(codes, n, k, bits);
  Buf scales = make_buf(n * 2, sdt, 0.01f, 0.1f);
  Buf zeros = make_buf(n * 2, sdt, 0.f, float((1 << bits) - 1));
  std::vector<int64_t> idx = {3, 0, 49, 3, 17};
  std::vector<uint8_t> out(idx.size() * k * dtype_size(sdt)), want(out.size());
  embedding(idx.data(), int64_t(idx.size()), q.data(), scales.raw.data(), sdt, zeros.raw.data(), sdt, bits, gs, n, k,
            out.data(), sdt, 2);
  for (size_t i = 0; i < idx.size(); ++i)
    for (int64_t e = 0; e < k; ++e) {
      const int64_t r = idx[i], g = e / gs;
      const float v = (float(codes[size_t(r * k + e)]) - zeros.val[size_t(r * 2 + g)]) * scales.val[size_t(r * 2 + g)];
      store_f32(want.data(), sdt, int64_t(i) * k + e, v);
    }
  same_bits(out, want, "embedding bits=" + std::to_string(bits), sdt);
}

}  // namespace

int main() {
  const std::vector<std::string> isas = available_isas();  // best first, ends with scalar
  std::vector<std::string> order(isas.rbegin(), isas.rend());  // scalar first: the others compare to it
  std::printf("ISAs:");
  for (auto& s : isas) std::printf(" %s", s.c_str());
  std::printf("\n");
  const DType dts[3] = {DType::f32, DType::bf16, DType::f16};
  int cases = 0;
  for (int bits = 1; bits <= 8; ++bits)
    for (int gs : {32, 64, 128, 256, 0})
      for (ZeroKind zk : {ZeroKind::symmetric, ZeroKind::u8, ZeroKind::f32}) {
        const int64_t k = 256;
        const DType sdt = dts[(bits + cases) % 3], xdt = dts[(bits + 2 * cases + 1) % 3];
        test_linear(order, bits, gs ? gs : int(k), zk, sdt, xdt, 37, k);
        ++cases;
      }
  for (int bits = 1; bits <= 8; ++bits)
    for (DType t : dts) test_embedding(bits, t);
  std::printf("%d linear weight cases x 7 M values, %s\n", cases,
              failures ? "FAILED" : "all bit-exact (bf16-activation kernels: within the stated bound)");
  return failures ? 1 : 0;
}
