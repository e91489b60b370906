"""Shared test setup. On a machine without a GPU, Triton kernels run in the interpreter:
TRITON_INTERPRET must be set before any kernel module is imported, so it is set here."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (run on the device machine)")


def devices():
    """Devices every device-portable test runs on."""
    return ["cpu", "cuda"] if HAS_CUDA else ["cpu"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
