"""Golden results: any change to the code that changes results, or to a setting's default, fails here until
RESULTS_VERSION (tickets/__init__.py) is bumped.

- Defaults: every settings dataclass of `tickets` (found by scanning its source for `setting(` fields) has its
  defaults pinned in tests/golden/defaults.json together with the RESULTS_VERSION they were recorded under.
- Tiny runs: one per task kind, per branch kind, the standard chain and the DeepSpeed backend, on the tiny random
  BERT with the tiny recipe (tests/conftest.py), each pinned in GOLDEN.
"""

import ast
import dataclasses
import importlib
import json
import os
from pathlib import Path

import pytest

from conftest import REPO, SHARED_DATA, tiny_trajectory_config
from tickets import RESULTS_VERSION
from tickets.imp import level_dir
from tickets.masks import Mask

# --- defaults ----------------------------------------------------------------------------------------------------

DEFAULTS_FILE = Path(__file__).resolve().parent / "golden" / "defaults.json"
REGENERATE_ENV = "TICKETS_REGENERATE_GOLDEN"
REGENERATE = f"{REGENERATE_ENV}=1 .venv/bin/python -m pytest -q tests/test_golden.py -k setting_default"
REQUIRED = "<required>"
# Settings dataclasses whose options are plain dataclass fields (no `setting(`), so the source scan cannot find them.
PLAIN_SETTINGS = ("tickets.branches.BranchConfig",)


def settings_classes() -> dict[str, type]:
    """Every dataclass in the `tickets` package that declares a field with `setting(`, plus PLAIN_SETTINGS, by class
    name (found by reading the source, so importing every module is not needed)."""
    package = REPO / "tickets"
    paths = set(PLAIN_SETTINGS)
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(_declares_setting(item) for item in node.body):
                paths.add(f"{module}.{node.name}")
    found = {}
    for path in sorted(paths):
        module, name = path.rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
        assert dataclasses.is_dataclass(cls), f"{path} declares settings but is not a dataclass"
        assert name not in found, f"two settings classes are called {name}: {path} and {found[name].__module__}"
        found[name] = cls
    return found


def _declares_setting(item: ast.stmt) -> bool:
    call = item.value if isinstance(item, ast.AnnAssign) else None
    if not isinstance(call, ast.Call):
        return False
    func = call.func
    return (isinstance(func, ast.Name) and func.id == "setting") or (isinstance(func, ast.Attribute)
                                                                    and func.attr == "setting")


def field_defaults(cls: type, prefix: str) -> dict:
    """The defaults of a dataclass's fields as JSON values by dotted name (`prefix.field`; a nested dataclass default
    flattened as `prefix.field.inner`; a field without a default as REQUIRED)."""
    found = {}
    for f in dataclasses.fields(cls):
        name = f"{prefix}.{f.name}"
        if f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = REQUIRED if f.default is dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(value):
            found.update(_instance_values(value, name))
        else:
            found[name] = json.loads(json.dumps(value, default=repr))
    return found


def _instance_values(value, prefix: str) -> dict:
    found = {}
    for f in dataclasses.fields(value):
        inner = getattr(value, f.name)
        name = f"{prefix}.{f.name}"
        found.update(_instance_values(inner, name) if dataclasses.is_dataclass(inner)
                     else {name: json.loads(json.dumps(inner, default=repr))})
    return found


def current_defaults() -> dict:
    """Every setting's default today, as `ClassName.field` -> JSON value."""
    found = {}
    for name, cls in settings_classes().items():
        found.update(field_defaults(cls, name))
    return dict(sorted(found.items()))


