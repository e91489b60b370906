"""Small helpers shared by tests (importable as ``helpers``: pytest puts tests/ on sys.path)."""
import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (run on the device machine)")


def devices():
    """Devices every device-portable test runs on."""
    return ["cpu", "cuda"] if HAS_CUDA else ["cpu"]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative RMS error ||a - b|| / ||b||, failing on NaN."""
    a, b = a.detach().double(), b.detach().double()
    assert not torch.isnan(a).any(), "NaN in result"
    return float((a - b).norm() / b.norm().clamp_min(1e-30))
