"""`python -m tickets`: run one IMP trajectory, one branch, or inspect masks."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace

from .branches import BRANCH_KINDS, BRANCHES, DEFAULT_REINIT_SCOPE, REINIT_SCOPES
from .cli_recipe import add_recipe_args, recipe_from
from .cli_structured import register as register_structured
from .config import EarlyStopConfig, TrajectoryConfig
from .errors import TicketsError
from .flags import add_flags, given
from .masks import Mask, overlap
from .pruning import levels_for_sparsity
from .records import check_writable_folder
from .structured.structure import KIND as STRUCTURED_KIND


def imp_recipe(args: argparse.Namespace) -> TrajectoryConfig:
    """The trajectory an `imp` command line asks for (--target-sparsity: run enough levels to reach it)."""
    cfg = recipe_from(args, TrajectoryConfig(task=args.task or ""))
    cfg = replace(cfg, early_stop=replace(cfg.early_stop, **given(args, EarlyStopConfig)))
    if args.target_sparsity is not None:
        cfg = cfg.with_levels(levels_for_sparsity(args.target_sparsity, cfg.rate, cfg.schedule))
    return cfg


def cmd_imp(args: argparse.Namespace) -> None:
    """Run (or resume) one IMP trajectory."""
    from .imp import run_trajectory

    cfg = imp_recipe(args).validate()

    def report(result) -> None:
        m = result.metrics
        status = "done earlier" if result.reused else f"{m['wall_time_s']:.0f}s"
        scores = ", ".join(f"{k}={v:.4f}" for k, v in m["metrics"].items())
        print(f"level {result.level}: sparsity {m['sparsity']:.4f}  {scores}  ({status})", flush=True)

    run_trajectory(cfg, args.out, on_level=report, progress=not args.no_progress)
    print(f"trajectory written to {args.out}")


def cmd_branch(args: argparse.Namespace) -> None:
    """Run one branch of a trajectory level (standard pruning: its chain of levels up to that level)."""
    from .branches import BranchConfig, get_branch_kind, run_branch
    from .paths import TRAJECTORY_SETTINGS
    from .records import read_json
    from .standard import run_standard

    if args.kind == "transfer" and not args.task:
        raise TicketsError("branch transfer needs --task: the target task to train the source task's mask on")
    base = TrajectoryConfig(task=args.task or "")
    if args.trajectory:
        path = os.path.join(args.trajectory, TRAJECTORY_SETTINGS)
        if not os.path.isfile(path):
            raise TicketsError(f"'{args.trajectory}' is not a trajectory folder (no {TRAJECTORY_SETTINGS})")
        base = TrajectoryConfig.from_dict(read_json(path)["config"])
    recipe = recipe_from(args, base)
    if get_branch_kind(args.kind).chain:
        if not args.trajectory:
            raise TicketsError(f"branch '{args.kind}' needs --trajectory (the folder of the IMP run it branches from)")
        level = int(Mask.load(args.mask).metadata.get("level", 0))
        if level < 1:
            raise TicketsError(f"branch '{args.kind}' needs the mask of a pruned level (level >= 1), got level {level}")
        for result in run_standard(recipe.with_levels(level), args.trajectory, args.out, progress=not args.no_progress):
            _print_branch(f"{args.kind} level {result.level}", result.metrics, result.directory)
        return
    cfg = BranchConfig(args.kind, recipe, args.mask, args.trajectory, args.reinit_scope)
    _print_branch(args.kind, run_branch(cfg, args.out, progress=not args.no_progress), args.out)


def _print_branch(what: str, metrics: dict, out: str) -> None:
    scores = ", ".join(f"{k}={v:.4f}" for k, v in metrics["metrics"].items())
    print(f"{what}: sparsity {metrics['sparsity']:.4f}  {scores}  -> {out}")


def cmd_mask_info(args: argparse.Namespace) -> None:
    """Print a mask's metadata and its sparsity overall and per tensor."""
    mask = Mask.load(args.file)
    if args.json:
        print(json.dumps({"metadata": mask.metadata, "sparsity": mask.sparsity, "layers": mask.layer_sparsity(),
                          "content_hash": mask.content_hash()}, indent=2))
        return
    for key, value in sorted(mask.metadata.items()):
        print(f"{key:>14}: {value}")
    print(f"{'content_hash':>14}: {mask.content_hash()}")
    unit = "structures (attention heads, MLP blocks)" if mask.metadata.get("kind") == STRUCTURED_KIND else "weights"
    print(f"{'sparsity':>14}: {mask.sparsity:.4f} of {mask.total:,} {unit} in {len(mask.tensors)} tensors")
    width = max(len(n) for n in mask.tensors)
    for name, value in mask.layer_sparsity().items():
        print(f"  {name:<{width}}  {value:.4f}")


def cmd_mask_compare(args: argparse.Namespace) -> None:
    """Print the overlap of two masks."""
    result = overlap(Mask.load(args.a), Mask.load(args.b))
    print(f"jaccard {result['jaccard']:.4f}  hamming {result['hamming']:.4f}")


def build_parser() -> argparse.ArgumentParser:
    """The `python -m tickets` argument parser."""
    parser = argparse.ArgumentParser(prog="python -m tickets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    imp = sub.add_parser("imp", help="run or resume one IMP trajectory", description=cmd_imp.__doc__)
    add_recipe_args(imp)
    add_flags(imp, TrajectoryConfig, ("method", "rate", "schedule"))
    group = imp.add_mutually_exclusive_group()
    add_flags(group, TrajectoryConfig, ("levels",))
    group.add_argument("--target-sparsity", type=float, help="run enough levels to reach this sparsity")
    add_flags(imp.add_argument_group("early tickets (Early-Bird mask convergence; tickets.early)"), EarlyStopConfig)
    imp.set_defaults(func=cmd_imp)

    branch = sub.add_parser("branch", help="run one branch of a trajectory level", description=cmd_branch.__doc__)
    branch.add_argument("kind", choices=BRANCH_KINDS,
                        help="; ".join(f"{kind.name}: {kind.definition}" for kind in BRANCHES.values()))
    branch.add_argument("--reinit-scope", choices=REINIT_SCOPES, default=DEFAULT_REINIT_SCOPE,
                        help="random-reinit: redraw the prunable weights (default, the paper's baseline) or every "
                             "encoder weight")
    branch.add_argument("--mask", required=True,
                        help="the level's mask (transfer: the source task's mask; standard: the chain runs levels 1 to "
                             "its level)")
    branch.add_argument("--trajectory", help="the IMP trajectory folder (its recipe becomes the default)")
    add_recipe_args(branch)
    branch.set_defaults(func=cmd_branch)

    mask = sub.add_parser("mask", help="inspect mask files").add_subparsers(dest="mask_command", required=True)
    info = mask.add_parser("info", help="sparsity overall and per layer, metadata", description=cmd_mask_info.__doc__)
    info.add_argument("file")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_mask_info)
    compare = mask.add_parser("compare", help="Jaccard and Hamming overlap of two masks")
    compare.add_argument("a")
    compare.add_argument("b")
    compare.set_defaults(func=cmd_mask_compare)
    register_structured(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors print one line and return 2."""
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "out", None):
            check_writable_folder(args.out)
        args.func(args)
    except TicketsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished levels are kept; re-run the same command to resume", file=sys.stderr)
        return 130
    return 0