def default_problems(snapshot: dict, defaults: dict, version: str) -> list[str]:
    """What keeps the snapshot {"results_version", "defaults"} from standing for `defaults` under results version
    `version`, one line each (empty: it stands). A changed or removed default under the same version asks for a bump
    of RESULTS_VERSION; a new setting, or a bumped version, asks only for the snapshot to be regenerated."""
    old = snapshot["defaults"]
    changed = [f"{k}: {old[k]!r} -> {defaults[k]!r}" for k in sorted(old.keys() & defaults.keys())
               if old[k] != defaults[k]]
    removed = [f"{k}: {old[k]!r} -> (no such setting)" for k in sorted(old.keys() - defaults.keys())]
    added = [f"{k}: (new) -> {defaults[k]!r}" for k in sorted(defaults.keys() - old.keys())]
    if snapshot["results_version"] != version:
        return [f"RESULTS_VERSION is {version!r} but tests/golden/defaults.json was recorded under "
                f"{snapshot['results_version']!r}: regenerate it in the same commit as the bump with `{REGENERATE}`",
                *changed, *removed, *added]
    if changed or removed:
        return ["setting defaults changed under the same RESULTS_VERSION (a changed default changes results while "
                "content keys stay the same, so old results would be reused): if intended, bump RESULTS_VERSION in "
                f"tickets/__init__.py and regenerate tests/golden/defaults.json with `{REGENERATE}`",
                *changed, *removed, *added]
    if added:
        return ["new settings not yet in tests/golden/defaults.json (a new setting with a default keeps content keys, "
                f"so no RESULTS_VERSION bump is needed): record them with `{REGENERATE}`", *added]
    return []


def test_every_setting_default_is_pinned_until_results_version_changes():
    defaults = current_defaults()
    if os.environ.get(REGENERATE_ENV) == "1":
        DEFAULTS_FILE.parent.mkdir(exist_ok=True)
        DEFAULTS_FILE.write_text(json.dumps({"results_version": RESULTS_VERSION, "defaults": defaults}, indent=1)
                                 + "\n", encoding="utf-8")
    problems = default_problems(json.loads(DEFAULTS_FILE.read_text(encoding="utf-8")), defaults, RESULTS_VERSION)
    assert not problems, "\n".join(problems)


def test_the_defaults_guard_reports_a_changed_new_or_removed_default_and_a_bump():
    snapshot = {"results_version": RESULTS_VERSION, "defaults": current_defaults()}
    assert {"TrainConfig.learning_rate", "TrajectoryConfig.rate", "TrajectoryConfig.train.epochs",
            "EarlyStopConfig.window", "DeepSpeedOptions.zero_stage", "SearchConfig.threshold",
            "BranchConfig.reinit_scope", "TrajectoryConfig.task"} <= set(snapshot["defaults"])
    assert snapshot["defaults"]["TrajectoryConfig.task"] == REQUIRED
    assert default_problems(snapshot, dict(snapshot["defaults"]), RESULTS_VERSION) == []

    changed = {**snapshot["defaults"], "TrainConfig.learning_rate": 5e-5}
    problems = default_problems(snapshot, changed, RESULTS_VERSION)
    assert "bump RESULTS_VERSION" in problems[0] and REGENERATE in problems[0]
    assert problems[1:] == ["TrainConfig.learning_rate: 0.0001 -> 5e-05"]

    removed = {k: v for k, v in snapshot["defaults"].items() if k != "TrajectoryConfig.rate"}
    assert "bump RESULTS_VERSION" in default_problems(snapshot, removed, RESULTS_VERSION)[0]

    added = {**snapshot["defaults"], "TrainConfig.new_setting": 3}
    problems = default_problems(snapshot, added, RESULTS_VERSION)
    assert "no RESULTS_VERSION bump is needed" in problems[0]
    assert problems[1:] == ["TrainConfig.new_setting: (new) -> 3"]

    problems = default_problems(snapshot, changed, RESULTS_VERSION + "-next")
    assert "regenerate it in the same commit as the bump" in problems[0]
    assert "TrainConfig.learning_rate: 0.0001 -> 5e-05" in problems


# --- tiny runs ---------------------------------------------------------------------------------------------------

