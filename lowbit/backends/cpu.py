"""The C++ CPU backend: int8 dynamic activation x 1-8 bit weight kernels (csrc/).

Linear runs on micro-kernels picked at run time from the CPU's ISA (AVX-512 VNNI, AVX2,
NEON dot-product, scalar); the weight is repacked once into the kernels' tile layout
(``prepare``) and cached on the LowBitTensor. Embedding reads the canonical rows directly.

Two kernel families share the layout and the unpack routines:

* ``act="int8"``: int8 dot products, bit-exact with :func:`lowbit.quant.int8_linear_reference`;
* ``act="none"`` (WeightOnlyConfig): float activations, never rounded further. bf16
  activations on a CPU with AVX-512 BF16 run ``linear_bf16act_*``: codes looked up as bf16
  and 2-way ``vdpbf16ps`` dots, fp32 sums, 1.2-2.8x the fp32 kernels. Everything
  else runs ``linear_fp32act_*``: fp32 activations, codes widened to fp32 in registers and
  ``fma``-accumulated per group. Quantizing the activations to int8 would be faster but
  adds ~1% relative error, which breaks the weight-only contract (the model with
  dequantized weights, to fp32 rounding); docs/cpu_kernels.md has numbers. HQQ float zero
  points are kept as fp32 (``ZeroKind.f32``).

The extension is imported on first use, never at ``import lowbit``; without it this
backend reports itself unavailable and the reference backend serves the CPU. This module
knows nothing about modules or configs.
"""
from __future__ import annotations

import os

import importlib
import mmap
from typing import Optional

import torch

from ..meta import QWeight
from . import Backend, register_backend

# block of K the micro-kernels consume, and the group-size granularity they need
_BLOCK_K = 32
_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_HUGE_PAGE = 2 << 20  # x86-64 / aarch64 (4K granule) transparent huge page


