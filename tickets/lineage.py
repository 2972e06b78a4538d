"""What a result was trained from, by content hash, so that a result whose inputs changed since it was trained is
stale: never reused, trained again, the old one set aside.

A trajectory level records the hashes of the mask it trained under and of the rewind point theta_i it started from
(`inputs`), and of what later results start from (`outputs`: the next level's mask; level 0 also theta_i). A level is
current when its inputs are its predecessor's outputs; a branch (random pruning, re-initialisation, transfer...) when
the mask it started from (`source_mask_hash`) is the mask its source level trained under. So re-running a deleted
level to a different mask (as a GPU may) makes every later level and every branch built on the old masks stale.
Records written before these fields existed are not checked.
"""

from __future__ import annotations

import os
import sys
import time

from .masks import Mask
from .paths import METRICS
from .provenance import file_hash

INPUTS = "inputs"  # metrics.json: {name: content hash} of what the result was trained from
OUTPUTS = "outputs"  # metrics.json: {name: content hash} of what later results start from
SOURCE_MASK_HASH = "source_mask_hash"  # a branch's metrics.json: the content hash of the mask it started from
SUPERSEDED = "superseded"  # the folder, beside a piece's results, where its stale results are kept
SUPERSEDES = "supersedes"  # metrics.json: where the stale result this one replaced was set aside


def trajectory_lineage(mask: Mask, next_mask: Mask | None, rewind_point: str, level: int) -> dict:
    """A trajectory level's `inputs` (its mask; from level 1 on, the rewind point) and `outputs` (the next level's
    mask; at level 0, the rewind point), given the rewind point's file."""
    rewind_hash = file_hash(rewind_point)
    inputs = {"mask": mask.content_hash(), **({"rewind_point": rewind_hash} if level else {})}
    outputs = {**({"next_mask": next_mask.content_hash()} if next_mask is not None else {}),
               **({} if level else {"rewind_point": rewind_hash})}
    return {INPUTS: inputs, OUTPUTS: outputs}


def first_stale_level(records: list[dict | None]) -> int | None:
    """The first level of a trajectory (or chain) whose record says it trained from inputs other than its
    predecessor's outputs, or None. `records[level]`: that level's metrics.json, None when not finished."""
    first = records[0] if records else None
    rewind_point = (first or {}).get(OUTPUTS, {}).get("rewind_point")
    for level in range(1, len(records)):
        record, previous = records[level], records[level - 1]
        if record is None or previous is None:
            continue
        expected = {"mask": previous.get(OUTPUTS, {}).get("next_mask"), "rewind_point": rewind_point}
        found = record.get(INPUTS, {})
        if any(want is not None and found.get(name) not in (None, want) for name, want in expected.items()):
            return level
    return None


def branch_is_stale(record: dict | None, source_record: dict | None) -> bool:
    """Whether a finished branch `record` started from another mask than its source level's record says it trained
    under (False when either is missing or predates these hashes)."""
    if record is None or source_record is None:
        return False
    started = record.get(SOURCE_MASK_HASH)
    current = source_record.get(INPUTS, {}).get("mask")
    return started is not None and current is not None and started != current


def supersede(folders: list[str], parent: str, why: str) -> str:
    """Set the stale result `folders` aside (`set_aside`) and say so on stderr with `why`; the path they went to,
    relative to `parent`."""
    into = set_aside(folders, parent)
    names = ", ".join(os.path.relpath(f, parent) if f != parent else os.path.basename(parent) for f in folders)
    print(f"stale: {names} of '{parent}' {why}: set aside in '{into}', training again", file=sys.stderr, flush=True)
    return os.path.relpath(into, parent)


def set_aside(folders: list[str], parent: str) -> str:
    """Move the result `folders` (each finished, inside `parent`) into `parent/superseded/<UTC time>/`, each one's
    metrics.json first so that no reader sees it finished meanwhile; return that folder."""
    into = os.path.join(parent, SUPERSEDED, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    os.makedirs(into, exist_ok=True)
    for folder in folders:
        target = os.path.join(into, os.path.relpath(folder, parent))
        os.makedirs(target, exist_ok=True)
        os.replace(os.path.join(folder, METRICS), os.path.join(target, METRICS))
        for name in sorted(os.listdir(folder)):
            if name != SUPERSEDED:
                os.replace(os.path.join(folder, name), os.path.join(target, name))
        if os.path.abspath(folder) != os.path.abspath(parent):
            os.rmdir(folder)
    return into
