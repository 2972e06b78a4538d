"""Helpers shared by the benchmarks: models by size, synthetic batches, machine description, medians."""

from __future__ import annotations

import os
import platform
import statistics

import torch

from tickets.models import build_model

SIZES = {
    "minilm": None,
    "bert-base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
}


def build_sized_model(size: str, seed: int = 0) -> torch.nn.Module:
    """The embedded MiniLM (pre-trained), or a randomly initialised model of a named size built from its config."""
    if SIZES[size] is None:
        return build_model(None, "classification", 2, seed)
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(num_labels=2, **SIZES[size]))


def synthetic_batch(batch_size: int, seq_len: int, vocab: int = 30522, seed: int = 0) -> dict[str, torch.Tensor]:
    """A classification batch of random token ids."""
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(1000, vocab, (batch_size, seq_len), generator=g),
        "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
        "labels": torch.randint(0, 2, (batch_size,), generator=g),
    }


def machine() -> str:
    """Cores, CPU model and GPU of this machine, on one line."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores, {cpu}, {gpu}, torch {torch.__version__}"


def median(values: list[float]) -> float:
    """The median of a list of numbers."""
    return statistics.median(values)
