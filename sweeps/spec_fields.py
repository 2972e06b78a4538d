"""Spec fields derived from the engine's declared settings (tickets.settings): type, default, range, choices, help."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Optional

from pydantic import BeforeValidator, Field, PlainValidator

from tickets.settings import Setting, settings_of


def as_list(value: Any) -> Any:
    """A single value as a one-value list (a list field may be given one bare value); anything else unchanged."""
    return [value] if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value


def value_type(declared: Setting) -> Any:
    """The pydantic type of one value of a setting: its type with its range, or checked against its choices with the
    engine's message; None is allowed where the setting allows it."""
    if declared.choices_from is not None:
        kind = Annotated[declared.type, PlainValidator(_checker(declared))]
    elif declared.bounds:
        kind = Annotated[declared.type, Field(**declared.bounds)]
    else:
        kind = declared.type
    return Optional[kind] if declared.optional else kind


def spec_field(declared: Setting) -> tuple[Any, Any]:
    """A pydantic field definition of one setting: its value type, its default, its help as the description."""
    return value_type(declared), Field(default=declared.default, description=declared.help)


def spec_fields(cls: type, names: Sequence[str] | None = None) -> dict[str, tuple[Any, Any]]:
    """The pydantic field definitions of the named settings of a settings dataclass (all of them by default)."""
    return {name: spec_field(declared) for name, declared in settings_of(cls, names).items()}


def spec_list(declared: Setting, element: Any = None) -> tuple[Any, Any]:
    """A list-valued field sweeping a setting: one or more values (a bare value is a list of one), each checked as the
    setting's (or as `element`), the setting's default as the one-value default."""
    kind = Annotated[list[element or value_type(declared)], BeforeValidator(as_list), Field(min_length=1)]
    return kind, Field(default=[declared.default], description=f"{declared.help} (one value or a list)")


def _checker(declared: Setting):
    def check(value: Any) -> Any:
        problem = declared.problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    return check
