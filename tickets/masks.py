"""Masks: one boolean tensor per prunable weight, stored bit-packed in safetensors with metadata. Never pickled.

Format versions: 2 (written now) stores a content hash over names, shapes and bits and a metadata hash over every
metadata entry and the content hash, so an edited level number or source task is refused like flipped bits; 1 (older
result stores) has the content hash only, and is read and verified that way.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from .errors import TicketsError
from .paths import GOOD_MASK, MASK

FORMAT_VERSION = "2"
READABLE_VERSIONS = ("1", "2")  # format 1: content hash only, metadata unverified
_DERIVED = {"shapes", "content_hash", "sparsity", "metadata_hash"}
_RESERVED = _DERIVED | {"format_version"}


@dataclass
class Mask:
    """Boolean keep-masks by encoder-relative parameter name (True = weight kept), plus metadata."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Number of weights the mask covers."""
        return sum(t.numel() for t in self.tensors.values())

    @property
    def sparsity(self) -> float:
        """Fraction of covered weights that are pruned."""
        kept = sum(int(t.sum()) for t in self.tensors.values())
        return 1.0 - kept / self.total

    def layer_sparsity(self) -> dict[str, float]:
        """Fraction pruned in each tensor."""
        return {n: 1.0 - float(t.float().mean()) for n, t in self.tensors.items()}

    def shapes(self) -> dict[str, list[int]]:
        """Shape of each tensor the mask covers."""
        return {n: list(t.shape) for n, t in self.tensors.items()}

    def content_hash(self) -> str:
        """SHA-256 over names, shapes and bits: equal hashes mean equal masks."""
        return _hash(self.shapes(), _pack(self.tensors))

    def check_shapes(self, expected: dict[str, tuple[int, ...]], what: str = "the model") -> None:
        """Raise naming the first tensor missing from `expected` or of another shape."""
        for name, tensor in self.tensors.items():
            if name not in expected:
                raise TicketsError(f"mask tensor '{name}' does not exist in {what} (mask from another architecture?)")
            if tuple(tensor.shape) != tuple(expected[name]):
                raise TicketsError(
                    f"mask tensor '{name}' has shape {tuple(tensor.shape)} but {what} has {tuple(expected[name])}"
                )

    def save(self, path: str) -> None:
        """Write atomically as bit-packed safetensors with metadata, content hash and metadata hash."""
        packed = _pack(self.tensors)
        meta = {k: str(v) for k, v in self.metadata.items() if k not in _RESERVED}
        meta.update(
            format_version=FORMAT_VERSION,
            shapes=json.dumps(self.shapes()),
            sparsity=f"{self.sparsity:.8f}",
            content_hash=_hash(self.shapes(), packed),
        )
        meta["metadata_hash"] = _metadata_hash(meta)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        os.close(fd)
        try:
            save_file(packed, tmp, metadata=meta)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    @classmethod
    def load(cls, path: str) -> Mask:
        """Read a mask file, checking its format, content hash and (format 2 on) metadata hash."""
        if os.path.isdir(path):
            inside = [name for name in (MASK, GOOD_MASK) if os.path.isfile(os.path.join(path, name))]
            hint = f" (did you mean '{os.path.join(path, inside[0])}'?)" if inside else ""
            raise TicketsError(f"'{path}' is a folder, not a mask file{hint}")
        if not os.path.isfile(path):
            raise TicketsError(f"mask file '{path}' does not exist")
        try:
            from safetensors import safe_open

            with safe_open(path, framework="np") as handle:
                meta = dict(handle.metadata() or {})
            packed = load_file(path)
        except (SafetensorError, OSError, ValueError) as exc:
            raise TicketsError(f"cannot read mask file '{path}': not a safetensors mask ({exc})") from exc
        version = meta.get("format_version")
        if "shapes" not in meta or version is None:
            raise TicketsError(f"'{path}' is a safetensors file but not a mask file (no mask format version)")
        if version not in READABLE_VERSIONS:
            raise TicketsError(f"mask file '{path}' has format version {version}, which this code cannot read "
                               f"(it reads versions {', '.join(READABLE_VERSIONS)}); use the code that wrote it")
        try:
            shapes = json.loads(meta["shapes"])
        except ValueError:
            raise TicketsError(f"mask file '{path}' is corrupt: its tensor shapes are not readable") from None
        if not isinstance(shapes, dict) or set(shapes) != set(packed):
            raise TicketsError(f"mask file '{path}' is corrupt: tensor names do not match its metadata")
        if _hash(shapes, packed) != meta.get("content_hash"):
            raise TicketsError(f"mask file '{path}' is corrupt: content hash does not match")
        if version != "1" and _metadata_hash(meta) != meta.get("metadata_hash"):
            raise TicketsError(f"mask file '{path}' is corrupt: its metadata (level, task, ...) was changed after it "
                               "was written (metadata hash does not match)")
        tensors = {n: _unpack(packed[n], shapes[n]) for n in shapes}
        return cls(tensors, {k: v for k, v in meta.items() if k not in _DERIVED})


def overlap(a: Mask, b: Mask) -> dict[str, float]:
    """Jaccard similarity of the kept weights and normalised Hamming distance between two masks of the same shapes."""
    a.check_shapes({n: tuple(t.shape) for n, t in b.tensors.items()}, "the other mask")
    inter = union = differ = total = 0
    for name, ta in a.tensors.items():
        tb = b.tensors[name]
        inter += int((ta & tb).sum())
        union += int((ta | tb).sum())
        differ += int((ta ^ tb).sum())
        total += ta.numel()
    return {"jaccard": inter / union if union else 1.0, "hamming": differ / total}


def _pack(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {n: np.packbits(t.detach().cpu().numpy().astype(bool).ravel()) for n, t in tensors.items()}


def _unpack(packed: np.ndarray, shape: list[int]) -> torch.Tensor:
    count = int(np.prod(shape)) if shape else 1
    return torch.from_numpy(np.unpackbits(packed, count=count).astype(bool).reshape(shape))


def _hash(shapes: dict[str, list[int]], packed: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(shapes):
        digest.update(name.encode())
        digest.update(json.dumps(shapes[name]).encode())
        digest.update(packed[name].tobytes())
    return digest.hexdigest()


def _metadata_hash(meta: dict[str, str]) -> str:
    """SHA-256 over every stored metadata entry but the metadata hash itself (the content hash among them)."""
    entries = {k: v for k, v in meta.items() if k != "metadata_hash"}
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()
