"""The canonical packed format: round trips, byte-exact slicing, the spec's own example."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.packing import pack, packed_size, plane_widths, unpack

from helpers import devices

BITS = list(range(1, 9))


@settings(max_examples=60, deadline=None)
@given(
    bits=st.integers(1, 8),
    lead=st.lists(st.integers(0, 5), min_size=0, max_size=2),
    chunks=st.integers(0, 12),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip_random_shapes(bits, lead, chunks, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 1 << bits, (*lead, chunks * 8), generator=g)
    p = pack(codes, bits)
    assert p.dtype == torch.uint8 and p.shape == (*lead, chunks * bits)
    assert torch.equal(unpack(p, bits, chunks * 8), codes.to(torch.uint8))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("bits", BITS)
def test_round_trip_on_device(device, bits):
    codes = torch.randint(0, 1 << bits, (37, 264), device=device)
    p = pack(codes, bits)
    assert p.device.type == device
    assert torch.equal(unpack(p, bits), codes.to(torch.uint8))
    assert torch.equal(p.cpu(), pack(codes.cpu(), bits))  # one format on every device


@settings(max_examples=80, deadline=None)
@given(bits=st.integers(1, 8), n=st.integers(1, 20), k8=st.integers(1, 16), data=st.data())
def test_slicing_commutes_with_packing(bits, n, k8, data):
    codes = torch.randint(0, 1 << bits, (n, k8 * 8))
    p = pack(codes, bits)
    # rows: anywhere
    r0 = data.draw(st.integers(0, n))
    r1 = data.draw(st.integers(r0, n))
    assert torch.equal(p[r0:r1], pack(codes[r0:r1], bits))
    # columns: at any chunk (hence any group) boundary
    c0 = data.draw(st.integers(0, k8))
    c1 = data.draw(st.integers(c0, k8))
    assert torch.equal(p[:, c0 * bits : c1 * bits], pack(codes[:, c0 * 8 : c1 * 8], bits))


@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("bits", BITS)
def test_group_slices_are_byte_exact(bits, group_size):
    codes = torch.randint(0, 1 << bits, (9, 4 * group_size))
    p = pack(codes, bits)
    per = group_size * bits // 8
    for g in range(4):
        assert torch.equal(p[:, g * per : (g + 1) * per], pack(codes[:, g * group_size : (g + 1) * group_size], bits))


def test_spec_example_3bit():
    # docs/format.md works this example by hand: codes 0..7, 3 bits = planes (2, 1)
    codes = torch.arange(8).reshape(1, 8)
    assert pack(codes, 3).tolist() == [[0b11100100, 0b11100100, 0b11110000]]
    assert plane_widths(3) == (2, 1) and plane_widths(7) == (4, 2, 1) and plane_widths(8) == (8,)


def test_spec_example_4bit_and_1bit():
    codes = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 15]])
    assert pack(codes, 4).tolist() == [[0x21, 0x43, 0x65, 0xF7]]
    assert pack(torch.tensor([[1, 0, 1, 1, 0, 0, 0, 1]]), 1).tolist() == [[0b10001101]]


@pytest.mark.parametrize("bits", [0, 9, -1])
def test_bits_out_of_range(bits):
    with pytest.raises(ValueError, match="bits must be in 1..8"):
        pack(torch.zeros(1, 8, dtype=torch.uint8), bits)


def test_bad_inputs():
    with pytest.raises(ValueError, match="multiple of 8"):
        pack(torch.zeros(2, 12, dtype=torch.uint8), 4)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        pack(torch.full((1, 8), 16), 4)
    with pytest.raises(TypeError, match="integer codes"):
        pack(torch.zeros(1, 8), 4)
    with pytest.raises(TypeError, match="uint8"):
        unpack(torch.zeros(1, 4, dtype=torch.int32), 4)
    with pytest.raises(ValueError, match="k=16"):
        unpack(torch.zeros(1, 4, dtype=torch.uint8), 4, k=16)
    with pytest.raises(TypeError):
        pack(torch.zeros(1, 8, dtype=torch.uint8), 4.0)
    assert packed_size(64, 3) == 24
