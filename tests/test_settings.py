"""Every setting is declared once: the CLI, the sweep spec and the engine's dataclasses agree on defaults and ranges."""

import dataclasses

import pytest
from pydantic import ValidationError

from sweeps.spec import Pruning, Spec, Structured, Training
from tickets.cli import build_parser, imp_recipe
from tickets.cli_structured import search_config
from tickets.config import TrainConfig, TrajectoryConfig
from tickets.errors import TicketsError
from tickets.settings import check, settings_of
from tickets.structured.runs import SearchConfig

DEFAULT_SEARCH = SearchConfig(TrajectoryConfig(task="sst2"))


def _flat(settings, prefix: str = "") -> dict:
    flat = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            flat.update(_flat(value, f"{prefix}{f.name}."))
        else:
            flat[prefix + f.name] = value
    return flat


def _differences(got, expected) -> dict:
    got, expected = _flat(got), _flat(expected)
    return {name: (got[name], expected[name]) for name in expected if got[name] != expected[name]}


def _cli_search() -> SearchConfig:
    return search_config(build_parser().parse_args(["structured", "search", "--task", "sst2", "--out", "x"]))


def _spec_search() -> SearchConfig:
    spec = Spec.model_validate({"name": "t", "tasks": ["sst2"], "seeds": [0], "pruning": {"levels": 3},
                                "structured": {}})
    search = spec.structured_search("sst2", 0)
    trajectory = spec.trajectory("sst2", 0, spec.pruning.rewind[0], spec.pruning.method[0])
    levels = DEFAULT_SEARCH.trajectory.levels  # the spec has no default for how far a trajectory runs
    return dataclasses.replace(search, trajectory=dataclasses.replace(trajectory, levels=levels))


def test_cli_defaults_are_the_dataclass_defaults():
    recipe = imp_recipe(build_parser().parse_args(["imp", "--task", "sst2", "--out", "x"]))
    assert _differences(recipe, DEFAULT_SEARCH.trajectory) == {}
    assert _differences(_cli_search(), DEFAULT_SEARCH) == {}


def test_spec_defaults_are_the_dataclass_defaults():
    assert _differences(_spec_search(), DEFAULT_SEARCH) == {}
    assert Training().config() == TrainConfig()


def test_spec_list_fields_default_to_the_dataclass_default():
    defaults = TrajectoryConfig(task="sst2")
    assert Pruning.model_fields["method"].default == [defaults.method]
    assert Pruning.model_fields["rewind"].default == [defaults.rewind]


def _outside(declared):
    """A value just outside a bounded setting's range."""
    b = declared.bounds
    if "gt" in b or "ge" in b:
        return b["gt"] if "gt" in b else b["ge"] - 1
    return b["lt"] if "lt" in b else b["le"] + 1


SECTIONS = [(TrainConfig, TrainConfig(), Training), (TrajectoryConfig, DEFAULT_SEARCH.trajectory, Pruning),
            (SearchConfig, DEFAULT_SEARCH, Structured)]
BOUNDED = [(settings, default, section, name) for settings, default, section in SECTIONS
           for name, declared in settings_of(settings).items() if declared.bounds]


@pytest.mark.parametrize("settings, default, section, name", BOUNDED, ids=[b[-1] for b in BOUNDED])
def test_engine_and_spec_refuse_the_same_out_of_range_value(settings, default, section, name):
    declared = settings_of(settings)[name]
    bad = _outside(declared)
    with pytest.raises(TicketsError, match=f"{declared.label} must be"):
        check(dataclasses.replace(default, **{name: bad}))
    check(dataclasses.replace(default, **{name: declared.default}))
    if name in section.model_fields:
        with pytest.raises(ValidationError):
            section.model_validate({"levels": 1, name: bad} if section is Pruning else {name: bad})


@pytest.mark.parametrize("settings, message", [
    (TrainConfig(epochs=0), "epochs must be positive, got 0"),
    (TrainConfig(warmup_ratio=1.0), "warmup_ratio must be in [0, 1), got 1.0"),
    (TrainConfig(max_train_samples=0), "max_train_samples must be positive, got 0"),
    (TrajectoryConfig(task="sst2", rate=1.5), "pruning rate must be strictly between 0 and 1, got 1.5"),
    (TrajectoryConfig(task="sst2", method="prune-harder"), "unknown pruning method 'prune-harder'; choose one of "),
    (SearchConfig(TrajectoryConfig(task="sst2"), threshold=1.5), "threshold must be in (0, 1], got 1.5"),
])
def test_engine_messages_name_the_setting_and_its_range(settings, message):
    with pytest.raises(TicketsError) as info:
        check(settings)
    assert str(info.value).startswith(message)


def test_every_flag_keeps_its_name():
    args = build_parser().parse_args([
        "imp", "--task", "sst2", "--model", "m", "--data-dir", "d", "--seed", "1", "--rewind", "2", "--no-rewind-head",
        "--exclude-pooler", "--epochs", "2", "--batch-size", "8", "--lr", "0.5", "--weight-decay", "0.1",
        "--warmup-ratio", "0.1", "--max-grad-norm", "0", "--max-seq-length", "32", "--max-train-samples", "4",
        "--max-eval-samples", "4", "--eval-batch-size", "4", "--eval-every", "1", "--backend", "torch",
        "--precision", "bf16", "--zero-stage", "2", "--grad-accum", "2", "--offload-optimizer", "--out", "x",
        "--no-progress", "--method", "random", "--rate", "0.2", "--schedule", "remaining", "--target-sparsity", "0.3"])
    recipe = imp_recipe(args)
    assert (recipe.train.learning_rate, recipe.rewind_head, recipe.include_pooler, recipe.method) == \
        (0.5, False, False, "random")
    assert recipe.train.precision == "bf16"
    assert recipe.train.deepspeed == {"zero_stage": 2, "grad_accum": 2, "offload_optimizer": True}
    assert build_parser().parse_args(["imp", "--task", "sst2", "--out", "x", "--include-pooler", "--levels", "2"]) \
        .include_pooler is True
