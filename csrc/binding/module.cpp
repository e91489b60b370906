// lowbit._C_cpu: the thin pybind11 binding over the torch-free operator.
//
// It does not link libtorch: Python passes tensor.data_ptr() addresses, sizes and strides
// (and allocates outputs with torch), so this module builds against any torch version.
// Every entry point releases the GIL while the kernels run.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "../operator/linear_op.h"
#include "../operator/thread_pool.h"

namespace py = pybind11;
using namespace lowbit;

namespace {

template <class T>
T* ptr(uintptr_t p) { return reinterpret_cast<T*>(p); }

}  // namespace

PYBIND11_MODULE(_C_cpu, m) {
  m.doc() = "lowbit C++ CPU kernels (int8-activation x 1-8 bit weight linear, low-bit embedding)";

  py::enum_<DType>(m, "DType", py::module_local()).value("f32", DType::f32).value("bf16", DType::bf16).value("f16", DType::f16);
  py::enum_<ZeroKind>(m, "ZeroKind", py::module_local())
      .value("symmetric", ZeroKind::symmetric)
      .value("u8", ZeroKind::u8)
      .value("f32", ZeroKind::f32);

  m.def("available_isas", &available_isas, "ISAs built in and supported by this CPU, best first");
  m.def("parallel_pool", &parallel_pool_name,
        "the thread team parallel regions run on: 'openmp (<library>)' (torch's, already loaded) or 'lowbit'");
  m.def(
      "kernel_name",
      [](const std::string& isa, int64_t rows, bool float_act, DType x_dtype, int bits) {
        return kernel_name(*select_kernels(isa), rows, float_act, x_dtype, bits);
      },
      py::arg("isa"), py::arg("m"), py::arg("float_act") = false, py::arg("x_dtype") = DType::f32, py::arg("bits") = 4,
      "micro-kernel used for the first rows of an m-row call ('' = best ISA)");
  m.def("packed_size", &packed_size, py::arg("bits"), py::arg("group_size"), py::arg("n"), py::arg("k"),
        py::arg("scale_dtype"), py::arg("zero_kind"));
  m.def(
      "pack_weights",
      [](uintptr_t qdata, uintptr_t scales, uintptr_t zeros, DType zeros_dtype, int bits, int group_size, int64_t n,
         int64_t k, DType scale_dtype, ZeroKind zero_kind, uintptr_t dst, int64_t dst_bytes, int nthreads) {
        py::gil_scoped_release nogil;
        pack_weights(ptr<const uint8_t>(qdata), ptr<const void>(scales), ptr<const void>(zeros), zeros_dtype, bits,
                     group_size, n, k, scale_dtype, zero_kind, ptr<uint8_t>(dst), dst_bytes, nthreads);
      },
      py::arg("qdata"), py::arg("scales"), py::arg("zeros"), py::arg("zeros_dtype"), py::arg("bits"),
      py::arg("group_size"), py::arg("n"), py::arg("k"), py::arg("scale_dtype"), py::arg("zero_kind"), py::arg("dst"),
      py::arg("dst_bytes"), py::arg("nthreads"));
  m.def(
      "header",
      [](uintptr_t packed, int64_t nbytes) {
        const PackedHeader h = read_header(ptr<const uint8_t>(packed), nbytes);
        py::dict d;
        d["bits"] = h.bits;
        d["group_size"] = h.group_size;
        d["n"] = h.n;
        d["k"] = h.k;
        d["scale_dtype"] = DType(h.scale_dtype);
        d["zero_kind"] = ZeroKind(h.zero_kind);
        d["tile_bytes"] = h.tile_bytes;
        return d;
      },
      py::arg("packed"), py::arg("nbytes"));
  m.def(
      "linear",
      [](uintptr_t x, DType x_dtype, int64_t rows, int64_t k, int64_t ldx, uintptr_t packed, int64_t packed_bytes,
         uintptr_t bias, uintptr_t out, DType out_dtype, int64_t ldo, int nthreads, bool float_act,
         const std::string& isa) {
        const KernelSet* ks = select_kernels(isa);
        LinearArgs a{ptr<const void>(x), x_dtype, rows, k, ldx, ptr<const uint8_t>(packed), packed_bytes,
                     ptr<const float>(bias), ptr<void>(out), out_dtype, ldo, nthreads, float_act};
        py::gil_scoped_release nogil;
        linear(a, *ks);
      },
      py::arg("x"), py::arg("x_dtype"), py::arg("m"), py::arg("k"), py::arg("ldx"), py::arg("packed"),
      py::arg("packed_bytes"), py::arg("bias"), py::arg("out"), py::arg("out_dtype"), py::arg("ldo"),
      py::arg("nthreads"), py::arg("float_act"), py::arg("isa") = "");
  m.def(
      "embedding",
      [](uintptr_t idx, int64_t nidx, uintptr_t qdata, uintptr_t scales, DType scale_dtype, uintptr_t zeros,
         DType zeros_dtype, int bits, int group_size, int64_t n, int64_t k, uintptr_t out, DType out_dtype,
         int nthreads) {
        py::gil_scoped_release nogil;
        embedding(ptr<const int64_t>(idx), nidx, ptr<const uint8_t>(qdata), ptr<const void>(scales), scale_dtype,
                  ptr<const void>(zeros), zeros_dtype, bits, group_size, n, k, ptr<void>(out), out_dtype, nthreads);
      },
      py::arg("idx"), py::arg("nidx"), py::arg("qdata"), py::arg("scales"), py::arg("scale_dtype"), py::arg("zeros"),
      py::arg("zeros_dtype"), py::arg("bits"), py::arg("group_size"), py::arg("n"), py::arg("k"), py::arg("out"),
      py::arg("out_dtype"), py::arg("nthreads"));
}
