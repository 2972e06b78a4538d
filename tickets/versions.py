"""The versions of the libraries a result was computed with: a record kept beside each result, never part of a key."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

LIBRARIES = ("torch", "transformers", "deepspeed")


def library_versions() -> dict[str, str | None]:
    """The installed version of torch, transformers and deepspeed, by name (None for one that is not installed),
    read from the packages' metadata without importing them."""
    found: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found
