"""Inference latency and throughput: the dense model vs its compacted structured ticket (and 2:4 sparsity on a GPU).

Every setting (batch size x sequence length) times the variants round by round, alternating their order, so machine
noise hits them alike. Latency is the best of the rounds: on a shared machine other work only ever adds time, so the
fastest round is the least disturbed estimate (medians swing by 2x and more here when other jobs run). The ratio is
dense/variant latency: > 1 faster than dense, < 1 slower, printed as such.
On a CUDA GPU the models run in float16 and a third variant is added: an unstructured ticket forced to the 2:4
pattern and stored with torch.sparse.to_sparse_semi_structured. The last line is the headline ratio.

    python bench/structured_speedup.py [--mask SEARCH/good.safetensors] [--unstructured-mask LEVEL/mask.safetensors]
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch
from torch import nn

from tickets.masks import Mask
from tickets.models import base_model, build_model, prunable_parameters, prunable_patterns
from tickets.structured.compact import compact
from tickets.structured.gates import Gates
from tickets.structured.structure import Layout, Structure

from common import machine, synthetic_batch


def default_structure(layout: Layout, heads: float, mlps: float, seed: int) -> Structure:
    """Random heads (the same fraction in every layer) and random MLP blocks: speed depends only on the sizes."""
    generator = torch.Generator().manual_seed(seed)
    keep_heads = torch.zeros(layout.num_layers, layout.num_heads, dtype=torch.bool)
    per_layer = round(heads * layout.num_heads)
    for layer in range(layout.num_layers):
        keep_heads[layer, torch.randperm(layout.num_heads, generator=generator)[:per_layer]] = True
    keep_mlps = torch.zeros(layout.num_layers, dtype=torch.bool)
    keep_mlps[torch.randperm(layout.num_layers, generator=generator)[: round(mlps * layout.num_layers)]] = True
    return Structure(keep_heads, keep_mlps)


def two_four(weight: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """`weight` under `keep`, then in every group of 4 inputs only the 2 largest survivors kept (the 2:4 pattern)."""
    masked = (weight * keep).reshape(-1, 4)
    top = masked.abs().topk(2, dim=1).indices
    pattern = torch.zeros_like(masked, dtype=torch.bool).scatter_(1, top, True)
    return (masked * pattern).reshape(weight.shape)


def semi_structured(model: nn.Module, mask_path: str | None, sparsity: float) -> nn.Module:
    """A copy of a CUDA float16 model whose prunable weights are 2:4 sparse tensors (from a ticket or magnitude)."""
    from tickets.pruning import prune
    from torch.sparse import to_sparse_semi_structured

    sparse = copy.deepcopy(model)
    params = prunable_parameters(sparse, prunable_patterns(sparse))
    if mask_path:
        keep = Mask.load(mask_path).tensors
    else:
        keep = prune("magnitude", {n: p.detach().float().cpu() for n, p in params.items()}, sparsity)
    encoder = base_model(sparse)
    for name, param in params.items():
        module = encoder.get_submodule(name.rsplit(".", 1)[0])
        dense = two_four(param.detach(), keep[name].to(param.device))
        module.weight = nn.Parameter(to_sparse_semi_structured(dense), requires_grad=False)
    return sparse


def timed(model: nn.Module, batch: dict, device: torch.device) -> float:
    """Seconds for one forward pass."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        model(**batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(variants: dict[str, nn.Module], batch: dict, rounds: int, device: torch.device) -> dict[str, float]:
    """Best forward seconds of each variant, timed round by round in alternating order after one warm-up each."""
    names = list(variants)
    for name in names:
        timed(variants[name], batch, device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            times[name].append(timed(variants[name], batch, device))
    return {name: min(values) for name, values in times.items()}


def verdict(ratio: float) -> str:
    """A ratio dense/variant in words."""
    if ratio >= 1:
        return f"{ratio:.2f}x faster"
    return f"{ratio:.2f}x = {1 / ratio:.2f}x SLOWER"


def main() -> None:
    """Print the latency/throughput table for each setting and the headline ratio."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model name or folder (default: the embedded all-MiniLM-L6-v2)")
    parser.add_argument("--mask", help="structured mask (default: random heads and MLPs at --heads/--mlps)")
    parser.add_argument("--heads", type=float, default=0.5, help="fraction of heads kept without --mask")
    parser.add_argument("--mlps", type=float, default=0.5, help="fraction of MLP blocks kept without --mask")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--seq-lens", nargs="+", type=int, default=[32, 128])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's; 1 is steadier on a shared machine)")
    parser.add_argument("--unstructured-mask", help="GPU only: unstructured ticket for 2:4 (default: magnitude 50%%)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = build_model(args.model, "classification", 2, args.seed).eval()
    layout = Layout.of(model)
    if args.mask:
        structure = Structure.from_mask(Mask.load(args.mask), layout, "the benchmark model")
    else:
        structure = default_structure(layout, args.heads, args.mlps, args.seed)
    smaller = compact(model, structure).eval()
    probe = synthetic_batch(2, 16)
    probe.pop("labels")
    with torch.inference_mode(), Gates(model, structure):
        difference = float((model(**probe).logits - smaller(**probe).logits).abs().max())
    variants = {"dense": model.to(device, dtype), "compact": smaller.to(device, dtype)}
    if device.type == "cuda":
        try:
            variants["2:4"] = semi_structured(model, args.unstructured_mask, 0.5)
        except (RuntimeError, ValueError, NotImplementedError, ImportError) as exc:
            print(f"2:4 semi-structured sparsity unavailable on this GPU: {exc}")

    dense_params = sum(p.numel() for p in model.parameters())
    compact_params = sum(p.numel() for p in smaller.parameters())
    print(f"machine: {machine()}; threads {torch.get_num_threads()}; {dtype}")
    print(f"ticket: heads {structure.heads_kept}/{structure.heads.numel()} {structure.heads.sum(dim=1).tolist()}, "
          f"MLPs {structure.mlps_kept}/{structure.mlps.numel()}; parameters {dense_params:,} -> {compact_params:,}; "
          f"max |logit diff| vs masked {difference:.1e}")
    others = [name for name in variants if name != "dense"]
    header = f"{'batch':>5} {'seq':>4} {'dense ms':>9} {'dense seq/s':>11}"
    for name in others:
        header += f" {name + ' ms':>11} {name + ' seq/s':>13} {'ratio':>24}"
    print(header)
    ratios: dict[str, list[float]] = {name: [] for name in others}
    for seq_len in args.seq_lens:
        for batch_size in args.batch_sizes:
            batch = synthetic_batch(batch_size, seq_len, seed=args.seed)
            batch.pop("labels")
            batch = {k: v.to(device) for k, v in batch.items()}
            seconds = measure(variants, batch, args.rounds, device)
            row = f"{batch_size:>5} {seq_len:>4} {seconds['dense'] * 1e3:9.1f} {batch_size / seconds['dense']:11.1f}"
            for name in others:
                ratio = seconds["dense"] / seconds[name]
                ratios[name].append(ratio)
                row += f" {seconds[name] * 1e3:11.1f} {batch_size / seconds[name]:13.1f} {verdict(ratio):>24}"
            print(row, flush=True)
    for name in reversed(others):  # the compacted ticket's headline comes last
        values = ratios[name]
        geomean = math.exp(sum(math.log(v) for v in values) / len(values))
        print(f"headline {name} vs dense: {verdict(geomean)} (geometric mean of dense/{name} latency over "
              f"{len(values)} settings; range {min(values):.2f}x-{max(values):.2f}x)")


if __name__ == "__main__":
    main()
