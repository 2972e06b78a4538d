"""Structured tickets (Prasanna et al. 2020): attention heads and whole MLP blocks scored, pruned, retrained, compacted.

Extension is by registry: a structured strategy maps (fine-tuned model, batches, current structure) to an
`Importance` (higher = kept longer); a new one is one file plus one line below.
"""

from typing import Callable, Iterable

from torch import nn

from .importance import Importance, gradient_importance
from .structure import Structure

StructuredScorer = Callable[[nn.Module, Iterable[dict], Structure], Importance]

STRUCTURED_STRATEGIES: dict[str, StructuredScorer] = {
    "gradient-importance": gradient_importance,
}
