"""Sweep specs: every malformed spec stops with one line naming the field and the file line; the shipped specs plan."""

import re
import subprocess
import sys
import textwrap

import pytest

from conftest import GLUE_DIR, REPO
from sweeps.cli import main
from sweeps.errors import SpecError
from sweeps.plan import build_plan
from sweeps.spec import Training, load_spec
from tickets.config import TrainConfig
from tickets.provenance import provisional

GOOD = f"""\
name: tiny
model: tiny-random-bert
data_dir: {GLUE_DIR}
tasks: [sst2, rte]
seeds: [0, 1]
pruning:
  rate: 0.2
  levels: 2
  rewind: [0]
training:
  max_seq_length: 32
  max_train_samples: 64
branches:
  - kind: random-prune
    levels: [1, 2]
transfer:
  - sources: [sst2]
    targets: [rte]
    sparsity: 0.4
"""

STRUCTURED = f"""\
name: structured
model: tiny-random-bert
data_dir: {GLUE_DIR}
tasks: [sst2, rte]
seeds: [0, 1]
structured:
  threshold: 0.9
  head_fraction: 0.1
  subnetworks: [good, random, bad]
training:
  max_seq_length: 32
  max_train_samples: 64
"""


def _write(tmp_path, text: str, name: str = "spec.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def _replace(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


MALFORMED = [
    # (spec text, line, words the one-line message must contain)
    (_replace("tasks:", "taks:"), 4, ["taks", "unknown field", "did you mean 'tasks'"]),
    (_replace("  rate: 0.2", "  rat: 0.2"), 7, ["pruning.rat", "unknown field", "did you mean 'rate'"]),
    (_replace("  rate: 0.2", "  rate: 1.5"), 7, ["pruning.rate", "less than 1"]),
    (_replace("  rate: 0.2", "  rate: fast"), 7, ["pruning.rate", "valid number", "'fast'"]),
    (_replace("seeds: [0, 1]", "seeds: [0, one]"), 5, ["seeds.1", "valid integer"]),
    (_replace("tasks: [sst2, rte]", "tasks: [sst2, sst3]"), 4, ["tasks.1", "unknown task 'sst3'"]),
    (_replace("tasks: [sst2, rte]", "tasks: [sst2, SST-2]"), 4, ["tasks.1", "listed twice"]),
    (_replace("  levels: 2\n", "  levels: 2\n  target_sparsity: 0.4\n"), 6, ["pruning", "exactly one of levels"]),
    (_replace("  levels: 2\n", ""), 6, ["pruning", "exactly one of levels or target_sparsity"]),
    (_replace("  rewind: [0]", "  rewind: [0, 5 percent]"), 9, ["pruning.rewind.1", "percentage of training"]),
    (_replace("  rewind: [0]", "  rewind: [0, -3]"), 9, ["pruning.rewind.1", ">= 0 steps"]),
    (_replace("  rate: 0.2", "  rate: 0.2\n  method: prune-harder"), 8, ["pruning.method.0", "unknown pruning method"]),
    (_replace("    levels: [1, 2]", "    levels: [1, 3]"), 15, ["branches.0.levels.1", "beyond the last IMP level (2)"]),
    (_replace("  - kind: random-prune", "  - kind: random-prunes"), 14, ["branches.0.kind", "'random-prune'"]),
    (_replace("  - sources: [sst2]", "  - sources: [cola]"), 17, ["transfer.0.sources.0", "add it to tasks"]),
    (_replace("    sparsity: 0.4", "    sparsity: 0.5"), 19, ["transfer.0.sparsity", "not the sparsity of a level", "0.2, 0.4"]),
    (_replace("  max_train_samples: 64", "  max_train_samples: 0"), 12, ["training.max_train_samples", "greater than 0"]),
    (_replace("  max_seq_length: 32", "  max_seq_len: 32"), 11, ["training.max_seq_len", "did you mean 'max_seq_length'"]),
    (GOOD + "resources:\n  gpus: 1.5\n", 21, ["resources.gpus", "whole GPUs"]),
    (GOOD + "resources:\n  cpu: 2\n", 21, ["resources.cpu", "did you mean 'cpus'"]),
    (GOOD + "storage: s3://bucket/x\n", 20, ["storage", "cannot be reached or written"]),
    (_replace(f"data_dir: {GLUE_DIR}", "data_dir: no/such/folder"), 3, ["data_dir", "folder not found"]),
    (_replace("name: tiny", "name: my sweep!"), 1, ["name", "letters, digits"]),
    (_replace("name: tiny\n", ""), 1, ["name", "required field is missing"]),
    (_replace("seeds: [0, 1]", "seeds: [0, 1]\nseeds: [2]"), 6, ["seeds", "duplicate key (first given on line 5)"]),
    (_replace("seeds: [0, 1]", "seeds: [0, 1"), 6, ["not valid YAML"]),
    ("- just\n- a list\n", 1, ["a YAML mapping"]),
    (GOOD + "recipes:\n  rte:\n    max_seq_len: 16\n", 22, ["recipes.rte.max_seq_len", "'max_seq_length'"]),
    (GOOD + "recipes:\n  rte:\n    batch_size: 0\n", 22, ["recipes.rte.batch_size", "greater than 0"]),
    (GOOD + "recipes:\n  rte:\n    precision: fp16\n", 21, ["recipes.rte", "needs the deepspeed backend"]),
    (GOOD + "recipes:\n  rtee:\n    epochs: 2\n", 21, ["recipes.rtee", "unknown task 'rtee'"]),
    (GOOD + "recipes:\n  cola:\n    epochs: 2\n", 21, ["recipes.cola", "not trained by this sweep"]),
    (GOOD + "recipes:\n  rte: {epochs: 2}\n  RTE: {epochs: 3}\n", 20, ["recipes", "two recipes", "'RTE'"]),
]




def _structured(old: str, new: str) -> str:
    assert old in STRUCTURED
    return STRUCTURED.replace(old, new)


MALFORMED += [
    (_structured("  threshold: 0.9", "  threshold: 1.5"), 7, ["structured.threshold", "less than or equal to 1"]),
    (_structured("  threshold: 0.9", "  threshold: 0"), 7, ["structured.threshold", "greater than 0"]),
    (_structured("  head_fraction: 0.1", "  head_fraction: 1"), 8, ["structured.head_fraction", "less than 1"]),
    (_structured("  subnetworks: [good, random, bad]", "  subnetworks: [good, great]"), 9,
     ["structured.subnetworks.1", "'good', 'random', 'bad' or 'full'"]),
    (_structured("  subnetworks: [good, random, bad]", "  subnetworks: [good, bad, good]"), 9,
     ["structured.subnetworks.2", "listed twice"]),
    (_structured("  threshold: 0.9", "  strategy: taylor"), 7, ["structured.strategy", "unknown structured strategy",
                                                                 "gradient-importance"]),
    (_structured("  threshold: 0.9", "  treshold: 0.9"), 7, ["structured.treshold", "did you mean 'threshold'"]),
    (_structured("structured:\n  threshold: 0.9\n  head_fraction: 0.1\n  subnetworks: [good, random, bad]\n", ""), 1,
     ["give pruning: (IMP trajectories), structured: (structured tickets), or both"]),
    (STRUCTURED + "branches:\n  - kind: oneshot\n", 13, ["branches", "add a pruning: section"]),
]


@pytest.mark.parametrize("text,line,words", MALFORMED, ids=[f"case{i}" for i in range(len(MALFORMED))])
def test_malformed_spec_names_field_and_line(tmp_path, text, line, words):
    path = _write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}, line {line}: "), message
    for word in words:
        assert word in message, message


