"""Loading YAML while remembering the file line of every key and list item, for error messages."""

from __future__ import annotations

from typing import Any

import yaml

from .errors import SpecError

Path = tuple[str | int, ...]


def load_with_lines(text: str, source: str) -> tuple[Any, dict[Path, int]]:
    """Parse YAML `text`; return the data and a map from each key/index path to its 1-based line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise SpecError(source, line, None, f"not valid YAML: {exc.problem or exc.context}") from None
    except yaml.reader.ReaderError as exc:
        line = text[:exc.position].count("\n") + 1
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise SpecError(source, line, None, f"not valid YAML: character {char} is not allowed in YAML text "
                                            "(a binary file?)") from None
    except yaml.YAMLError as exc:
        raise SpecError(source, None, None, f"not valid YAML: {str(exc).splitlines()[0]}") from None
    lines: dict[Path, int] = {(): 1}
    if node is not None:
        _walk(node, (), lines, source)
    return data, lines


def _walk(node: yaml.Node, path: Path, lines: dict[Path, int], source: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                field = ".".join(str(p) for p in (*path, key))
                raise SpecError(source, line, field, f"duplicate key (first given on line {seen[key]})")
            seen[key] = line
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _walk(item, (*path, index), lines, source)


def line_of(lines: dict[Path, int], loc: Path) -> int | None:
    """The line of the longest prefix of `loc` that the file spells out (a missing field: its parent's line)."""
    best = lines.get(())
    for end in range(1, len(loc) + 1):
        if loc[:end] in lines:
            best = lines[loc[:end]]
    return best
