"""The documentation: the MkDocs site builds with --strict (broken links, missing pages or snippets fail), its spec
reference holds every field of the spec's schema, and every `python -m ...` command in the README and the docs
parses with the real command-line parsers."""

import os
import re
import shlex
import subprocess
import sys
import typing

import pytest
from pydantic import BaseModel

from conftest import REPO

DOCS = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built by `mkdocs build --strict` into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=REPO,
                           capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def _spec_paths(model: type[BaseModel], prefix: str = "", seen: set | None = None) -> list[str]:
    """Every field of the spec as a dotted name (sections nested in lists, dicts and options included)."""
    seen = set() if seen is None else seen
    seen.add(model)
    paths = []
    for name, info in model.model_fields.items():
        paths.append(prefix + name)
        stack = [info.annotation]
        while stack:
            kind = stack.pop()
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                if kind not in seen:
                    paths += _spec_paths(kind, f"{prefix}{name}.", seen)
            else:
                stack.extend(typing.get_args(kind))
    return paths


def test_the_site_builds_strictly_with_every_page(site):
    for page in ("quickstart", "specs", "cluster", "mlflow", "reports", "api", "benchmarks"):
        assert (site / page / "index.html").is_file(), page
    assert "Masking overhead" in (site / "benchmarks" / "index.html").read_text()  # bench/RESULTS.md included
    api = (site / "api" / "index.html").read_text()
    for function in ("load", "summary", "matching", "paired"):
        assert f'id="analysis.api.{function}"' in api, function  # generated from the docstrings


def test_the_spec_reference_has_every_field_of_the_schema(site):
    from sweeps.spec import Spec

    page = (site / "specs" / "index.html").read_text()
    paths = _spec_paths(Spec)
    assert {"name", "pruning.rate", "pruning.early_stop.window", "training.epochs", "branches.kind",
            "resources.gpus", "structured.subnetworks"} <= set(paths)
    missing = [path for path in paths if f">{path}</code>" not in page]
    assert not missing, f"spec fields missing from the spec reference: {missing}"


def _commands() -> list[tuple[str, str, bool]]:
    """(file, command, whole) for every `python -m PACKAGE ...` in the docs: code blocks (whole commands, continuation
    lines joined) and inline code (possibly a fragment of one)."""
    found = []
    for path in DOCS:
        text = path.read_text()
        blocks = re.findall(r"^(?: {4,}|```).*$(?:\n(?: {4,}).*$)*", text, re.MULTILINE)
        for block in blocks:
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                if re.search(r"python -m (sweeps|analysis|cluster|tickets)\b", line):
                    found.append((path.name, line.strip(), True))
        prose = re.sub(r"^(?: {4,}|```).*$", "", text, flags=re.MULTILINE)
        for span in re.findall(r"`([^`]*python -m (?:sweeps|analysis|cluster|tickets)\b[^`]*)`", prose):
            found.append((path.name, " ".join(span.split()), False))
    return found


def _parsers():
    from analysis.__main__ import build_parser as analysis_parser
    from cluster.cli import build_parser as cluster_parser
    from sweeps.cli import build_parser as sweeps_parser
    from tickets.cli import build_parser as tickets_parser

    return {"sweeps": sweeps_parser(), "analysis": analysis_parser(), "cluster": cluster_parser(),
            "tickets": tickets_parser()}


def test_every_documented_command_parses(capsys):
    parsers = _parsers()
    commands = _commands()
    assert len(commands) > 15 and {c[1].split(" -m ")[1].split()[0] for c in commands} == set(parsers)
    for where, command, whole in commands:
        tokens = shlex.split(re.sub(r"\{(\w+),[^}]*\}", r"\1", command), comments=True)
        start = next(i for i, t in enumerate(tokens) if t.endswith("python") and tokens[i + 1:i + 2] == ["-m"])
        package, args = tokens[start + 2], tokens[start + 3:]
        args = args[:next((i for i, t in enumerate(args) if t in ("&&", "|", ";")), len(args))]
        if not args and not whole:
            continue  # a mention of the package itself
        try:
            parsers[package].parse_args(args)
        except SystemExit as exc:
            error = capsys.readouterr().err
            fragment = not whole and "the following arguments are required" in error
            assert exc.code == 0 or fragment, f"{where}: `{command}` does not parse: {error.strip()}"
