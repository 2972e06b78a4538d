"""Good, random and bad subnetworks of exactly the same size (Prasanna et al. 2020)."""

from __future__ import annotations

import torch

from ..errors import TicketsError
from .importance import Importance
from .structure import Structure

SUBNETWORKS = ("good", "random", "bad")
RANDOM_SEED_OFFSET = 15485863  # keeps the subnetwork draws apart from the training seed's other streams


def _random_keep(count: int, candidates: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A flat bool mask keeping `count` positions drawn uniformly from the True positions of `candidates`."""
    positions = candidates.flatten().nonzero().flatten()
    chosen = positions[torch.randperm(len(positions), generator=generator)[:count]]
    keep = torch.zeros(candidates.numel(), dtype=torch.bool)
    keep[chosen] = True
    return keep.view(candidates.shape)


def _bad_keep(good: torch.Tensor, scores: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Keep as many structures as `good` does: the lowest-scoring ones it pruned, topped up with random kept ones."""
    count = int(good.sum())
    pruned = (~good).flatten().nonzero().flatten()
    lowest = pruned[torch.argsort(scores.flatten()[pruned].double(), stable=True)][:count]
    keep = torch.zeros(good.numel(), dtype=torch.bool)
    keep[lowest] = True
    missing = count - len(lowest)
    if missing:
        keep |= _random_keep(missing, good, generator).flatten()
    return keep.view(good.shape)


def subnetwork(kind: str, good: Structure, importance: Importance, seed: int) -> Structure:
    """The `kind` subnetwork (good, random or bad) with as many heads and MLP blocks as `good`.

    random: heads and MLP blocks drawn uniformly; bad: the lowest-importance structures the good subnetwork pruned
    (importance of the full fine-tuned model), topped up with random structures of the good one when it pruned fewer
    than it kept. Draws depend only on `seed`.
    """
    if kind not in SUBNETWORKS:
        raise TicketsError(f"unknown subnetwork '{kind}'; choose one of {', '.join(SUBNETWORKS)}")
    if kind == "good":
        return Structure(good.heads.clone(), good.mlps.clone())
    generator = torch.Generator().manual_seed(seed + RANDOM_SEED_OFFSET)
    if kind == "random":
        heads = _random_keep(good.heads_kept, torch.ones_like(good.heads), generator)
        return Structure(heads, _random_keep(good.mlps_kept, torch.ones_like(good.mlps), generator))
    return Structure(_bad_keep(good.heads, importance.heads, generator), _bad_keep(good.mlps, importance.mlps, generator))
