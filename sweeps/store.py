"""The results store: one folder per content key under `STORAGE/results`, shared by every sweep that uses it.

A trajectory's folder is the engine's trajectory folder (`level_XX/` per finished level); a branch's or retrained
subnetwork's folder holds its `mask.safetensors` and `metrics.json`; a structured search's folder its
`good.safetensors`, `importance.json` and `metrics.json`. On a multi-node cluster `storage` must be a file system
every node mounts.
"""

from __future__ import annotations

import os
import uuid

from tickets.records import finished_metrics
from tickets.paths import GOOD_MASK, MASK, level_dir

from .plan import STRUCTURED_SEARCH, Piece

ID_FILE = "storage_id"


def mask_name(piece: Piece) -> str:
    """The name of the mask file in a result folder of `piece` (a structured search's is its good subnetwork)."""
    return GOOD_MASK if piece.kind == STRUCTURED_SEARCH else MASK


class ResultsStore:
    """Finished results by content key."""

    def __init__(self, storage: str):
        self.storage = storage
        self.root = os.path.join(storage, "results")

    def mark(self) -> str:
        """The store's id (created on first use): trials compare it to prove they see the driver's storage."""
        path = os.path.join(self.storage, ID_FILE)
        if not os.path.isfile(path):
            os.makedirs(self.storage, exist_ok=True)
            with open(path, "w") as handle:
                handle.write(uuid.uuid4().hex)
        with open(path) as handle:
            return handle.read().strip()

    def check_shared(self, expected_id: str) -> None:
        """Fail on a node that does not see the driver's storage (it must be a shared file system)."""
        path = os.path.join(self.storage, ID_FILE)
        found = open(path).read().strip() if os.path.isfile(path) else None
        if found != expected_id:
            raise RuntimeError(f"storage '{self.storage}' on this node is not the driver's: on a multi-node cluster "
                               "`storage` must be a file system every node mounts")

    @property
    def ray_storage(self) -> str:
        """Where Ray Tune keeps trial state and checkpoints."""
        return os.path.join(self.storage, "ray")

    def path(self, key: str) -> str:
        """The folder of the piece with content key `key`."""
        return os.path.join(self.root, key)

    def result_dir(self, piece: Piece, level: int) -> str:
        """The folder holding `piece`'s result at `level` (metrics.json, mask.safetensors)."""
        folder = self.path(piece.key)
        return level_dir(folder, level) if piece.is_chain else folder

    def level_metrics(self, piece: Piece, level: int) -> dict | None:
        """The metrics of `piece` at `level`, or None when not finished."""
        return finished_metrics(self.result_dir(piece, level))

    def finished_levels(self, piece: Piece) -> list[int]:
        """The levels of `piece` that are finished on disk."""
        return [level for level in piece.levels if self.level_metrics(piece, level) is not None]

    def is_complete(self, piece: Piece) -> bool:
        """True when every level of `piece` is finished."""
        return len(self.finished_levels(piece)) == len(piece.levels)

    def source_dir(self, piece: Piece) -> str:
        """The folder a dependent piece starts from: its trajectory's level folder, or its structured search."""
        folder = self.path(piece.source_key)
        return folder if piece.is_structured else level_dir(folder, piece.level)

    def source_mask(self, piece: Piece) -> str:
        """The mask a branch or transfer piece starts from: its source trajectory's mask at `piece.level`."""
        return os.path.join(self.source_dir(piece), MASK)

    def source_ready(self, piece: Piece) -> bool:
        """True when the result a branch, transfer or subnetwork piece needs is finished."""
        return finished_metrics(self.source_dir(piece)) is not None
