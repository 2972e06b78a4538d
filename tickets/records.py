"""Finished-result folders: written atomically, recognised by their metrics.json."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Callable

from .errors import TicketsError
from .paths import METRICS


def read_json(path: str) -> dict:
    """A JSON file's content, or a clear error when it is unreadable (missing, not UTF-8, not JSON)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:
        raise TicketsError(f"cannot read '{path}': {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise TicketsError(f"cannot read '{path}': not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                           f"{exc.start}); it is damaged") from exc
    except json.JSONDecodeError as exc:
        raise TicketsError(f"cannot read '{path}': not valid JSON ({exc})") from exc


def check_writable_folder(path: str, what: str = "output folder") -> None:
    """Fail with one clear line unless `path` is, or can be created as, a folder this process can write in.

    Writing is tried (a temporary folder made and removed in `path`, or in its nearest existing parent), since
    permission bits say nothing for root and nothing for read-only or virtual file systems."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise TicketsError(f"{what} '{path}' is a file, not a folder")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise TicketsError(f"{what} '{path}' cannot be created: '{existing}' is a file")
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".write-check-"))
    except OSError as exc:
        raise TicketsError(f"{what} '{path}' cannot be written: making a folder in '{existing}' fails "
                           f"({exc.strerror or exc})") from None


def write_json(path: str, data: dict) -> None:
    """Write JSON atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)


def finished_metrics(directory: str) -> dict | None:
    """The metrics.json of a finished result folder, or None when it is not finished."""
    path = os.path.join(directory, METRICS)
    return read_json(path) if os.path.isfile(path) else None


def reusable_metrics(directory: str, content_key: str) -> dict | None:
    """The finished metrics.json in `directory` marked reused, if it was produced with `content_key`; else None."""
    existing = finished_metrics(directory)
    if existing is not None and existing.get("content_key") == content_key:
        return {**existing, "reused": True}
    return None


def write_result_dir(directory: str, fill: Callable[[str], None], metrics: dict) -> None:
    """Create `directory` atomically: `fill(tmp)` writes the files, then metrics.json marks it finished."""
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".partial-")
    try:
        fill(tmp)
        write_json(os.path.join(tmp, METRICS), metrics)
        if os.path.isdir(directory):
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