def test_good_spec_plans_trajectories_branches_and_transfers(tmp_path):
    spec = load_spec(_write(tmp_path, GOOD))
    pieces = build_plan(spec)
    kinds = [p.kind for p in pieces]
    assert kinds.count("trajectory") == 4 and kinds.count("random-prune") == 8 and kinds.count("transfer") == 2
    assert len({p.key for p in pieces}) == len(pieces)
    transfer = next(p for p in pieces if p.kind == "transfer")
    assert (transfer.source_task, transfer.recipe.task, transfer.level) == ("sst2", "rte", 2)
    source = next(p for p in pieces if p.key == transfer.source_key)
    assert source.recipe.task == "sst2" and source.recipe.seed == transfer.recipe.seed
    assert spec.storage.startswith("/") and spec.data_dir == str(GLUE_DIR.resolve())
    assert build_plan(load_spec(_write(tmp_path, GOOD, "again.yaml"))) == pieces


def test_keys_change_with_the_recipe_but_not_with_levels(tmp_path):
    base = {p.name: p.key for p in build_plan(load_spec(_write(tmp_path, GOOD)))}
    more_levels = build_plan(load_spec(_write(tmp_path, _replace("  levels: 2", "  levels: 3"), "b.yaml")))
    assert all(base[p.name] == p.key for p in more_levels if p.name in base)
    lr = _replace("  max_seq_length: 32", "  max_seq_length: 32\n  learning_rate: 0.001")
    other_lr = build_plan(load_spec(_write(tmp_path, lr, "c.yaml")))
    assert not set(base.values()) & {p.key for p in other_lr}


