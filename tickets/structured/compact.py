"""Compaction: a structured ticket as a smaller dense model, exported with `save_pretrained`.

Why a custom class: BertConfig has one `num_attention_heads` and one `intermediate_size` for every layer, and BERT
ties the head width to hidden_size / num_attention_heads, so the query/key/value matrices of a stock BERT are always
hidden x hidden; padding layers to a common head count cannot shrink them. The compacted model therefore carries
per-layer sizes in two extra config lists and is an instance of `hf_compact_bert.CompactBert...` (a stock BERT
class whose layers are resized after construction). `save_pretrained` copies that self-contained file into the
folder, so the export loads with `AutoModelFor...from_pretrained(folder, trust_remote_code=True)` without this
package, or with `load_compacted(folder)` without trusting remote code. A plain `BertFor...from_pretrained(folder)`
refuses it (size mismatch), which is the trade-off.
"""

from __future__ import annotations

import copy
import os

import torch
from torch import nn

from ..errors import TicketsError
from ..models import model_id
from .hf_compact_bert import CompactBertForMaskedLM, CompactBertForSequenceClassification
from .structure import Layout, Structure

COMPACT_OF = {
    "BertForSequenceClassification": CompactBertForSequenceClassification,
    "BertForMaskedLM": CompactBertForMaskedLM,
}
COMPACT_BY_NAME = {cls.__name__: cls for cls in COMPACT_OF.values()}


def _compact_class(model: nn.Module):
    name = type(model).__name__
    if name not in COMPACT_OF:
        raise TicketsError(f"cannot compact a {name}: compaction takes a full-size BertForSequenceClassification "
                           "or BertForMaskedLM")
    return COMPACT_OF[name]


def compact_config(config, structure: Structure, layout: Layout):
    """A copy of `config` with the per-layer head counts and feed-forward widths of `structure`."""
    config = copy.deepcopy(config)
    config.ticket_num_heads = [int(n) for n in structure.heads.sum(dim=1)]
    config.ticket_intermediate_sizes = [layout.intermediate_size if keep else 0 for keep in structure.mlps.tolist()]
    return config


def sliced_state(model: nn.Module, structure: Structure, layout: Layout) -> dict[str, torch.Tensor]:
    """The model's state dict with pruned heads' rows/columns and pruned MLP blocks cut out."""
    prefix = model.base_model_prefix + ".encoder.layer."
    state = {}
    for name, value in model.state_dict().items():
        if not name.startswith(prefix):
            state[name] = value.clone()
            continue
        layer, rest = name[len(prefix):].split(".", 1)
        i = int(layer)
        rows = structure.heads[i].repeat_interleave(layout.head_dim).nonzero().flatten()
        width = slice(None) if bool(structure.mlps[i]) else slice(0, 0)
        if rest.startswith("attention.self.") and rest.rsplit(".", 2)[-2] in ("query", "key", "value"):
            value = value[rows]
        elif rest == "attention.output.dense.weight":
            value = value[:, rows]
        elif rest.startswith("intermediate.dense."):
            value = value[width]
        elif rest == "output.dense.weight":
            value = value[:, width]
        elif rest == "output.dense.bias" and not bool(structure.mlps[i]):
            value = torch.zeros_like(value)
        state[name] = value.clone()
    return state


def compact(model: nn.Module, structure: Structure) -> nn.Module:
    """A smaller dense model giving the same outputs as `model` with `structure`'s pruned heads and MLPs masked."""
    layout = Layout.of(model)
    cls = _compact_class(model)
    structure.check_fits(layout, f"model '{model_id(model)}'")
    reference = next(model.parameters())
    smaller = cls(compact_config(model.config, structure, layout)).to(reference.device, reference.dtype)
    smaller.load_state_dict(sliced_state(model, structure, layout), strict=True)
    smaller.train(model.training)
    return smaller


def export_compacted(model: nn.Module, folder: str, tokenizer=None) -> None:
    """Write a compacted model (and its tokenizer) with `save_pretrained`, modelling code included."""
    if getattr(model.config, "ticket_num_heads", None) is None:
        raise TicketsError("export_compacted takes a model made by compact()")
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def load_compacted(folder: str) -> nn.Module:
    """Load a folder written by `export_compacted` without trusting remote code."""
    from transformers import AutoConfig

    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise TicketsError(f"'{folder}' has no config.json")
    config = AutoConfig.from_pretrained(folder)
    architectures = getattr(config, "architectures", None) or []
    if getattr(config, "ticket_num_heads", None) is None or not architectures or architectures[0] not in COMPACT_BY_NAME:
        raise TicketsError(f"'{folder}' is not a compacted structured ticket (no per-layer sizes in its config)")
    return COMPACT_BY_NAME[architectures[0]].from_pretrained(folder)
