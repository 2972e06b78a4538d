"""The results store: one folder per content key under `STORAGE/results`, shared by every sweep that uses it.

A trajectory's folder is the engine's trajectory folder (`level_XX/` per finished level); a branch's or retrained
subnetwork's folder holds its `mask.safetensors` and `metrics.json`; a structured search's folder its
`good.safetensors`, `importance.json` and `metrics.json`. A result is finished when its `metrics.json` is there.

`storage` is a folder (on a multi-node cluster: one every node mounts) or an object-store URI (`s3://bucket/prefix`,
`gs://...`, `file://...`). With a URI nothing assumes a shared disk: a trial fetches what its piece reads into its
node's cache (`sweeps.inputs` says what), verified against the store's manifests, runs the engine there, and uploads
each finished result folder with `metrics.json` last (cluster.storage), so a folder whose upload was cut short is
absent to every reader here.
"""

from __future__ import annotations

import os
import uuid
from collections import defaultdict

from cluster.storage import MANIFEST, ObjectStore, file_sha256, is_uri, node_cache, uri_slug
from tickets.lineage import SUPERSEDED, branch_is_stale, first_stale_level
from tickets.paths import GOOD_MASK, MASK, METRICS, TRAINED_WEIGHTS, level_dir
from tickets.records import finished_metrics, read_json

from .inputs import source_files
from .plan import STRUCTURED_SEARCH, Piece

ID_FILE = "storage_id"
RESULTS = "results"
RAY = "ray"


def mask_name(piece: Piece) -> str:
    """The name of the mask file in a result folder of `piece` (a structured search's is its good subnetwork)."""
    return GOOD_MASK if piece.kind == STRUCTURED_SEARCH else MASK