RECIPE = """\
  epochs: 2
  batch_size: 4
  learning_rate: 0.002
  max_seq_length: 24
"""


def test_each_piece_trains_with_the_recipe_of_its_task_and_a_transfer_with_its_target_s(tmp_path):
    text = GOOD + "recipes:\n  rte:\n" + textwrap.indent(RECIPE, "  ")
    pieces = build_plan(load_spec(_write(tmp_path, text)))
    by_key = {p.key: p for p in pieces}
    sst2 = TrainConfig(max_seq_length=32, max_train_samples=64)  # training: alone
    rte = TrainConfig(epochs=2, batch_size=4, learning_rate=0.002, max_seq_length=24, max_train_samples=64)
    for piece in pieces:
        assert piece.recipe.train == {"sst2": sst2, "rte": rte}[piece.recipe.task], piece.name
    (transfer, *_) = [p for p in pieces if p.kind == "transfer"]
    source = by_key[transfer.source_key]
    assert (source.recipe.task, source.recipe.train) == ("sst2", sst2)  # the mask comes from sst2's own recipe
    assert (transfer.recipe.task, transfer.recipe.train) == ("rte", rte)  # and trains on rte with rte's
    assert all(by_key[p.source_key].recipe.train == sst2 for p in pieces if p.kind == "random-prune"
               and p.recipe.task == "sst2")
    before = {p.name: p.key for p in build_plan(load_spec(_write(tmp_path, GOOD, "plain.yaml")))}
    after = {p.name: p.key for p in pieces}
    assert all(after[name] == key for name, key in before.items() if name.startswith("sst2-") and "-to-" not in name)
    assert all(after[name] != key for name, key in before.items() if name.startswith("rte-") or "-to-" in name)


def test_a_task_s_recipe_and_the_same_training_section_give_the_same_content_keys(tmp_path):
    alone = GOOD.replace("tasks: [sst2, rte]", "tasks: [rte]").split("branches:")[0]
    alone = alone.replace("  max_seq_length: 32\n  max_train_samples: 64\n", RECIPE + "  max_train_samples: 64\n")
    with_recipe = GOOD + "recipes:\n  rte:\n" + textwrap.indent(RECIPE, "  ")
    keys = {p.name: p.key for p in build_plan(load_spec(_write(tmp_path, alone, "alone.yaml")))}
    shared = {p.name: p.key for p in build_plan(load_spec(_write(tmp_path, with_recipe))) if p.name in keys}
    assert len(keys) == 2 and shared == keys
    unchanged = GOOD + "recipes:\n  rte:\n    max_seq_length: 32\n"  # a recipe that changes nothing
    assert [p.key for p in build_plan(load_spec(_write(tmp_path, unchanged, "same.yaml")))] == \
        [p.key for p in build_plan(load_spec(_write(tmp_path, GOOD, "good.yaml")))]


def test_percent_rewinds_go_to_the_engine_which_resolves_them_from_the_data_it_loads(tmp_path):
    text = _replace("  rewind: [0]", "  rewind: [0, '50%', '0%']")
    assert "pruning.rewind.2" in str(pytest.raises(SpecError, load_spec, _write(tmp_path, text)).value)
    text = _replace("  rewind: [0]", "  rewind: [0, '50%']")
    pieces = [p for p in build_plan(load_spec(_write(tmp_path, text))) if p.is_trajectory]
    assert sorted({(p.recipe.rewind, p.recipe.rewind_percent) for p in pieces}, key=str) == [(0, 50.0), (0, None)]
    assert {p.rewind_label for p in pieces} == {"0", "50%"}
    assert {p.name.split("-")[2] for p in pieces} == {"r0", "r50pct"}  # names also name trial folders
    recipe = next(p.recipe for p in pieces if p.recipe.rewind_percent)
    assert recipe.rewind_steps(8) == 4 and recipe.rewind_steps(30) == 15


