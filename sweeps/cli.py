"""`python -m sweeps SPEC`: run a sweep spec on Ray Tune (a local Ray, or RAY_ADDRESS's cluster) and log to MLflow."""

from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console

from cluster.errors import ClusterError
from tickets.errors import TicketsError

from .errors import SweepError

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_parser() -> argparse.ArgumentParser:
    """The `python -m sweeps` argument parser."""
    parser = argparse.ArgumentParser(prog="python -m sweeps", description=__doc__)
    parser.add_argument("spec", help="the sweep spec (YAML), e.g. sweeps/quickstart.yaml")
    parser.add_argument("--dry-run", action="store_true", help="print the trial table and count; start nothing")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else ./mlruns.db)")
    parser.add_argument("--storage", help="results store and Ray trial state (default: the spec's storage)")
    parser.add_argument("--data-dir", help="data folder in GLUE's layout, replacing the spec's data_dir")
    return parser


def run(args: argparse.Namespace, console: Console) -> int:
    """Validate the spec, then print the plan (--dry-run) or run the sweep; returns the exit code."""
    from cluster.tracking import resolve_tracking_uri
    from tickets.provenance import provisional

    from .plan import build_plan
    from .terminal import count_line, print_summary, trial_table
    from .spec import load_spec

    spec = load_spec(args.spec, data_dir=args.data_dir, storage=args.storage)
    if args.dry_run:
        with provisional() as unresolved:
            pieces = build_plan(spec)
        console.print(trial_table(spec, pieces))
        if unresolved:
            console.print(f"[yellow]note[/]: content keys are provisional: the Hub revision of "
                          f"{', '.join(sorted(set(unresolved)))} cannot be resolved here (offline, not cached); a run "
                          "resolves it")
        console.print(count_line(spec, pieces))
        return 0
    from cluster.ray_session import JOB_ENV

    from .runner import run_sweep

    uri = resolve_tracking_uri(args.tracking_uri)
    if JOB_ENV in os.environ:
        for what, where in (("the results store", spec.storage), ("the MLflow store", uri)):
            if os.getcwd() in where:
                console.print(f"[yellow]warning[/]: {what} ({where}) is inside this job's temporary working dir; "
                              "give --storage / --tracking-uri outside it to keep the results")
    with open(args.spec, encoding="utf-8") as handle:
        spec_text = handle.read()
    result = run_sweep(spec, uri, console, project_root=PROJECT_ROOT, spec_text=spec_text)
    print_summary(console, result)
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors print one line and return 2; an interrupt keeps every finished level."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args = build_parser().parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 160)
    try:
        return run(args, console)
    except (SweepError, TicketsError, ClusterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished levels are kept; re-run the same spec to resume", file=sys.stderr)
        return 130
