"""lowbit: low-bit (1-8 bit) weight quantization kernels and tensor subclasses for PyTorch.

    import lowbit
    report = lowbit.quantize_(model, lowbit.WeightOnlyConfig(bits=4, group_size=128))

Importing is cheap: no GPU queries, no compilation, no file I/O. Kernels load on first use.
"""
from __future__ import annotations

from .api import LayerResult, QuantizeReport, is_embedding, is_linear, quantize_
from .backends import Backend, register_backend, registered_backends, use_backend
from .configs import EmbeddingConfig, Int8DynamicActivationConfig, WeightOnlyConfig
from .meta import QuantMeta, QWeight
from .packing import pack, packed_size, unpack
from .quant import dequantize, quantize_per_token_int8, quantize_weight
from .serialization import load_file, save_file
from .tensor import LowBitTensor
from .unwrap import is_unwrapped, rewrap, unwrap_for_compile

__version__ = "0.1.0"

__all__ = [
    "quantize_", "is_linear", "is_embedding", "QuantizeReport", "LayerResult",
    "WeightOnlyConfig", "Int8DynamicActivationConfig", "EmbeddingConfig",
    "LowBitTensor", "QuantMeta", "QWeight",
    "pack", "unpack", "packed_size",
    "quantize_weight", "dequantize", "quantize_per_token_int8",
    "save_file", "load_file",
    "unwrap_for_compile", "rewrap", "is_unwrapped",
    "Backend", "register_backend", "registered_backends", "use_backend",
]
