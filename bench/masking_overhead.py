"""Time per training step: dense vs this project's masked training vs torch.nn.utils.prune re-parametrisation.

The three variants train identical copies of one model on one batch, interleaved round by round, so machine
noise hits them alike. Prints medians and the ratios masked/dense (target <= 1.03) and prune-reparam/dense, and, as
a low-noise check of the first, the masking work a masked step adds (zeroing pruned gradients) timed on its own,
relative to a dense step.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch.nn.utils import prune as torch_prune

from tickets.config import TrainConfig
from tickets.backends.torch_backend import TorchBackend
from tickets.models import base_model, prunable_parameters, prunable_patterns
from tickets.pruning import prune
from tickets.training import masked_pairs

from common import build_sized_model, machine, median, synthetic_batch


def make_variants(model, sparsity: float, cfg: TrainConfig) -> dict[str, TorchBackend]:
    """dense, masked (this project) and prune-reparam backends over copies of `model`."""
    params = prunable_parameters(model, prunable_patterns(model))
    keep = prune("magnitude", {n: p.detach() for n, p in params.items()}, sparsity)
    variants = {"dense": TorchBackend(copy.deepcopy(model), cfg, 10**6, [])}
    masked = copy.deepcopy(model)
    masked_params = prunable_parameters(masked, prunable_patterns(model))
    variants["masked"] = TorchBackend(masked, cfg, 10**6, masked_pairs(masked_params, keep))
    reparam = copy.deepcopy(model)
    encoder = base_model(reparam)
    for name in keep:
        module = encoder.get_submodule(name.rsplit(".", 1)[0])
        torch_prune.custom_from_mask(module, "weight", keep[name])
    variants["prune-reparam"] = TorchBackend(reparam, cfg, 10**6, [])
    return variants


def time_step(backend: TorchBackend, batch: dict) -> float:
    """Seconds for one forward, backward and optimizer step."""
    start = time.perf_counter()
    loss = backend.forward(batch)
    backend.backward(loss)
    backend.step()
    return time.perf_counter() - start


def masking_work(backend: TorchBackend, repeats: int = 10) -> float:
    """Median seconds of the masking a masked step adds (zeroing the pruned gradients), timed on its own."""
    grads = [torch.ones_like(param) for param, _ in backend.masked]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for grad, (_, keep) in zip(grads, backend.masked):
            grad.mul_(keep)
        times.append(time.perf_counter() - start)
    return median(times)


def run(size: str, batch_size: int, seq_len: int, rounds: int, steps: int, sparsity: float) -> dict[str, float]:
    """Median step time of each variant, and the masking work of a masked step timed on its own."""
    model = build_sized_model(size)
    variants = make_variants(model, sparsity, TrainConfig(learning_rate=1e-5))
    batch = synthetic_batch(batch_size, seq_len)
    for backend in variants.values():
        time_step(backend, batch)
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, backend in variants.items():
            times[name].extend(time_step(backend, batch) for _ in range(steps))
    return {**{name: median(values) for name, values in times.items()}, "masking": masking_work(variants["masked"])}


def main() -> None:
    """Print the table for each model size."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["minilm", "bert-base"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--sparsity", type=float, default=0.5)
    args = parser.parse_args()
    print(f"machine: {machine()}; batch {args.batch_size} x {args.seq_len}, sparsity {args.sparsity}, "
          f"{args.rounds} interleaved rounds x {args.steps} steps")
    print(f"{'model':<10} {'dense ms':>9} {'masked ms':>10} {'reparam ms':>11} {'masked/dense':>13} {'reparam/dense':>14}"
          f" {'masking ms':>11} {'(+masking)/dense':>17}")
    ratios = []
    for size in args.sizes:
        t = run(size, args.batch_size, args.seq_len, args.rounds, args.steps, args.sparsity)
        ratio = t["masked"] / t["dense"]
        ratios.append((size, ratio, t["prune-reparam"] / t["dense"]))
        print(f"{size:<10} {t['dense'] * 1e3:9.1f} {t['masked'] * 1e3:10.1f} {t['prune-reparam'] * 1e3:11.1f} "
              f"{ratio:13.3f} {t['prune-reparam'] / t['dense']:14.3f} {t['masking'] * 1e3:11.1f} "
              f"{1 + t['masking'] / t['dense']:17.3f}")
    print("headline: masked/dense " + ", ".join(f"{s} {r:.3f}" for s, r, _ in ratios)
          + " (target <= 1.03); prune-reparam/dense " + ", ".join(f"{s} {p:.3f}" for s, _, p in ratios))


if __name__ == "__main__":
    main()
