"""Bytes on disk of a bit-packed mask file vs a float32 mask (what the reference BERT-Tickets code stored)."""

from __future__ import annotations

import argparse
import os
import tempfile

import torch

from tickets.masks import Mask
from tickets.models import prunable_parameters, prunable_patterns
from tickets.pruning import prune

from common import build_sized_model, machine


def sizes(size: str, sparsity: float, include_pooler: bool) -> tuple[int, int, int]:
    """(prunable weights, bytes of our mask file, bytes of a float32 mask) for one model at one sparsity."""
    model = build_sized_model(size)
    params = prunable_parameters(model, prunable_patterns(model, include_pooler))
    keep = prune("magnitude", {n: p.detach() for n, p in params.items()}, sparsity)
    mask = Mask(keep, {"model_id": size, "level": "0"})
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mask.safetensors")
        mask.save(path)
        ours = os.path.getsize(path)
        float_path = os.path.join(tmp, "float_mask.safetensors")
        from safetensors.torch import save_file

        save_file({n: k.float() for n, k in keep.items()}, float_path)
        reference = os.path.getsize(float_path)
    return mask.total, ours, reference


def main() -> None:
    """Print mask sizes for the embedded MiniLM and a BERT-base-size model at each sparsity."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.5, 0.9])
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"{'model':<10} {'sparsity':>8} {'weights':>12} {'ours MB':>9} {'float32 MB':>11} {'ours/float32':>13}")
    worst = 0.0
    for size, pooler in (("minilm", False), ("bert-base", True)):
        for sparsity in args.sparsities:
            total, ours, reference = sizes(size, sparsity, pooler)
            worst = max(worst, ours / reference)
            print(f"{size:<10} {sparsity:8.2f} {total:12,} {ours / 1e6:9.2f} {reference / 1e6:11.2f} {ours / reference:13.4f}")
    print(f"headline: worst ours/float32 = {worst:.4f} = 1/{1 / worst:.1f} (target <= 1/32 = 0.0312)")


if __name__ == "__main__":
    main()