def test_training_section_mirrors_the_engine_recipe():
    from dataclasses import fields

    from tickets.config import TrainConfig

    assert set(Training.model_fields) == {f.name for f in fields(TrainConfig)}
    assert Training().config() == TrainConfig()


def test_relative_data_dir_resolves_from_the_spec_project_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = load_spec(str(REPO / "sweeps" / "quickstart.yaml"))
    assert spec.data_dir == str(GLUE_DIR.resolve())
    assert spec.storage == str(tmp_path / "sweep_storage")


def test_structured_spec_plans_a_search_and_subnetworks_per_task_and_seed(tmp_path):
    spec = load_spec(_write(tmp_path, STRUCTURED))
    pieces = build_plan(spec)
    searches = [p for p in pieces if p.kind == "structured-search"]
    assert len(searches) == 4 and all(p.is_root and p.options["threshold"] == 0.9 for p in searches)
    for kind in ("good", "random", "bad"):
        subnets = [p for p in pieces if p.kind == f"structured-{kind}"]
        assert {p.source_key for p in subnets} == {p.key for p in searches} and not any(p.is_root for p in subnets)
    assert len({p.key for p in pieces}) == len(pieces) == 16
    both = load_spec(_write(tmp_path, GOOD + STRUCTURED.split("training:")[0].split("seeds: [0, 1]\n")[1], "both.yaml"))
    kinds = [p.kind for p in build_plan(both)]
    assert kinds.count("trajectory") == 4 and kinds.count("structured-search") == 4 and kinds.count("structured-bad") == 4
    stricter = load_spec(_write(tmp_path, STRUCTURED.replace("threshold: 0.9", "threshold: 0.8"), "stricter.yaml"))
    assert not {p.key for p in build_plan(stricter)} & {p.key for p in pieces}


@pytest.mark.parametrize("name", ["quickstart", "chen2020_glue", "chen2020_squad", "chen2020_mlm", "chen2020_rewind",
                                  "chen2020_transfer", "prasanna2020", "prasanna2020_sst2_cpu"])
