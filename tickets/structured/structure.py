"""Structured keep-patterns: which attention heads and which whole MLP blocks of a BERT encoder survive.

Stored in the ordinary mask file format (`tickets.masks.Mask`) with one tensor per layer and kind of structure:
`encoder.layer.{i}.attention.heads` (bool, one entry per head) and `encoder.layer.{i}.mlp` (bool, one entry),
metadata `kind=structured`. `weight_keep` expands it to per-weight masks so the ordinary masked training loop
keeps pruned structures at exactly zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import TicketsError
from ..masks import Mask

KIND = "structured"
HEADS = "encoder.layer.{}.attention.heads"
MLP = "encoder.layer.{}.mlp"
ATTENTION_ROWS = ("query", "key", "value")


@dataclass(frozen=True)
class Layout:
    """The structure sizes of a BERT encoder: layers, heads per layer, head width, hidden and MLP widths."""

    num_layers: int
    num_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int

    @classmethod
    def of(cls, model: nn.Module) -> Layout:
        """The layout of a model, read from its config."""
        config = model.config
        return cls(
            config.num_hidden_layers,
            config.num_attention_heads,
            config.hidden_size // config.num_attention_heads,
            config.hidden_size,
            config.intermediate_size,
        )

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The tensor names and shapes a structured mask of this layout has."""
        shapes: dict[str, tuple[int, ...]] = {}
        for i in range(self.num_layers):
            shapes[HEADS.format(i)] = (self.num_heads,)
            shapes[MLP.format(i)] = (1,)
        return shapes

    def describe(self) -> str:
        """A short description for error messages."""
        return f"{self.num_layers} layers x {self.num_heads} heads"


@dataclass
class Structure:
    """Kept attention heads (bool [layers, heads]) and kept MLP blocks (bool [layers])."""

    heads: torch.Tensor
    mlps: torch.Tensor

    @classmethod
    def full(cls, layout: Layout) -> Structure:
        """Everything kept."""
        return cls(torch.ones(layout.num_layers, layout.num_heads, dtype=torch.bool),
                   torch.ones(layout.num_layers, dtype=torch.bool))

    @property
    def heads_kept(self) -> int:
        """Number of attention heads kept."""
        return int(self.heads.sum())

    @property
    def mlps_kept(self) -> int:
        """Number of MLP blocks kept."""
        return int(self.mlps.sum())

    def same_as(self, other: Structure) -> bool:
        """True when both keep exactly the same heads and MLPs."""
        return bool(torch.equal(self.heads, other.heads) and torch.equal(self.mlps, other.mlps))

    def summary(self) -> dict:
        """Counts and per-layer kept heads, JSON-ready."""
        return {
            "heads_kept": self.heads_kept,
            "heads_total": self.heads.numel(),
            "mlps_kept": self.mlps_kept,
            "mlps_total": self.mlps.numel(),
            "heads_per_layer": self.heads.sum(dim=1).tolist(),
            "mlps_per_layer": self.mlps.int().tolist(),
        }

    def to_mask(self, metadata: dict[str, str] | None = None) -> Mask:
        """This structure as a mask file (kind=structured) with `metadata` added."""
        tensors = {}
        for i in range(self.heads.shape[0]):
            tensors[HEADS.format(i)] = self.heads[i].clone()
            tensors[MLP.format(i)] = self.mlps[i : i + 1].clone()
        meta = {
            "num_layers": str(self.heads.shape[0]),
            "num_heads": str(self.heads.shape[1]),
            "heads_kept": str(self.heads_kept),
            "mlps_kept": str(self.mlps_kept),
            **{k: str(v) for k, v in (metadata or {}).items()},
            "kind": KIND,
        }
        return Mask(tensors, meta)

    @classmethod
    def from_mask(cls, mask: Mask, layout: Layout, what: str = "the model") -> Structure:
        """The structure a structured mask holds; a TicketsError naming the tensor when it does not fit `layout`."""
        if mask.metadata.get("kind") != KIND:
            raise TicketsError(f"not a structured mask (kind '{mask.metadata.get('kind', 'unstructured')}'): "
                               "use a mask written by 'python -m tickets structured'")
        where = f"{what} ({layout.describe()})"
        expected = layout.shapes()
        mask.check_shapes(expected, where)
        for name in expected:
            if name not in mask.tensors:
                raise TicketsError(f"structured mask has no tensor '{name}' that {where} needs "
                                   "(mask from another architecture?)")
        heads = torch.stack([mask.tensors[HEADS.format(i)] for i in range(layout.num_layers)]).bool()
        mlps = torch.cat([mask.tensors[MLP.format(i)] for i in range(layout.num_layers)]).bool()
        return cls(heads, mlps)

    def check_fits(self, layout: Layout, what: str = "the model") -> None:
        """Raise a TicketsError naming the first structure tensor that does not fit `layout`."""
        Structure.from_mask(self.to_mask(), layout, what)

    def weight_keep(self, layout: Layout) -> dict[str, torch.Tensor]:
        """Per-parameter keep-masks (encoder-relative names) that zero exactly the pruned heads and MLP blocks.

        A pruned head loses its query/key/value rows (weights and biases) and its attention-output columns; a pruned
        MLP block loses its intermediate rows and its whole output dense layer, bias included, so the block adds
        nothing (as in the compacted model).
        """
        self.check_fits(layout)
        keep: dict[str, torch.Tensor] = {}
        hidden, width = layout.hidden_size, layout.intermediate_size
        for i in range(layout.num_layers):
            prefix = f"encoder.layer.{i}."
            rows = self.heads[i].repeat_interleave(layout.head_dim)
            for name in ATTENTION_ROWS:
                keep[f"{prefix}attention.self.{name}.weight"] = rows[:, None].expand(-1, hidden).clone()
                keep[f"{prefix}attention.self.{name}.bias"] = rows.clone()
            keep[f"{prefix}attention.output.dense.weight"] = rows[None, :].expand(hidden, -1).clone()
            mlp = bool(self.mlps[i])
            keep[f"{prefix}intermediate.dense.weight"] = torch.full((width, hidden), mlp)
            keep[f"{prefix}intermediate.dense.bias"] = torch.full((width,), mlp)
            keep[f"{prefix}output.dense.weight"] = torch.full((hidden, width), mlp)
            keep[f"{prefix}output.dense.bias"] = torch.full((hidden,), mlp)
        return keep

    def weight_sparsity(self, layout: Layout) -> float:
        """Fraction of the encoder's attention and MLP weight matrices (not biases) that this structure removes."""
        kept = total = 0
        for name, tensor in self.weight_keep(layout).items():
            if name.endswith(".weight"):
                kept += int(tensor.sum())
                total += tensor.numel()
        return 1.0 - kept / total

