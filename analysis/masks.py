"""Masks of the trajectory runs at one chosen level: per-layer sparsity, and Jaccard overlap between seeds and tasks.

Masks are downloaded one file per run (artifact `masks/level_XX.safetensors`), read with tickets.masks.Mask, and
kept only as one bit-packed vector each, so hundreds of BERT-base masks fit in memory. Jaccard and Hamming follow
tickets.masks.overlap (kept weights; fraction of differing bits).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cluster.conventions import mask_artifact_path

from .collect import IMP

MASK_GROUP = ["model", "schedule", "method", "rewind_point"]
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)
_LAYER = re.compile(r"(?:^|\.)layer\.(\d+)\.(.+?)(?:\.weight)?$")
_KINDS = {"attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
          "attention.output.dense": "attention output", "intermediate.dense": "intermediate",
          "output.dense": "output"}


@dataclass
class MaskSet:
    """The chosen masks: `chosen` (one row per trajectory run with its level), `layers` (per-tensor sparsity),
    `overlap` (one row per pair of runs in the same group), and `problems` (masks that could not be read)."""

    chosen: pd.DataFrame
    layers: pd.DataFrame
    overlap: pd.DataFrame
    problems: list[str] = field(default_factory=list)


def choose_levels(table: pd.DataFrame, level: int | None = None, sparsity: float | None = None) -> pd.DataFrame:
    """One row per trajectory run: its level `level`, else its level nearest `sparsity`, else the deepest level that
    every finished run of its (model, schedule, method, rewind point) group reached (every run, if none finished), when
    that is a pruned level (>= 1)."""
    imp = table[table["branch"] == IMP]
    if level is not None:
        chosen = imp[imp["level"] == level]
    elif sparsity is not None:
        known = imp[imp["sparsity"].notna()]
        distance = (known["sparsity"] - sparsity).abs()
        chosen = known.loc[distance.groupby(known["run_id"]).idxmin()]
    else:
        parts = []
        for _, group in imp.groupby(MASK_GROUP, dropna=False):
            finished = group[group["status"] == "FINISHED"]
            reached = (finished if len(finished) else group).groupby("run_id")["level"].max().min()
            if reached >= 1:
                parts.append(group[group["level"] == reached])
        chosen = pd.concat(parts) if parts else imp.iloc[:0]
    columns = ["run_id", "task", "seed", *MASK_GROUP, "level", "sparsity"]
    return chosen[columns].sort_values(MASK_GROUP + ["task", "seed"], kind="stable").reset_index(drop=True)


def load_masks(client, chosen: pd.DataFrame) -> MaskSet:
    """Download and read the chosen masks; per-tensor sparsity and pairwise overlap within each group."""
    from tickets.masks import Mask

    packed, layers, problems, found = {}, [], [], []
    with tempfile.TemporaryDirectory(prefix="analysis-masks-") as tmp:
        for _, row in chosen.iterrows():
            artifact = mask_artifact_path(int(row["level"]))
            try:
                path = client.download_artifacts(row["run_id"], artifact, os.path.join(tmp, row["run_id"]))
                mask = Mask.load(path)
                os.remove(path)
            except Exception as exc:  # noqa: BLE001 - a missing or unreadable mask is reported, not fatal
                problems.append(f"{row['task']} seed {row['seed']} (run {row['run_id']}): {artifact}: "
                                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
                continue
            names = sorted(mask.tensors)
            shapes = tuple((n, tuple(mask.tensors[n].shape)) for n in names)
            bits = np.concatenate([mask.tensors[n].numpy().ravel() for n in names])
            packed[row["run_id"]] = (shapes, np.packbits(bits), bits.size)
            for name, value in mask.layer_sparsity().items():
                layer, kind = tensor_position(name)
                layers.append({**row.to_dict(), "tensor": name, "layer": layer, "kind": kind,
                               "tensor_sparsity": value})
            found.append(row)
    chosen = pd.DataFrame(found, columns=chosen.columns).reset_index(drop=True)
    layer_columns = [*chosen.columns, "tensor", "layer", "kind", "tensor_sparsity"]
    layer_frame = pd.DataFrame(layers, columns=layer_columns)
    layer_frame["layer"] = layer_frame["layer"].astype("Int64")
    return MaskSet(chosen, layer_frame, _pairwise(chosen, packed, problems), problems)


def tensor_position(name: str) -> tuple[int | None, str]:
    """(layer index, short kind) of a prunable tensor name; (None, name) for tensors outside the layers."""
    found = _LAYER.search(name)
    if not found:
        return None, re.sub(r"\.weight$", "", name)
    return int(found.group(1)), _KINDS.get(found.group(2), found.group(2))


def _pairwise(chosen: pd.DataFrame, packed: dict, problems: list[str]) -> pd.DataFrame:
    rows = []
    for _, group in chosen.groupby(MASK_GROUP, dropna=False):
        records = group.to_dict("records")
        for i, a in enumerate(records):
            for b in records[i + 1:]:
                shapes_a, bits_a, total = packed[a["run_id"]]
                shapes_b, bits_b, _ = packed[b["run_id"]]
                if shapes_a != shapes_b:
                    problems.append(f"masks of runs {a['run_id']} and {b['run_id']} cover different tensors")
                    continue
                inter = int(_POPCOUNT[bits_a & bits_b].sum())
                union = int(_POPCOUNT[bits_a | bits_b].sum())
                differ = int(_POPCOUNT[bits_a ^ bits_b].sum())
                rows.append({**{c: a[c] for c in MASK_GROUP},
                             "task_a": a["task"], "seed_a": a["seed"], "level_a": a["level"],
                             "sparsity_a": a["sparsity"], "task_b": b["task"], "seed_b": b["seed"],
                             "level_b": b["level"], "sparsity_b": b["sparsity"],
                             "jaccard": inter / union if union else 1.0, "hamming": differ / total})
    columns = MASK_GROUP + ["task_a", "seed_a", "level_a", "sparsity_a", "task_b", "seed_b", "level_b",
                            "sparsity_b", "jaccard", "hamming"]
    return pd.DataFrame(rows, columns=columns)


def random_jaccard(sparsity_a: float, sparsity_b: float) -> float:
    """Expected Jaccard overlap of the kept weights of two independent random masks of these sparsities."""
    keep_a, keep_b = 1.0 - sparsity_a, 1.0 - sparsity_b
    union = keep_a + keep_b - keep_a * keep_b
    return keep_a * keep_b / union if union else 1.0