def test_shipped_specs_dry_run(name, capsys, tmp_path):
    assert main([str(REPO / "sweeps" / f"{name}.yaml"), "--dry-run", "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    (count,) = [line for line in out.splitlines() if re.match(r"\d+ trials \(", line)]
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0].isdigit() and line != count]
    assert int(count.split()[0]) == len(rows) and [int(row[0]) for row in rows] == list(range(1, len(rows) + 1))
    assert all(len(row[8]) == 16 for row in rows)
    assert "content key" in out
    total = next(line.split() for line in out.splitlines() if line.split()[:1] == ["total"])
    assert int(total[1]) == len(rows) and int(total[2].replace(",", "")) == int(count.split("; ")[1].split()[0])
    assert "MFU" in out and "assumed: run bench/gpu.py to measure it" in out


def test_shipped_spec_sizes():
    sizes = {}
    for name in ("quickstart", "chen2020_glue", "chen2020_squad", "chen2020_rewind", "chen2020_transfer",
                 "prasanna2020"):
        spec = load_spec(str(REPO / "sweeps" / f"{name}.yaml"))
        with provisional():  # offline: the Hub data and bert-base-uncased cannot be resolved
            sizes[name] = (spec, build_plan(spec))
    spec, pieces = sizes["quickstart"]
    assert spec.model in (None, "all-MiniLM-L6-v2") and spec.level_sparsity(spec.last_level) == pytest.approx(0.4)
    assert [p.kind for p in pieces].count("trajectory") == 2 and spec.resources.gpus == 0
    spec, pieces = sizes["chen2020_glue"]
    assert len(spec.tasks) == 9 and len(spec.seeds) == 3 and spec.last_level == 9 and spec.resources.gpus >= 1
    spec, pieces = sizes["chen2020_rewind"]
    assert len(spec.pruning.rewind) == 5 and spec.model == "bert-base-uncased"
    spec, pieces = sizes["chen2020_transfer"]
    assert any("mlm" in t.sources and t.sparsity == pytest.approx(0.7) for t in spec.transfer)
    spec, pieces = sizes["prasanna2020"]
    assert len(spec.tasks) == 9 and len(spec.seeds) == 5 and spec.pruning is None and spec.model == "bert-base-uncased"
    assert spec.structured.threshold == 0.9 and spec.structured.subnetworks == ["good", "random", "bad"]
    assert [p.kind for p in pieces].count("structured-search") == 45 and len(pieces) == 45 * 4


# The paper's Table 1 recipes (epochs, batch size, learning rate, max_seq_length), with linear decay and AdamW.
GLUE_RECIPE, SQUAD_RECIPE, MLM_RECIPE = (3, 32, 2e-5, 128), (2, 16, 3e-5, 384), (1, 16, 5e-5, 512)
BASELINES = {"random-prune", "random-reinit", "oneshot", "standard"}


def _table1(train: TrainConfig) -> tuple:
    assert (train.warmup_ratio, train.weight_decay, train.precision) == (0.0, 0.0, "fp32")
    return train.epochs, train.batch_size, train.learning_rate, train.max_seq_length


def test_the_paper_s_specs_train_every_task_with_its_table_1_recipe_and_run_the_four_baselines():
    planned = {}
    for name in ("chen2020_glue", "chen2020_squad", "chen2020_mlm", "chen2020_transfer", "chen2020_rewind"):
        spec = load_spec(str(REPO / "sweeps" / f"{name}.yaml"))
        with provisional():  # offline: the Hub data and bert-base-uncased cannot be resolved
            planned[name] = spec, build_plan(spec)
        expected = {"squad": SQUAD_RECIPE, "mlm": MLM_RECIPE}
        assert all(_table1(p.recipe.train) == expected.get(p.recipe.task, GLUE_RECIPE) for p in planned[name][1]), name
        if name in ("chen2020_glue", "chen2020_squad", "chen2020_mlm"):
            assert {b.kind for b in spec.branches} == BASELINES and all(b.levels is None for b in spec.branches)
            assert spec.level_sparsity(spec.last_level) == pytest.approx(0.9) and spec.model == "bert-base-uncased"
    assert planned["chen2020_mlm"][0].tasks == ["mlm"]
    imp = {p.key for name in ("chen2020_glue", "chen2020_squad", "chen2020_mlm") for p in planned[name][1]}
    transfer_trajectories = {p.key for p in planned["chen2020_transfer"][1] if p.is_trajectory}
    assert len(transfer_trajectories) == 33 and transfer_trajectories <= imp  # the same results as the IMP specs'
    rewind_zero = {p.key for p in planned["chen2020_rewind"][1] if p.rewind_label == "0"}
    assert len(rewind_zero) == 27 and rewind_zero <= imp


def test_cli_user_error_is_one_line_exit_2(tmp_path):
    path = _write(tmp_path, _replace("  rate: 0.2", "  rat: 0.2"))
    proc = subprocess.run([sys.executable, "-m", "sweeps", path, "--dry-run"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert f"{path}, line 7: pruning.rat: unknown field" in proc.stderr


def test_run_tags_flag_dev_split_tasks_and_leave_percent_rewinds_to_the_engine(tmp_path):
    from cluster import conventions as cv
    from conftest import SHARED_DATA
    from sweeps.mlflow_runs import series_tags
    from sweeps.series import group_series

    text = GOOD.replace(f"data_dir: {GLUE_DIR}", f"data_dir: {SHARED_DATA}").replace("tasks: [sst2, rte]",
                                                                                   "tasks: [sst2, squad-dev-split]")
    text = text.replace("  rewind: [0]", "  rewind: [0, '10%']").replace("targets: [rte]", "targets: [squad-dev-split]")
    series = [s for s in group_series(build_plan(load_spec(_write(tmp_path, text)))) if s.first.is_trajectory]
    tags = {(s.first.recipe.task, s.first.rewind_label): series_tags(s) for s in series}
    assert tags["squad-dev-split", "0"][cv.TAG_NOT_COMPARABLE] == "true"
    assert cv.TAG_NOT_COMPARABLE not in tags["sst2", "0"]
    assert tags["sst2", "0"][cv.TAG_REWIND] == "0" and cv.TAG_REWIND not in tags["sst2", "10%"]
    assert tags["sst2", "10%"][cv.TAG_REWIND_POINT] == "10%"