# Each case's pinned result under RESULTS_VERSION "version": the run's metrics (eval loss included) and, where the
# run makes a mask, its content hash. Runs use the tiny recipe (tests/conftest.py `tiny_trajectory_config`); cases
# on SST-2 branch from the session's `tiny_trajectory` (levels 0-2), level 1.
# The mask of tiny_trajectory's level 1.
IMP_LEVEL_1 = "f367592a1edae72b7d909f8e716dd918cdc7a3c44606221986c04213eb03a3c5"
GOLDEN = {
    "classification": {"version": "2", "mask_hash": IMP_LEVEL_1,
                       "metrics": {"accuracy": 0.53125, "eval_loss": 0.6983922719955444}},
    "regression": {"version": "2", "mask_hash": "42323ef1af2577f072f94af6fbaefd6607c10cde360680517d25d4ef4caa4515",
                   "metrics": {"pearson": -0.14969702064990997, "spearman": -0.18404155922883167,
                               "eval_loss": 10.523505210876465}},
    "mlm": {"version": "2", "mask_hash": "5a683fa786b66d6829edcaba30851fa45cb077937173323242dd1bf4edbea3a5",
            "metrics": {"masked_accuracy": 0.0, "perplexity": 28143.948119928787, "eval_loss": 10.245087623596191}},
    "extractive-qa": {"version": "2", "mask_hash": "dd5618df48b9eab1103fa835bc603a87f8915db2d2fc1c8abf139fdd6ba62060",
                      "metrics": {"exact_match": 0.0, "f1": 0.0, "eval_loss": 4.241241455078125}},
    "branch-random-prune": {"version": "2",
                            "mask_hash": "4ae9425d61d44d445d3ef5742cd252547a0a738a4933c4521d7a20e87dd7338d",
                            "metrics": {"accuracy": 0.53125, "eval_loss": 0.6979793906211853}},
    "branch-random-reinit": {"version": "2", "mask_hash": IMP_LEVEL_1,
                             "metrics": {"accuracy": 0.53125, "eval_loss": 0.6979503035545349}},
    "branch-oneshot": {"version": "2", "mask_hash": "453042d2f270eb6a16bcfefcdab9fef7323a1a31ec509a9cfa34a9050fdb4978",
                       "metrics": {"accuracy": 0.53125, "eval_loss": 0.698070764541626}},
    # Without rewinding, one-shot pruning of the dense fine-tuned weights is level 1's magnitude pruning (same mask),
    # and the standard chain's level 1 is the same run.
    "branch-oneshot-finetuned": {"version": "2", "mask_hash": IMP_LEVEL_1,
                                 "metrics": {"accuracy": 0.53125, "eval_loss": 0.7123451828956604}},
    "branch-standard": {"version": "2", "mask_hash": IMP_LEVEL_1,
                        "metrics": {"accuracy": 0.53125, "eval_loss": 0.7123451828956604}},
    "branch-transfer": {"version": "2", "mask_hash": IMP_LEVEL_1,
                        "metrics": {"mcc": 0.0, "eval_loss": 0.6325790882110596}},
    # Level 1 trained to the end: the ticket is that level's own result.
    "branch-ticket": {"version": "2", "mask_hash": IMP_LEVEL_1,
                      "metrics": {"accuracy": 0.53125, "eval_loss": 0.6983922719955444}},
    # fp32 ZeRO-0 on DeepSpeed's CPU accelerator reproduces the torch backend's level 1.
    "deepspeed": {"version": "2", "mask_hash": IMP_LEVEL_1,
                  "metrics": {"accuracy": 0.53125, "eval_loss": 0.6983922719955444}},
}
BRANCH_CASES = ("random-prune", "random-reinit", "oneshot", "oneshot-finetuned", "transfer", "ticket", "standard")
TASK_KIND_CASES = {"classification": "classification", "regression": "regression", "mlm": "mlm",
                   "extractive_qa": "extractive-qa"}


def _level_result(folder: str, level: int, metrics: dict) -> dict:
    mask = Mask.load(os.path.join(level_dir(folder, level), "mask.safetensors"))
    return {"version": RESULTS_VERSION, "mask_hash": mask.content_hash(), "metrics": metrics["metrics"]}


def _trajectory(out: Path, **changes) -> dict:
    """Level 1 of a tiny trajectory (levels 0-1) of the tiny recipe with `changes`."""
    from tickets.imp import run_trajectory

    train = dataclasses.replace(tiny_trajectory_config().train, **changes.pop("train", {}))
    cfg = dataclasses.replace(tiny_trajectory_config(), levels=1, train=train, **changes)
    results = run_trajectory(cfg, str(out), progress=False)
    return _level_result(str(out), 1, results[1].metrics)