class ResultsStore:
    """Finished results by content key, in a folder or an object store (then mirrored in this node's cache)."""

    def __init__(self, storage: str):
        self.storage = storage
        self.remote = ObjectStore(storage) if is_uri(storage) else None
        if self.remote is None:
            self.root = os.path.join(storage, RESULTS)
            self.local = self
        else:
            self.root = self.remote.url(RESULTS)
            self.local = ResultsStore(os.path.join(node_cache(), "stores", uri_slug(storage)))
        self._published: set[str] = set()

    def mark(self) -> str:
        """The store's id (created on first use): trials compare it to prove they see the driver's storage."""
        if self.remote is not None:
            if self.remote.read_bytes(ID_FILE) is None:
                self.remote.write_bytes(ID_FILE, uuid.uuid4().hex.encode())
            return self.remote.read_bytes(ID_FILE).decode().strip()
        path = os.path.join(self.storage, ID_FILE)
        if not os.path.isfile(path):
            os.makedirs(self.storage, exist_ok=True)
            with open(path, "w") as handle:
                handle.write(uuid.uuid4().hex)
        with open(path) as handle:
            return handle.read().strip()

    def check_shared(self, expected_id: str) -> None:
        """Fail on a node that does not see the driver's storage (a folder must be a file system every node mounts)."""
        if self.remote is not None:
            found = (self.remote.read_bytes(ID_FILE) or b"").decode().strip() or None
        else:
            path = os.path.join(self.storage, ID_FILE)
            found = open(path).read().strip() if os.path.isfile(path) else None
        if found != expected_id:
            raise RuntimeError(f"storage '{self.storage}' on this node is not the driver's: on a multi-node cluster "
                               "`storage` must be an object store (s3://...) or a file system every node mounts")

    @property
    def ray_storage(self) -> str:
        """Where Ray Tune keeps trial state and checkpoints (a path in `ray_filesystem` for an object store)."""
        if self.remote is not None:
            return self.remote.tune_location(RAY)[1]
        return os.path.join(self.storage, RAY)

    @property
    def ray_filesystem(self):
        """The pyarrow file system Ray Tune reaches `ray_storage` through (None for a folder)."""
        return None if self.remote is None else self.remote.tune_location(RAY)[0]

    def path(self, key: str) -> str:
        """The folder (or URI) of the piece with content key `key`."""
        return f"{self.root}/{key}" if self.remote is not None else os.path.join(self.root, key)

    def result_dir(self, piece: Piece, level: int) -> str:
        """The local folder holding `piece`'s result at `level` (metrics.json, mask.safetensors); for an object store,
        this node's verified copy, fetched when the store has the result finished (weights left out)."""
        if self.remote is not None:
            rel = _relative(piece, level)
            if self.local.level_metrics(piece, level) is None and self.remote.exists(f"{RESULTS}/{rel}/{METRICS}"):
                self._fetch_result(rel, skip={TRAINED_WEIGHTS})
            return self.local.result_dir(piece, level)
        folder = self.path(piece.key)
        return level_dir(folder, level) if piece.is_chain else folder

    def level_metrics(self, piece: Piece, level: int) -> dict | None:
        """The metrics of `piece` at `level`, or None when not finished."""
        if self.remote is not None:
            return self.remote.read_json(f"{RESULTS}/{_relative(piece, level)}/{METRICS}")
        return finished_metrics(self.result_dir(piece, level))

    def finished_levels(self, piece: Piece) -> list[int]:
        """The levels of `piece` that are finished in the store."""
        if self.remote is not None:
            names = self.remote.files(f"{RESULTS}/{piece.key}")
            return [lv for lv in piece.levels if _relative(piece, lv, within=True) + METRICS in names]
        return [level for level in piece.levels if self.level_metrics(piece, level) is not None]

    def is_complete(self, piece: Piece) -> bool:
        """True when every level of `piece` is finished."""
        return len(self.finished_levels(piece)) == len(piece.levels)

    def is_stale(self, piece: Piece) -> bool:
        """True when a finished result of `piece` was trained from inputs it no longer starts from
        (tickets.lineage): a trajectory level from another mask or rewind point than its predecessor now gives, a
        branch or transfer run from another mask than its source level trained under."""
        if piece.is_trajectory:
            return first_stale_level([self.level_metrics(piece, level) for level in piece.levels]) is not None
        if piece.is_chain or piece.is_structured:
            return False
        return branch_is_stale(self.level_metrics(piece, piece.level), self.source_metrics(piece))

    def first_open_level(self, piece: Piece) -> int:
        """The first level of a trajectory that a run of it trains (unfinished, or stale with those after it); one
        past its last level when none."""
        records = [self.level_metrics(piece, level) for level in piece.levels]
        missing = next((level for level, record in zip(piece.levels, records) if record is None), len(records))
        stale = first_stale_level(records)
        return missing if stale is None else min(missing, stale)

    def source_metrics(self, piece: Piece) -> dict | None:
        """The metrics.json of the result a dependent piece starts from, or None when it is not finished."""
        if self.remote is not None:
            return self.remote.read_json(f"{RESULTS}/{_source_relative(piece)}/{METRICS}")
        return finished_metrics(self.source_dir(piece))

    def source_dir(self, piece: Piece) -> str:
        """The folder a dependent piece starts from: its trajectory's level folder, or its structured search."""
        folder = self.path(piece.source_key)
        if piece.is_structured:
            return folder
        return f"{folder}/{level_dir('', piece.level)}" if self.remote is not None else level_dir(folder, piece.level)

    def source_mask(self, piece: Piece) -> str:
        """The mask a branch or transfer piece starts from: its source trajectory's mask at `piece.level`."""
        return f"{self.source_dir(piece)}/{MASK}" if self.remote is not None \
            else os.path.join(self.source_dir(piece), MASK)

    def source_ready(self, piece: Piece) -> bool:
        """True when the result a branch, transfer or subnetwork piece needs is finished."""
        if self.remote is not None:
            return self.remote.exists(f"{RESULTS}/{_source_relative(piece)}/{METRICS}")
        return finished_metrics(self.source_dir(piece)) is not None

    def stage(self, piece: Piece) -> ResultsStore:
        """The store the engine runs `piece` in: this one for a folder; for an object store, this node's cache
        holding what the piece reads (its own finished results and the files of its source it needs), verified."""
        if self.remote is None:
            return self
        names = self.remote.files(f"{RESULTS}/{piece.key}")
        folders: dict[str, set[str]] = defaultdict(set)
        for name in names:
            folder, _, file = name.rpartition("/")
            folders[folder].add(file)
        finished = sorted(f for f, files in folders.items() if METRICS in files)
        for folder, files in sorted(folders.items()):
            if folder.split("/")[0] == SUPERSEDED:
                continue  # stale results set aside: nothing reads them
            rel = f"{piece.key}/{folder}".rstrip("/")
            if METRICS in files:
                weights = piece.is_chain and not piece.is_trajectory and folder == finished[-1]
                self._fetch_result(rel, skip=set() if weights else {TRAINED_WEIGHTS})
            elif MANIFEST in files and not (self.remote.read_json(f"{RESULTS}/{rel}/{MANIFEST}") or {}).get("last"):
                self._fetch_folder(rel, None)
        by_folder: dict[str, list[str]] = defaultdict(list)
        for file in source_files(piece):
            folder, _, name = file.rpartition("/")
            by_folder[folder].append(name)
        for folder, files in by_folder.items():
            self._fetch_folder(f"{piece.source_key}/{folder}".rstrip("/"), files)
        return self.local

    def publish(self, piece: Piece) -> None:
        """Upload every result of `piece` finished in this node's cache that the object store lacks (files first,
        `metrics.json` last), and the files beside them (a trajectory's settings and rewind point) before those; no-op
        for a folder."""
        if self.remote is None:
            return
        top = self.local.path(piece.key)
        for folder, subfolders, files in os.walk(top):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            files = [f for f in files if not f.startswith(".")]
            rel = os.path.relpath(folder, self.local.root).replace(os.sep, "/")
            if not files or rel in self._published:
                continue
            remote = f"{RESULTS}/{rel}"
            if METRICS in files:
                if self.remote.read_json(f"{remote}/{METRICS}") != read_json(os.path.join(folder, METRICS)):
                    self.remote.remove(f"{remote}/{METRICS}")  # a replaced (stale) result is absent until uploaded
                    self.remote.put_folder(folder, remote, last=METRICS)
                self._published.add(rel)
            elif self._changed(folder, files, remote):
                self.remote.put_folder(folder, remote)

    def _changed(self, folder: str, files: list[str], remote: str) -> bool:
        """True when a loose file of `folder` differs from what the store's manifest of `remote` records."""
        manifest = self.remote.manifest(remote) or {}
        return any(manifest.get(f, {}).get("sha256") != file_sha256(os.path.join(folder, f)) for f in files)

    def _fetch_result(self, rel: str, skip: set[str]) -> None:
        """Fetch the finished result folder `rel` (relative to `results/`) into the cache, metrics.json last."""
        manifest = self.remote.manifest(f"{RESULTS}/{rel}")
        names = sorted(manifest) if manifest is not None else \
            sorted(n for n in self.remote.files(f"{RESULTS}/{rel}") if "/" not in n)
        names = [n for n in names if n not in skip and n != METRICS] + [METRICS]
        self.remote.fetch(f"{RESULTS}/{rel}", names, os.path.join(self.local.root, rel), manifest)

    def _fetch_folder(self, rel: str, names: list[str] | None) -> None:
        """Fetch the files `names` (None: every file its manifest lists) of the folder `rel` into the cache."""
        manifest = self.remote.manifest(f"{RESULTS}/{rel}")
        if names is None:
            names = sorted(manifest or {})
        present = self.remote.files(f"{RESULTS}/{rel}")
        missing = [n for n in names if n not in present]
        if missing:
            raise RuntimeError(f"'{self.remote.url(f'{RESULTS}/{rel}/{missing[0]}')}' is not in the store, but this "
                               "piece reads it")
        self.remote.fetch(f"{RESULTS}/{rel}", names, os.path.join(self.local.root, rel), manifest)


def _relative(piece: Piece, level: int, within: bool = False) -> str:
    """The folder of `piece`'s result at `level` relative to `results/` (`within`: relative to the piece's folder,
    with a trailing slash, '' for a piece of one level)."""
    inner = level_dir("", level).strip("/") if piece.is_chain else ""
    if within:
        return f"{inner}/" if inner else ""
    return f"{piece.key}/{inner}".rstrip("/")


def _source_relative(piece: Piece) -> str:
    """The folder a dependent piece starts from, relative to `results/`."""
    return piece.source_key if piece.is_structured else f"{piece.source_key}/{level_dir('', piece.level).strip('/')}"
