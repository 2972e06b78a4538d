"""User-facing errors of the sweep front door: the CLI prints them on one line and exits with code 2."""

from __future__ import annotations


class SweepError(Exception):
    """A mistake the user can fix (a bad spec, an unusable cluster or storage)."""


class SpecError(SweepError):
    """A bad sweep spec: names the file, the line and the field."""

    def __init__(self, source: str, line: int | None, field: str | None, message: str):
        self.source, self.line, self.field, self.message = source, line, field, message
        where = source if line is None else f"{source}, line {line}"
        what = f"{field}: {message}" if field else message
        super().__init__(f"{where}: {what}")
