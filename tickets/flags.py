"""Command-line flags derived from declared settings (tickets.settings): name, type, help, range and choices.

A flag is `--field-name` unless the setting names another; a bool setting is a switch that flips its default
(`--no-field-name` for one that is on by default; a pair of switches for one whose default None means "decided
later"). Every flag defaults to None, so a recipe read from a folder keeps what the command line leaves out.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from .settings import Setting, settings_of


def add_flags(parser: argparse.ArgumentParser, cls: type, names: Sequence[str] | None = None) -> None:
    """Add the flag of each named setting (default: every setting) of the dataclass `cls` to `parser` (or an argument
    group)."""
    for declared in settings_of(cls, names).values():
        if declared.type is bool:
            _add_switch(parser, declared)
            continue
        choices = declared.choices()
        parser.add_argument(declared.flag or _flag(declared.name), dest=declared.name, type=declared.type,
                            choices=None if choices is None else list(choices), default=None,
                            help=_flag_help(declared))


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The settings of the dataclass `cls` that the command line gave (by name)."""
    return {name: getattr(args, name) for name in settings_of(cls) if getattr(args, name, None) is not None}


def _flag_help(declared: Setting) -> str:
    """A setting's help with its valid range and, for choices that have one, each choice's help."""
    text = declared.help
    if declared.range_text():
        text += f"; must be {declared.range_text()}"
    helps = {name: h for name, h in (declared.choices() or {}).items() if h}
    if helps:
        text += "; " + "; ".join(f"{name}: {h}" for name, h in helps.items())
    return text


def _add_switch(parser, declared: Setting) -> None:
    if declared.default is True:
        parser.add_argument(declared.off_flag or _flag("no_" + declared.name), dest=declared.name,
                            action="store_false", default=None, help=f"do not {declared.help}")
        return
    on = declared.flag or _flag(declared.name)
    if declared.default is False:
        parser.add_argument(on, dest=declared.name, action="store_true", default=None, help=declared.help)
        return
    pair = parser.add_mutually_exclusive_group()
    pair.add_argument(on, dest=declared.name, action="store_true", default=None, help=declared.help)
    pair.add_argument(declared.off_flag or _flag("no_" + declared.name), dest=declared.name, action="store_false",
                      help=f"do not {declared.help}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
