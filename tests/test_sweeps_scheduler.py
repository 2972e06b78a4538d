"""The dependency-aware searcher: branches become trials the moment their level finishes, never before."""

from ray.tune.search import Searcher

from conftest import GLUE_DIR
from sweeps.plan import build_plan
from sweeps.scheduler import PieceScheduler
from sweeps.spec import load_spec

SPEC = f"""\
name: sched
model: tiny-random-bert
data_dir: {GLUE_DIR}
tasks: [sst2]
seeds: [0, 1]
pruning: {{rate: 0.2, levels: 2}}
branches: [{{kind: random-prune, levels: [1, 2]}}]
"""


def _scheduler(tmp_path, ready=()):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    pieces = build_plan(load_spec(str(path)))
    return pieces, PieceScheduler(pieces, set(ready), lambda piece: {"piece": piece.to_dict()})


def test_trajectories_first_then_branches_as_levels_finish(tmp_path):
    pieces, scheduler = _scheduler(tmp_path)
    traj = [p for p in pieces if p.is_trajectory]
    first, second = scheduler.suggest("t1"), scheduler.suggest("t2")
    assert [first["piece"]["key"], second["piece"]["key"]] == [t.key for t in traj]
    assert scheduler.suggest("t3") is None
    scheduler.on_trial_result("t1", {"piece_key": traj[0].key, "level": 0})
    assert scheduler.suggest("t3") is None
    scheduler.on_trial_result("t1", {"piece_key": traj[0].key, "level": 1})
    branch = scheduler.suggest("t3")["piece"]
    assert (branch["kind"], branch["source_key"], branch["level"]) == ("random-prune", traj[0].key, 1)
    assert scheduler.suggest("t4") is None
    scheduler.on_trial_result("t1", {"piece_key": traj[0].key, "level": 2})
    scheduler.on_trial_complete("t1")
    assert scheduler.suggest("t4")["piece"]["level"] == 2


def test_failed_trajectory_blocks_only_its_unfinished_levels(tmp_path):
    pieces, scheduler = _scheduler(tmp_path)
    traj = [p for p in pieces if p.is_trajectory]
    scheduler.suggest("t1")
    scheduler.suggest("t2")
    scheduler.on_trial_result("t1", {"piece_key": traj[0].key, "level": 1})
    scheduler.on_trial_complete("t1", error=True)
    assert scheduler.suggest("t3")["piece"]["level"] == 1
    assert [(p.source_key, p.level) for p in scheduler.blocked] == [(traj[0].key, 2)]
    scheduler.on_trial_complete("t3")
    scheduler.on_trial_complete("t2", error=True)
    assert scheduler.suggest("t4") == Searcher.FINISHED
    assert len(scheduler.blocked) == 3


def test_levels_already_on_disk_make_branches_ready_at_once(tmp_path):
    pieces, _ = _scheduler(tmp_path)
    branches = [p for p in pieces if not p.is_trajectory]
    ready = {(p.source_key, p.level) for p in branches}
    _, scheduler = _scheduler(tmp_path, ready)
    keys = [scheduler.suggest(f"t{i}")["piece"]["key"] for i in range(len(pieces))]
    assert sorted(keys) == sorted(p.key for p in pieces)
    for i in range(len(pieces)):
        scheduler.on_trial_complete(f"t{i}")
    assert scheduler.suggest("last") == Searcher.FINISHED
