"""Shared test setup. On a machine without a GPU, Triton kernels run in the interpreter:
TRITON_INTERPRET must be set before any kernel module is imported, so it is set here."""
import os

import pytest
import torch

from helpers import HAS_CUDA, devices, requires_cuda  # noqa: F401  (re-exported for tests)

if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
