"""`python -m sweeps SPEC`: run a sweep spec on Ray Tune (a local Ray, or RAY_ADDRESS's cluster) and log to MLflow."""

from __future__ import annotations

import argparse
import os
import signal
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
    parser.add_argument("--storage", help="results store and Ray trial state: a folder, or an object store such as "
                                          "s3://bucket/prefix (default: the spec's storage)")
    parser.add_argument("--device", help="--dry-run: the device class of the cost estimate: A100, H100, H200 or CPU "
                                         "(default: H100 for a spec whose trials ask for GPUs, else CPU)")
    parser.add_argument("--bench-json",
                        help="--dry-run: bench/gpu.py's results, whose measured throughput replaces the assumed one "
                             "where it has the model and device (default: runs/bench_gpu.json)")
    parser.add_argument("--data-dir", help="data folder in GLUE's layout, or its URI (s3://...), replacing the spec's "
                                           "data_dir")
    return parser


def run(args: argparse.Namespace, console: Console) -> int:
    """Validate the spec, then print the plan (--dry-run) or run the sweep; returns the exit code."""
    from cluster.tracking import resolve_tracking_uri
    from tickets.provenance import provisional

    from .cost import estimate, get_device, held_runs
    from .plan import build_plan
    from .terminal import cost_lines, cost_table, count_line, print_summary, trial_table
    from .spec import load_spec

    if not args.dry_run and (args.device or args.bench_json):
        raise SweepError("--device and --bench-json set the cost estimate of --dry-run; add --dry-run")
    if args.bench_json and not os.path.isfile(args.bench_json):
        raise SweepError(f"--bench-json: no file '{args.bench_json}' (bench/gpu.py writes runs/bench_gpu.json)")
    device = get_device(args.device) if args.device is not None else None
    spec = load_spec(args.spec, data_dir=args.data_dir, storage=args.storage)
    if args.dry_run:
        with provisional() as unresolved:
            pieces = build_plan(spec)
            held = held_runs(spec.storage, pieces)
            device = device or get_device("H100" if spec.resources.gpus else "CPU")
            cost = estimate(pieces, held, device, spec.resources.cpus, set(unresolved), args.bench_json)
        console.print(trial_table(spec, pieces, held))
        if unresolved:
            console.print(f"[yellow]note[/]: content keys are provisional: the Hub revision of "
                          f"{', '.join(sorted(set(unresolved)))} cannot be resolved here (offline, not cached); a run "
                          "resolves it")
        console.print(count_line(spec, pieces))
        console.print(cost_table(spec.name, cost))
        for line in cost_lines(cost):
            console.print(line, soft_wrap=True, markup=False)
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
    return 0 if result.ok else result.exit_code or 1


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors print one line and return 2; an interrupt (Ctrl-C, or SIGTERM from `ray job stop`)
    keeps every finished level and returns 128 + the signal's number."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args = build_parser().parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 160)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return run(args, console)
    except (SweepError, TicketsError, ClusterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("interrupted: finished levels are kept; re-run the same spec to resume", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous or signal.SIG_DFL)  # None: a handler set outside Python


class Terminated(KeyboardInterrupt):
    """SIGTERM (`ray job stop`, `kill`) outside the Tune run: handled as Ctrl-C."""


def _terminated(signum: int, frame) -> None:
    raise Terminated
