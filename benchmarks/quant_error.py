"""Reconstruction error of the quantizers (min-max sym/asym vs HQQ), for docs/quantization.md.

    python benchmarks/quant_error.py [--n 1024 --k 4096]
"""
import argparse

import torch

from lowbit.quant import dequantize, quantize_weight, reconstruction_error


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--k", type=int, default=4096)
    a = p.parse_args()
    torch.manual_seed(0)
    dists = {
        "gaussian": torch.randn(a.n, a.k),
        "student-t(3)": torch.distributions.StudentT(3.0).sample((a.n, a.k)),
    }
    print(f"relative Frobenius error ||W - W_hat|| / ||W||, W: {a.n}x{a.k} fp32")
    print("| weights | bits | group | min-max sym | min-max asym | HQQ | HQQ gain vs asym |")
    print("|---|---|---|---|---|---|---|")
    for dname, w in dists.items():
        for bits in (2, 3, 4, 8):
            for gs in (32, 128, None):
                e = {}
                for key, sym, meth in (("sym", True, "minmax"), ("asym", False, "minmax"), ("hqq", False, "hqq")):
                    c, s, z = quantize_weight(w, bits, gs, sym, meth)
                    e[key] = reconstruction_error(w, dequantize(c, s, z, bits))
                gain = 1 - e["hqq"] / e["asym"]
                print(f"| {dname} | {bits} | {gs or 'per-channel'} | {e['sym']:.4f} | {e['asym']:.4f} | {e['hqq']:.4f} | {gain:.1%} |")


if __name__ == "__main__":
    main()
