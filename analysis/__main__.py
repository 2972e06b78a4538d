"""Command line: `python -m analysis report ...`, `python -m analysis compare ...`, `python -m analysis early ...`."""

from __future__ import annotations

import argparse
import os
import sys

from .errors import AnalysisError


def build_parser() -> argparse.ArgumentParser:
    """The `python -m analysis` command line: report, compare, early."""
    parser = argparse.ArgumentParser(prog="python -m analysis",
                                     description="Seed-variance reports of lottery-ticket sweeps tracked in MLflow.")
    commands = parser.add_subparsers(dest="command", required=True)
    uri_help = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns.db in the current folder)"

    report = commands.add_parser("report", help="tables, plots and report.md/report.html for one experiment")
    report.add_argument("--experiment", required=True, help="experiment name (the sweep spec's name)")
    report.add_argument("--tracking-uri", help=uri_help)
    report.add_argument("--out", required=True, help="output folder")
    level = report.add_mutually_exclusive_group()
    level.add_argument("--overlap-level", type=int, help="IMP level whose masks are compared (per-layer sparsity, "
                                                         "overlap); default: deepest level all finished runs reached")
    level.add_argument("--overlap-sparsity", type=float, help="compare masks at the level nearest this sparsity (0-1)")
    report.add_argument("--no-masks", action="store_true", help="do not download masks (no mask plots)")

    compare = commands.add_parser("compare", help="the same task/method/sparsity cells of several experiments")
    compare.add_argument("--experiment", action="append", required=True, help="experiment name (give two or more)")
    compare.add_argument("--tracking-uri", help=uri_help)
    compare.add_argument("--out", required=True, help="output folder")

    early = commands.add_parser("early", help="an early-stopped IMP sweep (early tickets) against a full-IMP sweep")
    early.add_argument("--experiment", required=True, help="the early-stopped sweep's experiment name")
    early.add_argument("--against", required=True, help="the full-IMP sweep's experiment name (the same spec without "
                                                        "early_stop)")
    early.add_argument("--tracking-uri", help=uri_help)
    early.add_argument("--out", default=None, help="output folder (default: reports/EXPERIMENT_early)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; user errors print one line on stderr and return 2."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args = build_parser().parse_args(argv)
    if args.command == "early" and args.out is None:
        args.out = os.path.join("reports", f"{args.experiment}_early")
    from mlflow.exceptions import MlflowException

    from cluster.tracking import resolve_tracking_uri
    from tickets.errors import TicketsError
    from tickets.records import check_writable_folder

    from .collect import open_client

    try:
        if args.command == "report" and args.overlap_sparsity is not None and not 0 <= args.overlap_sparsity <= 1:
            raise AnalysisError(f"--overlap-sparsity must be a fraction in [0, 1], got {args.overlap_sparsity}")
        if args.command == "compare" and len(args.experiment) < 2:
            raise AnalysisError("compare needs at least two --experiment")
        check_writable_folder(args.out)
        client = open_client(resolve_tracking_uri(args.tracking_uri))
        if args.command == "report":
            from .report import write_report

            path = write_report(client, args.experiment, args.out, args.overlap_level, args.overlap_sparsity,
                                masks=not args.no_masks)
        elif args.command == "early":
            from .early import write_early_report

            path = write_early_report(client, args.experiment, args.against, args.out)
        else:
            from .compare import write_comparison

            path = write_comparison(client, args.experiment, args.out)
    except (AnalysisError, TicketsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MlflowException as exc:
        print(f"error: the tracking store failed: {str(exc.message).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    beside = {"report": "report.html", "early": "early.html"}.get(args.command)
    print(f"wrote {path} (and {beside}, CSV tables and PNG plots beside it)" if beside else f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
