"""Results are reused only while their inputs are current: re-running a level to a different mask (as a GPU's
nondeterminism may) makes every later level, and every branch built on the old masks, stale; they are set aside and
trained again, in the engine and in a sweep's plan."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil

import pytest
from rich.console import Console

import tickets.imp
from conftest import GLUE_DIR
from sweeps.plan import build_plan
from sweeps.result import SweepResult
from sweeps.runner import pending_pieces
from sweeps.spec import load_spec
from sweeps.store import ResultsStore
from sweeps.terminal import print_summary
from tickets.branches import BranchConfig, run_branch
from tickets.imp import run_trajectory
from tickets.lineage import INPUTS, OUTPUTS, SUPERSEDED, SUPERSEDES, first_stale_level
from tickets.masks import Mask
from tickets.paths import MASK, NEXT_MASK, level_dir
from tickets.pruning import prune
from tickets.records import finished_metrics


class Stop(Exception):
    """Stops a trajectory after the level it re-ran."""


def rerun_with_another_mask(cfg, out: str, level: int, monkeypatch) -> None:
    """Delete `level` of the trajectory in `out` and train it again, its next mask pruned at random instead of by
    magnitude (a different mask at the same sparsity), stopping right after it."""
    shutil.rmtree(level_dir(out, level))

    def random_next_mask(cfg, session, mask, at):
        weights = {n: p.detach() for n, p in session.prunable.items()}
        sparsity = tickets.imp.target_sparsity(at + 1, cfg.rate, cfg.schedule)
        return session.make_mask(prune("random", weights, sparsity, current=mask.tensors, seed=99), level=at + 1)

    def stop(result):
        if result.level == level:
            raise Stop

    with monkeypatch.context() as patch:
        patch.setattr(tickets.imp, "_next_mask", random_next_mask)
        with pytest.raises(Stop):
            run_trajectory(cfg, out, on_level=stop, progress=False)


def _mask_hash(path: str) -> str:
    return Mask.load(path).content_hash()


def test_levels_record_what_they_trained_from_and_what_they_give(tiny_trajectory):
    out, results, _ = tiny_trajectory
    for level in (1, 2):
        record = finished_metrics(level_dir(out, level))
        previous = finished_metrics(level_dir(out, level - 1))
        assert record[INPUTS]["mask"] == previous[OUTPUTS]["next_mask"] == _mask_hash(
            os.path.join(level_dir(out, level), MASK))
        assert record[INPUTS]["rewind_point"] == results[0].metrics[OUTPUTS]["rewind_point"]
    assert first_stale_level([r.metrics for r in results]) is None


def test_a_level_rerun_to_another_mask_retrains_its_later_levels_and_branches(tmp_path, tiny_trajectory, tiny_recipe,
                                                                            monkeypatch):
    out = str(tmp_path / "traj")
    shutil.copytree(tiny_trajectory[0], out)
    branch = BranchConfig("random-prune", tiny_recipe, os.path.join(level_dir(out, 2), MASK), out)
    first = run_branch(branch, str(tmp_path / "branch"), progress=False)
    old_level_2 = finished_metrics(level_dir(out, 2))

    rerun_with_another_mask(tiny_recipe, out, 1, monkeypatch)
    new_next = _mask_hash(os.path.join(level_dir(out, 1), NEXT_MASK))
    assert new_next != old_level_2[INPUTS]["mask"]
    assert first_stale_level([finished_metrics(level_dir(out, lv)) for lv in range(3)]) == 2

    results = run_trajectory(tiny_recipe, out, progress=False)
    assert [r.reused for r in results] == [True, True, False]  # level 2 trained again from the new mask
    assert _mask_hash(os.path.join(level_dir(out, 2), MASK)) == new_next
    aside = os.path.join(out, results[2].metrics[SUPERSEDES])
    assert os.path.dirname(aside) == os.path.join(out, SUPERSEDED)
    assert finished_metrics(os.path.join(aside, "level_02")) == old_level_2  # kept, not lost

    again = run_branch(branch, str(tmp_path / "branch"), progress=False)
    assert not again["reused"] and again[SUPERSEDES]  # its source mask changed: trained again
    assert again["source_mask_hash"] == new_next != first["source_mask_hash"]
    assert run_branch(branch, str(tmp_path / "branch"), progress=False)["reused"]  # current now: reused
    assert [r.reused for r in run_trajectory(tiny_recipe, out, progress=False)] == [True, True, True]


SPEC = """\
name: lineage
model: tiny-random-bert
data_dir: {data}
tasks: [sst2]
seeds: [0]
pruning: {{rate: 0.2, levels: 2}}
training: {{epochs: 1, batch_size: 8, learning_rate: 0.001, max_seq_length: 32, max_train_samples: 48,
           max_eval_samples: 32}}
