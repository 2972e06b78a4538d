"""Settings declared once: a dataclass field carries its default, type, one-line help, valid range and choices.

The `python -m tickets` flags (tickets.flags) and the sweep spec sections (sweeps.spec_fields) are derived from these
fields, and `check` validates a settings object against them.
"""

from __future__ import annotations

import dataclasses
import operator
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass
from typing import Any

from .errors import TicketsError

Choices = Sequence[str] | Mapping[str, str]
_KEY = "setting"
_COMPARE = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}


@dataclass(frozen=True)
class Setting:
    """What one settings field declares: name, value type (and whether None is allowed), default (MISSING: required),
    help, bounds (gt, ge, lt, le), choices, the name its error messages use, and CLI flags not derived from the name."""

    name: str
    type: type
    optional: bool
    default: Any
    help: str
    bounds: dict[str, float]
    label: str
    flag: str | None = None
    off_flag: str | None = None
    choices_from: Choices | Callable[[], Choices] | None = None

    def choices(self) -> dict[str, str] | None:
        """The valid values, each with its one-line help ('' where none is given); None: any value of the type."""
        found = self.choices_from() if callable(self.choices_from) else self.choices_from
        if found is None:
            return None
        return dict(found) if isinstance(found, Mapping) else dict.fromkeys(found, "")

    def range_text(self) -> str | None:
        """The valid range in words ('positive', '>= 0', 'in [0, 1)', 'strictly between 0 and 1'); None: unbounded."""
        b = self.bounds
        low = ("gt", b["gt"]) if "gt" in b else ("ge", b["ge"]) if "ge" in b else None
        high = ("lt", b["lt"]) if "lt" in b else ("le", b["le"]) if "le" in b else None
        if low and high:
            if low[0] == "gt" and high[0] == "lt":
                return f"strictly between {low[1]:g} and {high[1]:g}"
            return f"in {'(' if low[0] == 'gt' else '['}{low[1]:g}, {high[1]:g}{')' if high[0] == 'lt' else ']'}"
        if low == ("gt", 0):
            return "positive"
        symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
        bound = low or high
        return f"{symbols[bound[0]]} {bound[1]:g}" if bound else None

    def problem(self, value: Any) -> str | None:
        """Why `value` is not valid for this setting (one line naming it), or None when it is."""
        if value is None and self.optional:
            return None
        choices = self.choices()
        if choices is not None and (not isinstance(value, str) or value not in choices):
            return f"unknown {self.label} {value!r}; choose one of {', '.join(choices)}"
        if self.bounds and not _within(value, self.bounds):
            return f"{self.label} must be {self.range_text()}, got {value}"
        return None


def setting(default: Any = MISSING, help: str = "", *, default_factory: Callable[[], Any] | None = None,
            gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None,
            choices: Choices | Callable[[], Choices] | None = None, label: str | None = None, flag: str | None = None,
            off_flag: str | None = None) -> Any:
    """A dataclass field declaring one setting: its default (or default_factory; neither: required), a one-line help
    (for a bool, what True does, as a verb phrase), the valid range, the valid choices (names, names with their helps,
    or a registry callable giving either), the name error messages use (default: the field's), and the CLI flags
    where they differ from `--field-name` (`flag`; `off_flag` turns a bool setting off)."""
    bounds = {k: v for k, v in (("gt", gt), ("ge", ge), ("lt", lt), ("le", le)) if v is not None}
    metadata = {_KEY: {"help": help, "bounds": bounds, "choices_from": choices, "label": label, "flag": flag,
                       "off_flag": off_flag}}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def settings_of(cls: type, names: Sequence[str] | None = None) -> dict[str, Setting]:
    """The settings a dataclass declares with `setting`, by name, in field order (only `names`, in their order)."""
    hints = typing.get_type_hints(cls)
    found = {}
    for f in dataclasses.fields(cls):
        if _KEY not in f.metadata:
            continue
        declared = dict(f.metadata[_KEY])
        value_type, optional = _unwrap_optional(hints[f.name])
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        found[f.name] = Setting(f.name, value_type, optional, default, declared.pop("help"), declared.pop("bounds"),
                                declared.pop("label") or f.name, **declared)
    return found if names is None else {name: found[name] for name in names}


def check(settings: Any) -> None:
    """Raise a TicketsError naming the first setting of a settings dataclass whose value is out of range or unknown."""
    for name, declared in settings_of(type(settings)).items():
        problem = declared.problem(getattr(settings, name))
        if problem is not None:
            raise TicketsError(problem)


def _unwrap_optional(hint: Any) -> tuple[type, bool]:
    args = typing.get_args(hint)
    if (typing.get_origin(hint) in (typing.Union, types.UnionType)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


def _within(value: Any, bounds: dict[str, float]) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return all(_COMPARE[kind](value, bound) for kind, bound in bounds.items())
