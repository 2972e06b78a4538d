"""MkDocs hook: the sweep spec's field reference, generated at build time from the spec's pydantic models
(sweeps.spec.Spec and its sections) and the engine settings they derive from (tickets.settings), so it cannot drift.

A page holding the line `<!-- spec-reference -->` gets, in its place, one table per spec section: every field's
dotted name, type, default, valid range or choices, and help. `python docs/hooks/spec_reference.py` prints it.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union

import annotated_types
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

MARKER = "<!-- spec-reference -->"


def nested_models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (Model, Model | None, list[Model], dict[str, Model], Annotated[...])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in nested_models(arg)]


def spec_fields(model: type[BaseModel], prefix: str = "", seen: set | None = None) -> list[tuple[str, type, str, Any]]:
    """(dotted name, section model, field name, FieldInfo) of every field of `model` and of the sections it nests, in
    declaration order; a section met a second time (e.g. `recipes:` values, which are `training:` sections) is not
    repeated."""
    seen = set() if seen is None else seen
    seen.add(model)
    rows = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        rows.append((path, model, name, info))
        for nested in nested_models(info.annotation):
            if nested not in seen:
                rows += spec_fields(nested, f"{path}.", seen)
    return rows


def type_text(annotation: Any) -> str:
    """An annotation in words: 'int', 'list of str', 'float or null', 'one of: a, b', 'mapping task -> Training'."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin is Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        inner = [type_text(a) for a in args if a is not type(None)]
        return " or ".join(inner) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {type_text(args[0])}"
    if origin is dict:
        return f"mapping of {type_text(args[0])} to {type_text(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"section `{annotation.__name__}`"
    return getattr(annotation, "__name__", str(annotation))


def bounds_text(info: Any) -> str:
    """The range pydantic checks ('>= 0', '> 0, < 1', 'at least 1 item'), from the field's and its type's metadata."""
    metadata = list(info.metadata)
    annotation = info.annotation
    while typing.get_origin(annotation) is typing.Annotated or typing.get_origin(annotation) in (Union, types.UnionType):
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) is typing.Annotated:
            metadata += [m for m in args[1:]]
            annotation = args[0]
        else:
            annotation = next((a for a in args if a is not type(None)), args[0])
    parts = []
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    for item in metadata:
        for attr, symbol in symbols.items():
            if isinstance(item, getattr(annotated_types, attr.capitalize())):
                parts.append(f"{symbol} {getattr(item, attr):g}")
        if isinstance(item, annotated_types.MinLen) and item.min_length:
            parts.append(f"at least {item.min_length} item{'s' if item.min_length > 1 else ''}")
        for attr in ("gt", "ge", "lt", "le"):  # FieldInfo metadata of Annotated[..., Field(ge=...)] (pydantic's form)
            value = getattr(item, attr, None)
            if value is not None and not isinstance(item, annotated_types.BaseMetadata):
                parts.append(f"{symbols[attr]} {value:g}")
    return ", ".join(dict.fromkeys(parts))


def engine_settings() -> dict[str, Any]:
    """The engine's declared settings the spec sections derive from, by name (their choices and ranges)."""
    from tickets.config import EarlyStopConfig, TrainConfig, TrajectoryConfig
    from tickets.settings import settings_of
    from tickets.structured.runs import SearchConfig

    found = {}
    for cls in (TrainConfig, TrajectoryConfig, EarlyStopConfig, SearchConfig):
        for name, declared in settings_of(cls).items():
            found.setdefault(name, declared)
    return found


def default_text(info: Any) -> str:
    """The default as YAML would write it; 'required' when there is none; '(its defaults)' for a section."""
    if info.default_factory is not None:
        value = info.default_factory()
        if isinstance(value, BaseModel):
            return "(its fields' defaults)"
        return "`[]`" if value == [] else "`{}`" if value == {} else f"`{value}`"
    if info.default is PydanticUndefined:
        return "required"
    value = info.default
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def field_help(model: type[BaseModel], info: Any, declared: Any) -> str:
    """The field's description, else the docstring of the section it holds, with the setting's choices."""
    text = info.description or ""
    if not text:
        nested = nested_models(info.annotation)
        text = (nested[0].__doc__ or "").split("\n\n")[0].replace("\n", " ").strip() if nested else ""
    if declared is not None and (declared.help and text.startswith(declared.help)):
        choices = declared.choices()
        if choices:
            text += ". Choices: " + "; ".join(f"`{c}`" + (f" ({h})" if h else "") for c, h in choices.items())
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """Markdown tables of every field of a sweep spec, one table per section."""
    from sweeps.spec import Spec

    settings = engine_settings()
    sections: dict[str, list[str]] = {}
    models: dict[str, type[BaseModel]] = {}
    for path, model, name, info in spec_fields(Spec):
        section = path.rsplit(".", 1)[0] if "." in path else ""
        declared = settings.get(name)
        limits = bounds_text(info) or (declared.range_text() if declared is not None and
                                       info.description and info.description.startswith(declared.help) else "") or ""
        row = (f"| <code id=\"spec-{path.replace('.', '-')}\">{path}</code> | {type_text(info.annotation)} | "
               f"{default_text(info)} | {limits} | {field_help(model, info, declared)} |")
        sections.setdefault(section, []).append(row)
        models.setdefault(section, model)
    out = []
    for section, rows in sections.items():
        out.append(f"### {'Top level' if not section else f'`{section}:`'}\n")
        out.append(" ".join((models[section].__doc__ or "").split()) + "\n")
        out.append("| field | type | default | range | what it is |\n| --- | --- | --- | --- | --- |")
        out.extend(rows)
        out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    """MkDocs hook: put the generated reference where a page asks for it."""
    return markdown.replace(MARKER, render()) if MARKER in markdown else markdown


if __name__ == "__main__":
    print(render())
