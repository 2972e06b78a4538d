"""Compacting a structured mask applied to a (pre-trained or fine-tuned) model, checked and exported."""

from __future__ import annotations

import os

import torch
from torch import nn

from ..errors import TicketsError
from ..masks import Mask
from ..models import build_model, load_tokenizer, model_id, resolve_model
from ..tasks import get_kind, get_task
from .compact import compact, export_compacted
from .gates import Gates
from .structure import Layout, Structure

CHECK_SHAPE = (4, 32)


def load_model(name: str | None, task_name: str, seed: int) -> nn.Module:
    """A save_pretrained folder as it is (a fine-tuned head kept), or a pre-trained model with a fresh seeded head."""
    task = get_task(task_name)
    if name and os.path.isdir(name):
        from transformers import AutoConfig

        resolve_model(name)
        kind = get_kind(task.kind)
        try:
            config = AutoConfig.from_pretrained(name)
            kind.configure(config, task.num_labels)
            return kind.head_class().from_pretrained(name, config=config)
        except (OSError, ValueError) as exc:
            raise TicketsError(f"cannot load model folder '{name}': {exc}") from exc
    return build_model(name, task.kind, task.num_labels, seed)


def max_difference(model: nn.Module, smaller: nn.Module, structure: Structure, seed: int = 0) -> float:
    """Largest |output difference| between the gated full model and its compacted copy on a random batch."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(model.config.vocab_size, CHECK_SHAPE, generator=generator)
    attention = torch.ones_like(ids)
    attention[1:, CHECK_SHAPE[1] // 2 :] = 0
    model.eval()
    smaller.eval()
    with torch.no_grad(), Gates(model, structure):
        expected = model(input_ids=ids, attention_mask=attention).logits
    with torch.no_grad():
        got = smaller(input_ids=ids, attention_mask=attention).logits
    return float((expected - got).abs().max())


def compact_and_export(mask_path: str, model_name: str | None, task_name: str | None, seed: int, out: str) -> dict:
    """Compact `model_name` under the structured mask at `mask_path`, check its outputs, export to `out`."""
    mask = Mask.load(mask_path)
    task_name = task_name or mask.metadata.get("source_task")
    if not task_name:
        raise TicketsError("--task is required (the mask names no source task)")
    model = load_model(model_name, task_name, seed)
    structure = Structure.from_mask(mask, Layout.of(model), f"model '{model_id(model)}'")
    smaller = compact(model, structure)
    difference = max_difference(model, smaller, structure)
    try:
        tokenizer = load_tokenizer(model_name)
    except TicketsError:
        tokenizer = None
    export_compacted(smaller, out, tokenizer)
    return {
        "dense_parameters": sum(p.numel() for p in model.parameters()),
        "compact_parameters": sum(p.numel() for p in smaller.parameters()),
        "heads_per_layer": structure.heads.sum(dim=1).tolist(),
        "mlps_per_layer": structure.mlps.int().tolist(),
        "max_abs_difference": difference,
    }