branches: [{{kind: random-prune, levels: [1, 2]}}]
storage: {storage}
"""


def _spec(tmp_path, storage: str) -> str:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(SPEC.format(data=GLUE_DIR, storage=storage))
    return str(spec_path)


def test_a_sweep_plans_the_stale_trajectory_and_the_branches_after_its_change_and_says_so(tmp_path, monkeypatch):
    plan = build_plan(load_spec(_spec(tmp_path, str(tmp_path / "store"))))
    store = ResultsStore(str(tmp_path / "store"))
    trajectory = next(p for p in plan if p.is_trajectory)
    run_trajectory(trajectory.recipe, store.path(trajectory.key), progress=False)
    branches = {p.level: p for p in plan if not p.is_trajectory}
    for piece in branches.values():
        run_branch(BranchConfig(piece.kind, piece.recipe, store.source_mask(piece), store.path(trajectory.key)),
                   store.path(piece.key), run_key=piece.key, progress=False)
    assert pending_pieces(plan, store) == ([], [])  # all current: a re-run trains nothing

    rerun_with_another_mask(trajectory.recipe, store.path(trajectory.key), 1, monkeypatch)
    pending, stale = pending_pieces(plan, store)
    assert stale == [trajectory] and store.is_stale(trajectory)
    assert pending == [trajectory, branches[2]]  # the level-1 branch starts from a mask that did not change
    assert store.first_open_level(trajectory) == 2

    result = SweepResult("lineage", str(tmp_path / "store"), "sqlite:///x.db", plan, stale=[trajectory.name],
                         superseded=2)
    console = Console(record=True, width=200)
    print_summary(console, result)
    assert f"2 results trained again because the mask or rewind point they were trained from had changed (found " \
           f"stale at the start: {trajectory.name})" in console.export_text()


def test_an_older_record_without_hashes_is_not_judged(tiny_trajectory):
    records = [{k: v for k, v in r.metrics.items() if k not in (INPUTS, OUTPUTS)} for r in tiny_trajectory[1]]
    assert first_stale_level(records) is None
    mixed = [tiny_trajectory[1][0].metrics, records[1], tiny_trajectory[1][2].metrics]
    assert first_stale_level(mixed) is None


def test_an_object_store_gets_a_retrained_result_in_place_of_its_stale_one(tmp_path, tiny_trajectory, monkeypatch):
    """A trial that retrained a stale level uploads it over the old one (metrics.json removed first, uploaded last),
    and the old one set aside beside it; a result that did not change is not uploaded again."""
    from cluster.storage import CACHE_ENV

    plan = build_plan(load_spec(_spec(tmp_path, f"file://{tmp_path / 'bucket'}")))
    trajectory = next(p for p in plan if p.is_trajectory)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "node_a"))
    store = ResultsStore(f"file://{tmp_path / 'bucket'}")
    local = store.stage(trajectory)
    shutil.copytree(tiny_trajectory[0], local.path(trajectory.key))
    store.publish(trajectory)
    old = store.level_metrics(trajectory, 2)
    unchanged = store.remote.versions(f"results/{trajectory.key}/level_00")

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "node_b"))  # another node retrains it
    store = ResultsStore(f"file://{tmp_path / 'bucket'}")
    local = store.stage(trajectory)
    rerun_with_another_mask(trajectory.recipe, local.path(trajectory.key), 1, monkeypatch)
    run_trajectory(trajectory.recipe, local.path(trajectory.key), progress=False)
    store.publish(trajectory)
    new = store.level_metrics(trajectory, 2)
    assert new != old and new[SUPERSEDES] and not store.is_stale(trajectory)
    assert new[INPUTS]["mask"] == store.level_metrics(trajectory, 1)[OUTPUTS]["next_mask"]
    assert store.remote.read_json(f"results/{trajectory.key}/{new[SUPERSEDES]}/level_02/metrics.json") == old
    assert store.remote.versions(f"results/{trajectory.key}/level_00") == unchanged  # not uploaded again


def test_a_key_names_the_backend_that_runs_not_auto(tiny_recipe, tmp_path):
    """`backend: auto` is keyed as what it resolves to: on this CPU plain torch (the key of an explicit torch run);
    in a sweep whose trials ask for GPUs, DeepSpeed where it is installed."""
    auto = dataclasses.replace(tiny_recipe, train=dataclasses.replace(tiny_recipe.train, backend="auto"))
    assert auto.content_key() == tiny_recipe.content_key()
    on_gpu = "deepspeed" if importlib.util.find_spec("deepspeed") else "torch"
    keys = {}
    for gpus, backend in ((0, "torch"), (1, on_gpu)):
        for given in ("auto", backend):
            text = SPEC.format(data=GLUE_DIR, storage=tmp_path / "store").replace(
                "max_eval_samples: 32}", f"max_eval_samples: 32, backend: {given}}}") + f"resources: {{gpus: {gpus}}}\n"
            spec_path = tmp_path / f"{given}{gpus}.yaml"
            spec_path.write_text(text)
            spec = load_spec(str(spec_path))
            assert spec.training_for("sst2").backend == backend
            keys[(gpus, given)] = [p.key for p in build_plan(spec)]
    assert keys[(0, "auto")] == keys[(0, "torch")] and keys[(1, "auto")] == keys[(1, on_gpu)]
    assert (keys[(0, "auto")] != keys[(1, "auto")]) == (on_gpu != "torch")
