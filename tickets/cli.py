"""`python -m tickets`: run one IMP trajectory, one branch, or inspect masks."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, fields

from .backends.deepspeed_config import read_config_file
from .branches import BRANCH_KINDS, BRANCHES, DEFAULT_REINIT_SCOPE, REINIT_SCOPES
from .config import BACKENDS, TrainConfig, TrajectoryConfig
from .errors import TicketsError
from .masks import Mask, overlap
from .pruning import SCHEDULES, levels_for_sparsity
from .structured.structure import KIND as STRUCTURED_KIND

TRAIN_FLAGS = {
    "epochs": float, "batch_size": int, "learning_rate": float, "weight_decay": float, "warmup_ratio": float,
    "max_grad_norm": float, "max_seq_length": int, "max_train_samples": int, "max_eval_samples": int,
    "eval_batch_size": int, "eval_every": int,
}

DEEPSPEED_FLAGS = ("precision", "zero_stage", "grad_accum", "offload_optimizer")


def _add_recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", help="GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli) or mlm")
    parser.add_argument("--model", help="hub id or local folder (default: the embedded all-MiniLM-L6-v2)")
    parser.add_argument("--data-dir", help="folder in GLUE's layout (DIR/SST-2/train.tsv); default: the Hugging Face Hub")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--rewind", type=int, help="rewind point in steps (0 = pre-trained weights)")
    parser.add_argument("--no-rewind-head", dest="rewind_head", action="store_false", default=None,
                        help="keep the trained head between levels (the reference code) instead of resetting it")
    pooler = parser.add_mutually_exclusive_group()
    pooler.add_argument("--include-pooler", dest="include_pooler", action="store_true", default=None)
    pooler.add_argument("--exclude-pooler", dest="include_pooler", action="store_false")
    for name, kind in TRAIN_FLAGS.items():
        flag = "--lr" if name == "learning_rate" else "--" + name.replace("_", "-")
        parser.add_argument(flag, dest=name, type=kind)
    parser.add_argument("--backend", choices=BACKENDS)
    deepspeed = parser.add_argument_group("DeepSpeed (backend deepspeed, or auto on a GPU)")
    deepspeed.add_argument("--precision", help="fp32 (default), bf16 or fp16 (GPU only)")
    deepspeed.add_argument("--zero-stage", type=int, help="ZeRO stage 0-3 (default 0)")
    deepspeed.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step (divides --batch-size)")
    deepspeed.add_argument("--offload-optimizer", action="store_true", default=None, help="optimizer state on the CPU")
    deepspeed.add_argument("--deepspeed-config", metavar="PATH",
                           help="DeepSpeed JSON for further settings; its content is recorded in the recipe")
    parser.add_argument("--out", required=True, help="output folder (re-running resumes it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _recipe(args: argparse.Namespace, base: TrajectoryConfig) -> TrajectoryConfig:
    """`base` with every flag the user gave applied over it."""
    train = {k: v for k, v in asdict(base.train).items()}
    train.update({k: getattr(args, k) for k in list(TRAIN_FLAGS) + ["backend"] if getattr(args, k, None) is not None})
    train["deepspeed"] = _deepspeed_settings(args, train["deepspeed"])
    data = asdict(base)
    for f in fields(TrajectoryConfig):
        if f.name != "train" and getattr(args, f.name, None) is not None:
            data[f.name] = getattr(args, f.name)
    data["train"] = TrainConfig(**train)
    if not data.get("task"):
        raise TicketsError("--task is required")
    return TrajectoryConfig(**data)


def _deepspeed_settings(args: argparse.Namespace, base: dict) -> dict:
    """`base` DeepSpeed settings with the DeepSpeed flags applied (a --deepspeed-config file is read in)."""
    settings = dict(base)
    if getattr(args, "deepspeed_config", None):
        settings["config"] = read_config_file(args.deepspeed_config)
    settings.update({k: getattr(args, k) for k in DEEPSPEED_FLAGS if getattr(args, k, None) is not None})
    return settings


def cmd_imp(args: argparse.Namespace) -> None:
    """Run (or resume) one IMP trajectory."""
    from .imp import run_trajectory

    cfg = _recipe(args, TrajectoryConfig(task=args.task or ""))
    if args.target_sparsity is not None:
        cfg = cfg.with_levels(levels_for_sparsity(args.target_sparsity, cfg.rate, cfg.schedule))
    cfg.validate()

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
    from .imp import TRAJECTORY_FILE
    from .records import read_json
    from .standard import run_standard

    base = TrajectoryConfig(task=args.task or "")
    if args.trajectory:
        path = os.path.join(args.trajectory, TRAJECTORY_FILE)
        if not os.path.isfile(path):
            raise TicketsError(f"'{args.trajectory}' is not a trajectory folder (no {TRAJECTORY_FILE})")
        base = TrajectoryConfig.from_dict(read_json(path)["config"])
    recipe = _recipe(args, base)
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
    _add_recipe_args(imp)
    imp.add_argument("--method", help="pruning method: magnitude (global), layerwise-magnitude, random")
    imp.add_argument("--rate", type=float, help="fraction pruned per level")
    imp.add_argument("--schedule", choices=SCHEDULES)
    group = imp.add_mutually_exclusive_group()
    group.add_argument("--levels", type=int, help="last level to run (level 0 is dense)")
    group.add_argument("--target-sparsity", type=float, help="run enough levels to reach this sparsity")
    imp.set_defaults(func=cmd_imp)

    branch = sub.add_parser("branch", help="run one branch of a trajectory level", description=cmd_branch.__doc__)
    branch.add_argument("kind", choices=BRANCH_KINDS,
                        help="; ".join(f"{kind.name}: {kind.definition}" for kind in BRANCHES.values()))
    branch.add_argument("--reinit-scope", choices=REINIT_SCOPES, default=DEFAULT_REINIT_SCOPE,
                        help="random-reinit: redraw the prunable weights (default, the paper's baseline) or every "
                             "encoder weight")
    branch.add_argument("--mask", required=True, help="the level's mask (transfer: the source task's mask; standard: the chain runs levels 1 to its level)")
    branch.add_argument("--trajectory", help="the IMP trajectory folder (its recipe becomes the default)")
    _add_recipe_args(branch)
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
    from .cli_structured import register as register_structured  # it builds on this module's recipe arguments

    register_structured(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors print one line and return 2."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except TicketsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished levels are kept; re-run the same command to resume", file=sys.stderr)
        return 130
    return 0
