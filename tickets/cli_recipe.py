"""The recipe flags every training command shares (`imp`, `branch`, `structured search/retrain`) and the recipe they
give: the declared settings of a trajectory and its training recipe, the DeepSpeed flags, the output folder."""

from __future__ import annotations

import argparse
from dataclasses import fields, replace

from .backends.deepspeed_config import DeepSpeedOptions, read_config_file
from .config import TrainConfig, TrajectoryConfig
from .errors import TicketsError
from .flags import add_flags, given

RECIPE_SETTINGS = ("task", "model", "data_dir", "seed", "rewind", "rewind_percent", "rewind_head", "include_pooler")
TRAIN_SETTINGS = tuple(f.name for f in fields(TrainConfig) if f.name != "deepspeed")


def add_recipe_args(parser: argparse.ArgumentParser) -> None:
    """Add the recipe flags (trajectory and training settings, DeepSpeed), --out and --no-progress to `parser`."""
    add_flags(parser, TrajectoryConfig, RECIPE_SETTINGS)
    add_flags(parser, TrainConfig, TRAIN_SETTINGS)
    deepspeed = parser.add_argument_group("DeepSpeed (backend deepspeed, or auto on a GPU)")
    add_flags(deepspeed, DeepSpeedOptions)
    deepspeed.add_argument("--deepspeed-config", metavar="PATH",
                           help="DeepSpeed JSON for further settings; its content is recorded in the recipe")
    parser.add_argument("--out", required=True, help="output folder (re-running resumes it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def recipe_from(args: argparse.Namespace, base: TrajectoryConfig) -> TrajectoryConfig:
    """`base` with every flag the user gave applied over it."""
    train = replace(base.train, **given(args, TrainConfig))
    train = replace(train, deepspeed=_deepspeed_settings(args, train.deepspeed))
    cfg = replace(base, **given(args, TrajectoryConfig), train=train)
    if not cfg.task:
        raise TicketsError("--task is required")
    return cfg


def _deepspeed_settings(args: argparse.Namespace, base: dict) -> dict:
    """`base` DeepSpeed settings with the DeepSpeed flags applied (a --deepspeed-config file is read in)."""
    settings = dict(base)
    if getattr(args, "deepspeed_config", None):
        settings["config"] = read_config_file(args.deepspeed_config)
    settings.update(given(args, DeepSpeedOptions))
    return settings
