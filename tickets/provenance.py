"""Provenance for cache keys: a fingerprint of the task data a run reads, and the identity of its starting model."""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from .errors import TicketsError
from .models import TINY_CONFIG, resolve_model
from .tasks import Task, get_kind

# transformers' order of preference for the weights of a local folder; an index file lists its shards
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt")
_CHUNK = 1 << 20
UNRESOLVED = "unresolved"
_file_hashes: dict[tuple[str, int, int], str] = {}
_unresolved: list[str] | None = None  # collects unresolvable Hub ids inside `provisional()`


def data_fingerprint(task: Task, data_dir: str | None) -> str:
    """16 hex digits naming the data the loader reads for `task` from `data_dir` (its local layout) or, if None, the Hub.

    Local data is named by the contents of its files, each under its role (train, dev, ...), so the fingerprint
    survives moving the folder and changes with any byte of any file read. Hub data is named by the commit its
    dataset repository resolves to (from the local cache when offline). Missing data raises the loader's TicketsError.
    """
    kind = get_kind(task.kind)
    if data_dir is None:
        repo, config, roles = kind.hub_source(task)
        parts = ["hub", repo, config, _revision(repo, "dataset"), *roles]
    else:
        files = kind.data_files(task, data_dir)
        parts = ["local", *(f"{role}={path.name}:{file_hash(path)}" for role, path in files)]
    return _digest(parts)[:16]


def model_identity(name: str | None) -> str:
    """The identity of the model `name` (as resolve_model takes it): 'sha256:<16 hex>' or 'hub:<id>@<commit>'.

    Local weights are named by the contents of their weights, config and tokenizer files; tiny-random-bert by the
    recipe it is built from; a Hub id by the commit its default revision resolves to (from the local cache when offline).
    """
    source = resolve_model(name)
    if source.random_init:
        recipe = json.dumps(TINY_CONFIG, sort_keys=True)
        parts = [source.model_id, recipe, *_folder_parts(Path(source.path), ["config.json", *TOKENIZER_FILES])]
    elif os.path.isdir(source.path):
        folder = Path(source.path)
        parts = _folder_parts(folder, [*_weight_files(folder), "config.json", *TOKENIZER_FILES])
    else:
        return f"hub:{source.model_id}@{_revision(source.model_id, 'model')}"
    return "sha256:" + _digest(parts)[:16]


@contextmanager
def provisional() -> Iterator[list[str]]:
    """Within this context a Hub model or dataset whose revision cannot be resolved (offline and not cached) is named
    'unresolved' instead of failing, for plans that only show what would run; the list yielded collects their ids."""
    global _unresolved
    outer, _unresolved = _unresolved, []
    try:
        yield _unresolved
    finally:
        _unresolved = outer


def _revision(repo_id: str, repo_type: str) -> str:
    try:
        return _hub_revision(repo_id, repo_type)
    except TicketsError:
        if _unresolved is None:
            raise
        _unresolved.append(repo_id)
        return UNRESOLVED


def _hub_revision(repo_id: str, repo_type: str) -> str:
    revision, problem = _hub_lookup(repo_id, repo_type)
    if problem is not None:
        raise TicketsError(problem)
    return revision


@lru_cache(maxsize=None)
def _hub_lookup(repo_id: str, repo_type: str) -> tuple[str | None, str | None]:
    """The Hub revision of a repo, or why it cannot be had; a failure is remembered too, so an unreachable Hub is asked
    once per process, not once per planned piece."""
    try:
        from huggingface_hub import is_offline_mode, resolve_revision

        return resolve_revision(repo_id, repo_type=repo_type, local_files_only=is_offline_mode()).resolved, None
    except Exception as exc:  # not found, gated, unreachable and uncached: the fix is the same
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        fix = "pass a local folder" if repo_type == "model" else "pass --data-dir with a local copy"
        return None, (f"cannot resolve the revision of {repo_type} '{repo_id}' on the Hugging Face Hub: {reason}; "
                      f"{fix}")


def _weight_files(folder: Path) -> list[str]:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            if not name.endswith(".index.json"):
                return [name]
            shards = json.loads((folder / name).read_text(encoding="utf-8")).get("weight_map", {}).values()
            return [name, *sorted(set(shards))]
    raise TicketsError(f"model folder '{folder}' has no weights file (none of {', '.join(WEIGHT_FILES)})")


def _folder_parts(folder: Path, names: list[str]) -> list[str]:
    """'name:hash' for each of `names` in `folder`; optional files that are absent are left out."""
    parts = []
    for name in names:
        path = folder / name
        if path.is_file():
            parts.append(f"{name}:{file_hash(path)}")
        elif name not in TOKENIZER_FILES:
            raise TicketsError(f"model file not found: {path}")
    return parts


def file_hash(path: Path | str) -> str:
    """The sha256 of a file's bytes, hashed once per file version (path, size, modification time)."""
    path = Path(path)
    resolved = path.resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    if key not in _file_hashes:
        digest = hashlib.sha256()
        with open(resolved, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        _file_hashes[key] = digest.hexdigest()
    return _file_hashes[key]


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()
