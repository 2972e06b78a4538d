"""Iterative structured pruning: remove the least important heads and MLP blocks until the dev metric drops."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn

from ..data import TaskData
from ..errors import TicketsError
from ..evaluation import evaluate
from ..pruning import check_fraction
from .gates import Gates
from .importance import Importance
from .structure import Layout, Structure


@dataclass
class SearchResult:
    """The good subnetwork, the full model's metric, the first (full-model) importance and every step's record."""

    structure: Structure
    full_metric: float
    importance: Importance
    history: list[dict] = field(default_factory=list)


def check_threshold(threshold: float) -> float:
    """Return `threshold` if it lies in (0, 1], else raise."""
    if not 0.0 < threshold <= 1.0:
        raise TicketsError(f"threshold must be in (0, 1] (a fraction of the full model's metric), got {threshold}")
    return threshold


def evaluate_structure(model: nn.Module, data: TaskData, structure: Structure, batch_size: int) -> dict[str, float]:
    """Every dev metric of `model` with the structures `structure` prunes gated to zero."""
    with Gates(model, structure):
        return evaluate(model, data, batch_size)


def prune_step(structure: Structure, importance: Importance, head_fraction: float) -> Structure:
    """Remove `head_fraction` of the remaining heads (at least one) and the one MLP block of lowest importance."""
    heads, mlps = structure.heads.clone(), structure.mlps.clone()
    remaining = int(heads.sum())
    if remaining:
        count = max(1, round(head_fraction * remaining))
        scores = importance.heads.double().masked_fill(~heads, float("inf")).flatten()
        order = torch.argsort(scores, stable=True)[:count]
        heads.view(-1)[order] = False
    if mlps.any():
        scores = importance.mlps.double().masked_fill(~mlps, float("inf"))
        mlps[int(torch.argsort(scores, stable=True)[0])] = False
    return Structure(heads, mlps)


def search(
    model: nn.Module,
    data: TaskData,
    batches: Iterable[dict],
    scorer: Callable[[nn.Module, Iterable[dict], Structure], Importance],
    main_metric: str,
    threshold: float = 0.9,
    head_fraction: float = 0.1,
    eval_batch_size: int = 64,
    on_step: Callable[[dict], None] | None = None,
) -> SearchResult:
    """Prune a fine-tuned model step by step, re-scoring after each step, while the dev `main_metric` stays at or above
    `threshold` x the full model's; return the last structure that did."""
    check_threshold(threshold)
    check_fraction(head_fraction, "head fraction")
    batches = list(batches)
    structure = Structure.full(Layout.of(model))
    full_metric = evaluate(model, data, eval_batch_size)[main_metric]
    bar = threshold * full_metric
    history = [{"step": 0, **structure.summary(), "metric": full_metric, "above_threshold": True}]
    if on_step is not None:
        on_step(history[-1])
    first = importance = scorer(model, batches, structure)
    while True:
        candidate = prune_step(structure, importance, head_fraction)
        if candidate.same_as(structure):
            break
        metric = evaluate_structure(model, data, candidate, eval_batch_size)[main_metric]
        above = metric >= bar
        history.append({"step": len(history), **candidate.summary(), "metric": metric, "above_threshold": above})
        if on_step is not None:
            on_step(history[-1])
        if not above:
            break
        structure = candidate
        importance = scorer(model, batches, structure)
    return SearchResult(structure, full_metric, first, history)
