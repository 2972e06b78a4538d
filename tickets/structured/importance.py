"""Gradient importance of attention heads and MLP blocks (Michel et al. 2019; Prasanna et al. 2020)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from ..errors import TicketsError
from .gates import Gates
from .structure import Structure


@dataclass
class Importance:
    """Scores of every head ([layers, heads]) and MLP block ([layers]): higher = kept longer."""

    heads: torch.Tensor
    mlps: torch.Tensor

    def to_json(self) -> dict:
        """JSON-ready lists."""
        return {"heads": self.heads.tolist(), "mlps": self.mlps.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> Importance:
        """Rebuild from `to_json` output."""
        return cls(torch.tensor(data["heads"], dtype=torch.float64), torch.tensor(data["mlps"], dtype=torch.float64))


def gate_gradients(model: nn.Module, batches: Iterable[dict], structure: Structure) -> Importance:
    """The sum over batches of |d loss / d gate| for every head and MLP gate, gates set to `structure` (eval mode)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    heads = mlps = None
    try:
        with Gates(model, structure, requires_grad=True) as gates:
            for batch in batches:
                loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
                head_grad, mlp_grad = torch.autograd.grad(loss, [gates.heads, gates.mlps])
                heads = head_grad.abs() if heads is None else heads + head_grad.abs()
                mlps = mlp_grad.abs() if mlps is None else mlps + mlp_grad.abs()
    finally:
        model.train(was_training)
    if heads is None:
        raise TicketsError("importance scoring got no examples (is the evaluation set empty?)")
    return Importance(heads.detach().double().cpu(), mlps.detach().double().cpu())


def normalise_heads(heads: torch.Tensor) -> torch.Tensor:
    """Head scores divided by the L2 norm of their layer's scores (a layer of zeros stays zero)."""
    norm = heads.norm(dim=1, keepdim=True)
    return torch.where(norm > 0, heads / norm.clamp_min(1e-30), heads)


def gradient_importance(model: nn.Module, batches: Iterable[dict], structure: Structure) -> Importance:
    """Michel et al.: summed |d loss / d gate|; pruned structures score 0, head scores normalised per layer (L2)."""
    raw = gate_gradients(model, batches, structure)
    heads = normalise_heads(raw.heads * structure.heads)
    return Importance(heads, raw.mlps * structure.mlps)
