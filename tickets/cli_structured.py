"""`python -m tickets structured ...`: search for a structured ticket, retrain its subnetworks, compact it."""

from __future__ import annotations

import argparse

from .cli_recipe import add_recipe_args, recipe_from
from .config import TrajectoryConfig
from .flags import add_flags, given
from .structured.runs import RETRAIN_KINDS, SearchConfig

SEARCH_SETTINGS = ("strategy", "threshold", "head_fraction", "importance_samples")


def _describe(metrics: dict, names: list[str]) -> str:
    return ", ".join(f"{k}={metrics[k]:.4f}" for k in names if k in metrics)


def search_config(args: argparse.Namespace) -> SearchConfig:
    """The structured search a `structured search` command line asks for."""
    return SearchConfig(recipe_from(args, TrajectoryConfig(task=args.task or "")), **given(args, SearchConfig))


def cmd_search(args: argparse.Namespace) -> None:
    """Fine-tune the full model, then prune heads and MLP blocks by importance while the dev metric holds."""
    from .structured.runs import run_search

    cfg = search_config(args)

    def report(step: dict) -> None:
        mark = "" if step["above_threshold"] else "  (below threshold: stop)"
        print(f"step {step['step']}: heads {step['heads_kept']}/{step['heads_total']}, "
              f"MLPs {step['mlps_kept']}/{step['mlps_total']}, dev {step['metric']:.4f}{mark}", flush=True)

    metrics = run_search(cfg, args.out, progress=not args.no_progress, on_step=report)
    s = metrics["structure"]
    done = " (done earlier)" if metrics["reused"] else ""
    print(f"good subnetwork{done}: heads {s['heads_kept']}/{s['heads_total']}, MLPs {s['mlps_kept']}/{s['mlps_total']}, "
          f"weight sparsity {metrics['weight_sparsity']:.4f}; full model {metrics['main_metric']} "
          f"{metrics['full_metric']:.4f}, good before retraining {metrics['good_metric_before_retraining']:.4f} "
          f"-> {args.out}")


def cmd_retrain(args: argparse.Namespace) -> None:
    """Retrain a subnetwork of a search (good, random, bad of the same size, or the full model) from pre-trained weights."""
    from .structured.runs import run_retrain, search_recipe

    cfg = recipe_from(args, search_recipe(args.search))
    metrics = run_retrain(args.kind, cfg, args.search, args.out, export=args.export, progress=not args.no_progress)
    s = metrics["structure"]
    done = " (done earlier)" if metrics["reused"] else ""
    print(f"{args.kind}{done}: heads {s['heads_kept']}/{s['heads_total']}, MLPs {s['mlps_kept']}/{s['mlps_total']}, "
          f"weight sparsity {metrics['sparsity']:.4f}  {_describe(metrics['metrics'], list(metrics['metrics']))}"
          f"  -> {args.out}")


def cmd_compact(args: argparse.Namespace) -> None:
    """Turn a structured mask and a model into a smaller dense model, check it matches, export it (save_pretrained)."""
    from .structured.export import compact_and_export

    report = compact_and_export(args.mask, args.model, args.task, args.seed, args.out)
    print(f"compacted: {report['dense_parameters']:,} -> {report['compact_parameters']:,} parameters "
          f"(heads per layer {report['heads_per_layer']}, MLPs per layer {report['mlps_per_layer']}); "
          f"max |logit difference| vs masked model {report['max_abs_difference']:.2e} -> {args.out}")
    print("load with AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True) "
          "or tickets.structured.compact.load_compacted(folder)")


def register(subparsers) -> None:
    """Add the `structured` command group (search, retrain, compact) to the `python -m tickets` parser."""
    structured = subparsers.add_parser("structured", help="structured tickets: attention heads and MLP blocks",
                                       description=__doc__)
    sub = structured.add_subparsers(dest="structured_command", required=True)

    search = sub.add_parser("search", help="fine-tune, then prune heads/MLPs while the dev metric holds",
                            description=cmd_search.__doc__)
    add_recipe_args(search)
    add_flags(search, SearchConfig, SEARCH_SETTINGS)
    search.set_defaults(func=cmd_search)

    retrain = sub.add_parser("retrain", help="retrain a good/random/bad subnetwork (or the full model)",
                             description=cmd_retrain.__doc__)
    retrain.add_argument("kind", choices=RETRAIN_KINDS)
    retrain.add_argument("--search", required=True, help="the structured search folder (its recipe is the default)")
    retrain.add_argument("--export", action="store_true", help="also write the compacted trained model to OUT/compact")
    add_recipe_args(retrain)
    retrain.set_defaults(func=cmd_retrain)

    compact = sub.add_parser("compact", help="export a structured mask applied to a model as a smaller dense model",
                             description=cmd_compact.__doc__)
    compact.add_argument("--mask", required=True, help="a structured mask (e.g. SEARCH/good.safetensors)")
    compact.add_argument("--model", help="hub id, pre-trained folder, or a fine-tuned save_pretrained folder "
                                         "(default: the embedded all-MiniLM-L6-v2)")
    compact.add_argument("--task", help="task of the head (default: the mask's source task)")
    compact.add_argument("--seed", type=int, default=0, help="seed of a fresh task head")
    compact.add_argument("--out", required=True, help="output folder")
    compact.set_defaults(func=cmd_compact)