def _layout_buffer(nbytes: int) -> torch.Tensor:
    """uint8 [nbytes] for a packed weight, on transparent huge pages where the OS grants them.

    The kernels stream the layout once per call; with 4 KiB pages one core reads ~30% less
    from DRAM than with 2 MiB pages (TLB misses, and the prefetchers stop at page ends), so
    large layouts get a private anonymous mapping, 2 MiB-aligned and madvise(MADV_HUGEPAGE)'d
    before first touch (THP mode 'madvise' is the common default). Small layouts, or systems
    without madvise, get a plain torch allocation. The tensor keeps the mapping alive.
    """
    if nbytes < 2 * _HUGE_PAGE or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty(nbytes, dtype=torch.uint8)
    mm = mmap.mmap(-1, nbytes + _HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    whole = torch.frombuffer(mm, dtype=torch.uint8)
    start = -whole.data_ptr() % _HUGE_PAGE
    try:
        mm.madvise(mmap.MADV_HUGEPAGE, start, nbytes)
    except OSError:
        pass  # THP disabled: 4 KiB pages, still correct
    return whole[start:start + nbytes]


# M x N x K at or below which a linear runs single-threaded (measured on a 2-core Zen4: see _threads)
SMALL_PROBLEM = int(os.environ.get("LOWBIT_CPU_SMALL_PROBLEM", str(1 << 22)))

class CpuBackend(Backend):
    name = "cpu"
    priority = 10  # above the reference (-100): the default CPU backend when built
    device_types = ("cpu",)

    def __init__(self) -> None:
        self._ext = None
        self._error: Optional[str] = None
        self.isa = ""  # "" = best available; tests and benchmarks may force one

    # ---- loading ------------------------------------------------------------------------
    def _load(self):
        if self._ext is None and self._error is None:
            try:
                self._ext = importlib.import_module("lowbit._C_cpu")
            except ImportError as e:
                self._error = (
                    f"C++ extension lowbit._C_cpu is not built ({e}); "
                    "rebuild with `pip install --no-build-isolation -e .`"
                )
        return self._ext

    @property
    def ext(self):
        ext = self._load()
        if ext is None:
            raise RuntimeError(self._error)
        return ext

    def available(self) -> bool:
        return self._load() is not None

    def unavailable_reason(self) -> str:
        self._load()
        return self._error or ""

    def describe(self) -> list[str]:
        if not self.available():
            return []
        isas = self.ext.available_isas()
        return [
            f"ISAs here: {', '.join(isas)} (selected: {self.isa or isas[0]})",
            f"int8-act linear M=1: {self.kernel_name(1, False, torch.float32)}, M>=8: "
            f"{self.kernel_name(8, False, torch.float32)}",
            f"weight-only linear (fp32/fp16 activations) M=1: {self.kernel_name(1, True, torch.float32)}, M>=4: "
            f"{self.kernel_name(4, True, torch.float32)} (all templated on bits 1-8)",
            f"weight-only, bf16 activations, W4 M=1: {self.kernel_name(1, True, torch.bfloat16)}, M>=8: "
            f"{self.kernel_name(8, True, torch.bfloat16)}",
            "embedding: canonical rows, scalar decode",
            f"threads: {self.ext.parallel_pool()}, torch.get_num_threads() = {torch.get_num_threads()}",
        ]

    def kernel_name(self, m: int, weight_only: bool, x_dtype: torch.dtype, bits: int = 4) -> str:
        """The micro-kernel an M-row call runs first (weight_only: act='none')."""
        return self.ext.kernel_name(self.isa, m, weight_only, self._dtype(x_dtype), bits)

    # ---- typed conversions ----------------------------------------------------------------
    def _dtype(self, dtype: torch.dtype):
        D = self.ext.DType
        return {torch.float32: D.f32, torch.bfloat16: D.bf16, torch.float16: D.f16}[dtype]

    # ---- the backend contract -----------------------------------------------------------------
    def supports(self, op: str, w: QWeight, x_dtype: Optional[torch.dtype]) -> bool:
        if w.meta.transposed or w.qdata.device.type != "cpu" or w.scales.dtype not in _FLOAT_DTYPES:
            return False
        if w.zeros is not None and w.zeros.dtype not in _FLOAT_DTYPES:
            return False
        if x_dtype is not None and x_dtype not in _FLOAT_DTYPES:
            return False
        if op == "embedding":
            return True
        if op != "linear":
            return False
        gs = w.group_size
        return w.k % _BLOCK_K == 0 and gs % _BLOCK_K == 0 and w.k * 127 * 255 < 2**31

    def _zero_kind(self, w: QWeight):
        Z = self.ext.ZeroKind
        if w.zeros is None:
            return Z.symmetric
        z = w.zeros.float()
        integral = bool(torch.equal(z, z.round())) and float(z.min()) >= 0 and float(z.max()) <= 255
        if integral:
            return Z.u8
        if w.meta.act == "int8":
            raise ValueError(
                "act='int8' needs integer zero points in 0..255 (Int8DynamicActivationConfig uses min-max); "
                "got non-integer zeros"
            )
        return Z.f32

    def prepare(self, w: QWeight) -> Optional[torch.Tensor]:
        """Repack the canonical weight into the tile layout. Returns a 1-D uint8 tensor:
        a 64-byte header, then per 16 output rows the unpack-ready code blocks, the group
        scales [G][16] (model dtype) and the zeros [G][16] (u8 or f32; none if symmetric)."""
        ext = self.ext
        qdata, scales = w.qdata.contiguous(), w.scales.contiguous()
        zeros = None if w.zeros is None else w.zeros.contiguous()
        zk = self._zero_kind(w)
        sdt = self._dtype(scales.dtype)
        size = ext.packed_size(w.meta.bits, w.group_size, w.n, w.k, sdt, zk)
        out = _layout_buffer(size)
        ext.pack_weights(
            qdata.data_ptr(), scales.data_ptr(), 0 if zeros is None else zeros.data_ptr(),
            self._dtype(zeros.dtype) if zeros is not None else ext.DType.f32,
            w.meta.bits, w.group_size, w.n, w.k, sdt, zk, out.data_ptr(), size, torch.get_num_threads(),
        )
        return out

    def _layout(self, w: QWeight) -> torch.Tensor:
        if w.layout is not None and w.layout_name == self.name:
            return w.layout
        # no cached layout (e.g. a bare op call): derive it for this call only
        return self.prepare(w)

    @staticmethod
    def _threads(m: int, w: QWeight) -> int:
        """torch's thread count, except for small problems, which run on the calling thread:
        with a pool of our own, waking a worker next to torch's spinning OpenMP threads cost
        tens of µs, more than a second core saves on ~1 MiB of weights. On torch's own team
        (now the default) threading them too was no faster end to end (docs/cpu_kernels.md)."""
        return 1 if m * w.n * w.k <= SMALL_PROBLEM else torch.get_num_threads()

    def linear(self, x: torch.Tensor, w: QWeight, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """x: [M, K] fp32/bf16/fp16 -> [M, N] x.dtype (int8 kernels for act='int8', fp32 otherwise)."""
        ext = self.ext
        if x.dim() != 2 or x.shape[1] != w.k:
            raise ValueError(f"cpu backend: x must be [M, {w.k}], got {tuple(x.shape)}")
        x = x.contiguous()
        layout = self._layout(w)
        m = x.shape[0]
        out = torch.empty(m, w.n, dtype=x.dtype)
        b = None
        if bias is not None:
            if bias.shape != (w.n,):
                raise ValueError(f"cpu backend: bias must be [{w.n}], got {tuple(bias.shape)}")
            b = bias.float().contiguous()
        dt = self._dtype(x.dtype)
        ext.linear(
            x.data_ptr(), dt, m, w.k, w.k, layout.data_ptr(), layout.numel(),
            0 if b is None else b.data_ptr(), out.data_ptr(), dt, w.n, self._threads(m, w),
            w.meta.act != "int8", self.isa,
        )
        return out

    def embedding(self, indices: torch.Tensor, w: QWeight, dtype: torch.dtype) -> torch.Tensor:
        """indices: any integer shape -> [*indices.shape, K] ``dtype`` (canonical rows)."""
        ext = self.ext
        if indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise TypeError(f"embedding indices must be integers, got {indices.dtype}")
        idx = indices.reshape(-1).to(torch.int64).contiguous()
        qdata, scales = w.qdata.contiguous(), w.scales.contiguous()
        zeros = None if w.zeros is None else w.zeros.contiguous()
        out = torch.empty(idx.numel(), w.k, dtype=dtype)
        ext.embedding(
            idx.data_ptr(), idx.numel(), qdata.data_ptr(), scales.data_ptr(), self._dtype(scales.dtype),
            0 if zeros is None else zeros.data_ptr(), self._dtype(zeros.dtype) if zeros is not None else ext.DType.f32,
            w.meta.bits, w.group_size, w.n, w.k, out.data_ptr(), self._dtype(dtype), torch.get_num_threads(),
        )
        return out.reshape(*indices.shape, w.k)


register_backend(CpuBackend())