def _branch(kind: str, trajectory: str, out: Path) -> dict:
    """The branch of `kind` of the tiny trajectory's level 1 (transfer: to CoLA; standard: its chain's level 1)."""
    from tickets.branches import BranchConfig, run_branch
    from tickets.standard import run_standard

    recipe = tiny_trajectory_config()
    if kind == "standard":
        results = run_standard(dataclasses.replace(recipe, levels=1), trajectory, str(out), progress=False)
        return _level_result(str(out), 1, results[0].metrics)
    mask = os.path.join(level_dir(trajectory, 1), "mask.safetensors")
    if kind == "transfer":
        metrics = run_branch(BranchConfig(kind, dataclasses.replace(recipe, task="cola"), mask), str(out),
                             progress=False)
    else:
        metrics = run_branch(BranchConfig(kind, recipe, mask, trajectory), str(out), progress=False)
    return {"version": RESULTS_VERSION, "mask_hash": Mask.load(str(out / "mask.safetensors")).content_hash(),
            "metrics": metrics["metrics"]}


def run_case(case: str, tiny_trajectory, out: Path) -> dict:
    """The result of golden case `case`: {"version", "mask_hash", "metrics"}."""
    if case == "classification":
        folder, results, _ = tiny_trajectory
        return _level_result(folder, 1, results[1].metrics)
    if case == "regression":
        return _trajectory(out, task="stsb")
    if case == "mlm":
        return _trajectory(out, task="mlm", data_dir=str(SHARED_DATA),
                           train={"max_train_samples": 16, "max_eval_samples": 16})
    if case == "extractive-qa":
        return _trajectory(out, task="squad-dev-split", data_dir=str(SHARED_DATA),
                           train={"max_seq_length": 96, "max_train_samples": 8, "max_eval_samples": 8})
    if case == "deepspeed":
        pytest.importorskip("deepspeed")
        return _trajectory(out, train={"backend": "deepspeed", "deepspeed": {"zero_stage": 0}})
    return _branch(case.removeprefix("branch-"), tiny_trajectory[0], out)


CASES = ["classification", "regression", "mlm", "extractive-qa", *(f"branch-{k}" for k in BRANCH_CASES), "deepspeed"]


def test_the_golden_cases_cover_every_task_kind_and_branch_kind():
    from tickets.branches import BRANCH_KINDS
    from tickets.tasks import TASKS

    assert set(BRANCH_CASES) == set(BRANCH_KINDS), "pin a golden case for every branch kind"
    kinds = {t.kind for t in TASKS.values()}
    assert kinds <= set(TASK_KIND_CASES), f"pin a golden case for task kinds {sorted(kinds - set(TASK_KIND_CASES))}"
    assert set(TASK_KIND_CASES.values()) <= set(CASES)


def _close(name: str, got: float, pinned: float) -> bool:
    """Losses (and perplexity) to 1e-5 relative; scores computed from a tiny random model's near-constant predictions
    (a correlation of 32 almost equal values) amplify last-bit float differences between thread counts and CPUs
    (seen: pearson -0.149734 against -0.149697 at the same eval loss), so those to 1e-3 absolute."""
    if "loss" in name or "perplexity" in name:
        return got == pytest.approx(pinned, rel=1e-5)
    return got == pytest.approx(pinned, abs=1e-3)


@pytest.mark.parametrize("case", CASES)
def test_tiny_run_gives_the_pinned_results_of_this_results_version(case, tiny_trajectory, tmp_path):
    got = run_case(case, tiny_trajectory, tmp_path / case)
    pinned = GOLDEN.get(case)
    same = (pinned is not None and got["version"] == pinned["version"] and got["mask_hash"] == pinned["mask_hash"]
            and set(got["metrics"]) == set(pinned["metrics"])
            and all(_close(k, got["metrics"][k], v) for k, v in pinned["metrics"].items()))
    assert same, (
        f"results of the golden tiny run '{case}' changed: got {got}, pinned {pinned} (RESULTS_VERSION "
        f"{RESULTS_VERSION!r}). If the change of results is intended, bump RESULTS_VERSION in tickets/__init__.py (so "
        "no stored result of the old code is reused) and pin the new values in GOLDEN (tests/test_golden.py); if it "
        "is not, the change altered results by mistake."
    )
