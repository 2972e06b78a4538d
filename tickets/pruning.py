"""Pruning methods (a registry of records) and the sparsity schedules of an IMP trajectory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .errors import TicketsError

SCHEDULES = ("original", "remaining")
_SAMPLE = 65536  # scores sampled to bracket the pruning threshold of a large tensor set


def check_fraction(value: float, what: str) -> float:
    """Return `value` if it lies strictly inside (0, 1), else raise naming `what`."""
    if not 0.0 < value < 1.0:
        raise TicketsError(f"{what} must be strictly between 0 and 1, got {value}")
    return value


def target_sparsity(level: int, rate: float, schedule: str) -> float:
    """Sparsity of IMP level `level`: `original` prunes rate x the original count per level, `remaining` rate x what is left."""
    check_fraction(rate, "pruning rate")
    if schedule == "original":
        sparsity = round(rate * level, 10)
    elif schedule == "remaining":
        sparsity = 1.0 - (1.0 - rate) ** level
    else:
        raise TicketsError(f"unknown schedule '{schedule}'; choose one of {', '.join(SCHEDULES)}")
    if sparsity >= 1.0:
        raise TicketsError(f"schedule '{schedule}' with rate {rate} reaches 100% sparsity at level {level}")
    return sparsity


def levels_for_sparsity(final_sparsity: float, rate: float, schedule: str) -> int:
    """The number of IMP levels needed to reach at least `final_sparsity`."""
    check_fraction(final_sparsity, "target sparsity")
    level = 0
    while target_sparsity(level, rate, schedule) < final_sparsity - 1e-9:
        level += 1
    return level


Scorer = Callable[[dict[str, torch.Tensor], torch.Generator], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class PruningMethod:
    """A registered pruning method: its scorer (higher score = kept longer), whether it prunes each tensor to the
    sparsity on its own (layerwise) or ranks all prunable weights together (global), and a one-line help."""

    name: str
    scorer: Scorer
    layerwise: bool
    help: str


def _magnitude(weights, generator):
    return {n: w.detach().abs().float() for n, w in weights.items()}


def _random(weights, generator):
    return {n: torch.rand(w.shape, generator=generator) for n, w in weights.items()}


PRUNING_METHODS: dict[str, PruningMethod] = {
    method.name: method
    for method in (
        PruningMethod("magnitude", _magnitude, False, "the smallest |w| of all prunable weights together (global)"),
        PruningMethod("layerwise-magnitude", _magnitude, True,
                      "the smallest |w| of each tensor, every tensor pruned to the sparsity"),
        PruningMethod("random", _random, False, "uniformly random weights of all prunable weights together (global)"),
    )
}


def pruning_method_names() -> list[str]:
    """The registered pruning methods' names, sorted."""
    return sorted(PRUNING_METHODS)


def pruning_method_helps() -> dict[str, str]:
    """Every registered pruning method (sorted by name) with its one-line help."""
    return {name: PRUNING_METHODS[name].help for name in pruning_method_names()}


def get_pruning_method(name: str) -> PruningMethod:
    """The registered pruning method called `name`."""
    if not isinstance(name, str) or name not in PRUNING_METHODS:
        raise TicketsError(f"unknown pruning method {name!r}; choose one of {', '.join(pruning_method_names())}")
    return PRUNING_METHODS[name]


def prune(
    method: str,
    weights: dict[str, torch.Tensor],
    sparsity: float,
    current: dict[str, torch.Tensor] | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Keep-masks with exactly round(sparsity x total) weights pruned, never reviving a weight `current` pruned.

    Global methods rank all prunable weights together; layerwise methods prune each tensor to `sparsity`.
    """
    if not 0.0 <= sparsity < 1.0:
        raise TicketsError(f"sparsity must be in [0, 1), got {sparsity}")
    registered = get_pruning_method(method)
    generator = torch.Generator().manual_seed(seed)
    scores = registered.scorer(weights, generator)
    if current is not None:
        scores = {n: torch.where(current[n], s, torch.full_like(s, -1.0)) for n, s in scores.items()}
    if registered.layerwise:
        return {n: _keep_top(s.ravel(), sparsity).view(s.shape) for n, s in scores.items()}
    names = list(scores)
    flat = torch.cat([scores[n].ravel() for n in names])
    keep = _keep_top(flat, sparsity)
    sizes = [scores[n].numel() for n in names]
    return {n: k.view(scores[n].shape) for n, k in zip(names, keep.split(sizes))}


def _keep_top(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep all but the round(sparsity x n) lowest scores, equal scores pruned in index order (the order a stable sort
    gives), on the scores' device. Selection, not sorting: a check during training (tickets.early) draws masks often."""
    n_prune = int(round(sparsity * scores.numel()))
    if not n_prune:
        return torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    cut = _kth_smallest(scores, n_prune)
    keep = ~(scores <= cut)  # NaN scores are kept, as a sort puts them last
    ties = scores == cut
    tied = int(torch.count_nonzero(ties))
    below = scores.numel() - int(torch.count_nonzero(keep)) - tied
    if below + tied > n_prune:
        keep[torch.nonzero(ties).flatten()[n_prune - below:]] = True
    return keep


def _kth_smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th smallest score (1-based): the (k - m)-th of the few scores inside a band around a fixed sample's
    estimate of it, m being the count below the band (torch.kthvalue over all scores where the band misses it)."""
    total = scores.numel()
    if total > 8 * _SAMPLE:
        generator = torch.Generator(device=scores.device).manual_seed(0)
        picks = torch.randint(total, (_SAMPLE,), generator=generator, device=scores.device)
        sample = scores[picks].sort().values
        q = k / total
        margin = 4 * (q * (1 - q) / _SAMPLE) ** 0.5 + 2 / _SAMPLE
        low = sample[max(0, int((q - margin) * _SAMPLE))]
        high = sample[min(_SAMPLE - 1, int((q + margin) * _SAMPLE) + 1)]
        under = int(torch.count_nonzero(scores < low))
        if under < k:
            band = scores[(scores >= low) & (scores <= high)]
            if under + band.numel() >= k:
                return band.sort().values[k - under - 1]
    return torch.kthvalue(scores, k).values
