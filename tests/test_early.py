"""Early tickets on a tiny random BERT and real SST-2: mask distance, early stopping, ticket evaluation, bisection,
the spec and plan, and the report against full IMP (real engine, real results store, real MLflow)."""

import dataclasses
import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from rich.console import Console

from conftest import GLUE_DIR
from sweeps.errors import SpecError
from sweeps.plan import build_plan
from sweeps.result import SweepResult
from sweeps.spec import load_spec
from sweeps.store import ResultsStore
from sweeps.progress import SweepProgress
from sweeps.terminal import results_table
from sweeps.trial import level_report
from tickets.bisection import (BOUNDARY, MONOTONE_ASSUMPTION, SEARCH_KINDS, bisect_sparsest, confirm_boundary,
                               predict_boundary, run_bisection)
from tickets.branches import BranchConfig, run_branch
from tickets.config import EarlyStopConfig, TrainConfig, TrajectoryConfig
from tickets.early import MaskWatch, converged, level_threshold, mask_distance
from tickets.errors import TicketsError
from tickets.settings import check
from tickets.imp import finished_levels, run_trajectory
from tickets.masks import Mask
from tickets.paths import HEAD_WEIGHTS, MASK, NEXT_MASK, TICKET_EVALUATIONS, TRAINED_WEIGHTS, level_dir
from tickets.pruning import prune
from tickets.records import finished_metrics
from tickets.weights import load_weights

TRAIN = TrainConfig(epochs=1, batch_size=8, learning_rate=1e-3, max_seq_length=32, max_train_samples=48,
                    max_eval_samples=32)
FULL = TrajectoryConfig(task="sst2", seed=0, model="tiny-random-bert", data_dir=str(GLUE_DIR), rate=0.2, levels=2,
                        train=TRAIN)
STOPS = dataclasses.replace(FULL, early_stop=EarlyStopConfig(window=2, threshold=1.0, check_every=1))


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A normal IMP trajectory, levels 0-2 (6 steps a level)."""
    out = str(tmp_path_factory.mktemp("full") / "traj")
    run_trajectory(FULL, out, progress=False)
    return out


@pytest.fixture(scope="module")
def early(tmp_path_factory):
    """An early-stopped trajectory whose rule is met as soon as it can be: window 2, threshold 1, a check a step."""
    out = str(tmp_path_factory.mktemp("early") / "traj")
    run_trajectory(STOPS, out, progress=False)
    return out


def _level(out: str, level: int) -> dict:
    return finished_metrics(level_dir(out, level))


def _mask_hash(out: str, level: int, name: str = MASK) -> str:
    return Mask.load(os.path.join(level_dir(out, level), name)).content_hash()


def test_distance_is_zero_for_identical_masks_and_one_for_complementary_ones():
    g = torch.Generator().manual_seed(0)
    a = {"x": torch.rand(7, 5, generator=g) < 0.5, "y": torch.rand(11, generator=g) < 0.3}
    assert mask_distance(a, {n: t.clone() for n, t in a.items()}) == 0.0
    assert mask_distance(a, {n: ~t for n, t in a.items()}) == 1.0
    one_flipped = {"x": a["x"].clone(), "y": a["y"].clone()}
    one_flipped["y"][0] = ~one_flipped["y"][0]
    assert mask_distance(a, one_flipped) == pytest.approx(1 / 46)
    with pytest.raises(TicketsError, match="different tensors"):
        mask_distance(a, {"x": a["x"]})


def test_the_early_bird_rule_needs_a_full_window_of_small_distances():
    assert not converged([0.05] * 4, window=5, threshold=0.1)
    assert converged([0.5, 0.05, 0.1, 0.02, 0.0, 0.09], window=5, threshold=0.1)
    assert not converged([0.05, 0.05, 0.05, 0.05, 0.11], window=5, threshold=0.1)
    assert not converged([0.0] * 9, window=0, threshold=0.1)


class OneMatrix(nn.Module):
    """A stand-in with one prunable matrix under `base_model_prefix`, whose magnitudes a test sets directly."""

    base_model_prefix = "encoder"

    def __init__(self, size: int):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.w = nn.Parameter(torch.zeros(size))


def watch_distances(distances: list[float], rule: EarlyStopConfig, size: int = 1000) -> MaskWatch:
    """A MaskWatch (half the weights kept) fed weights whose top half changes between checks by exactly
    `distances` (normalised Hamming distance d: d x size / 2 weights swap in and out)."""
    model = OneMatrix(size)
    half = size // 2
    order = torch.randperm(size, generator=torch.Generator().manual_seed(0))
    kept, pruned = order[half:], order[:half]
    watch = MaskWatch("magnitude", 0.5, 0, {"w": torch.ones(size, dtype=torch.bool)}, 1, rule, may_stop=True)
    for step, distance in enumerate([0.0, *distances]):
        swap = round(distance * size / 2)
        kept, pruned = torch.cat([pruned[:swap], kept[swap:]]), torch.cat([kept[:swap], pruned[swap:]])
        with torch.no_grad():
            model.encoder.w[kept] = torch.linspace(2, 3, half)
            model.encoder.w[pruned] = torch.linspace(0, 1, half)
        if watch(step, model):
            break
    return watch


def test_a_relative_threshold_stops_a_level_whose_distances_fall_below_the_fraction_of_its_first_only():
    relative = EarlyStopConfig(window=2, threshold=0.1, relative=0.5)
    falling = watch_distances([0.1, 0.06, 0.04, 0.04, 0.02], relative)
    assert [d["distance"] for d in falling.distances] == pytest.approx([0.1, 0.06, 0.04, 0.04])
    assert falling.stopped_at == 4 and falling.converged_at == 4  # 0.04 and 0.04 <= 0.5 x 0.1
    flat = watch_distances([0.1, 0.08, 0.07, 0.06, 0.06, 0.055], relative)
    assert flat.stopped_at is None and flat.converged_at is None and len(flat.distances) == 6
    fixed = watch_distances([0.1, 0.08, 0.07, 0.06, 0.06, 0.055], EarlyStopConfig(window=2, threshold=0.1))
    assert fixed.stopped_at == 2  # the fixed Early-Bird threshold stops both at the first full window
    assert level_threshold(relative, []) is None and level_threshold(relative, [0.1, 0.2]) == pytest.approx(0.05)
    with pytest.raises(TicketsError, match="relative"):
        check(EarlyStopConfig(window=2, relative=1.5))


@pytest.mark.parametrize("size", [1000, 700_000])
def test_pruning_keeps_exactly_what_a_stable_sort_keeps(size):
    """The selection that makes checks cheap prunes the same weights as sorting every score (ties in index order,
    weights pruned earlier first), below and above the size where it samples."""
    g = torch.Generator().manual_seed(size)
    weights = {"a": torch.randn(size, generator=g), "b": torch.randint(-3, 4, (size // 2,), generator=g).float()}
    current = {n: torch.rand(w.shape, generator=g) > 0.25 for n, w in weights.items()}
    for sparsity in (0.3, 0.5, 0.8):
        scores = torch.cat([torch.where(current[n], w.abs(), torch.full_like(w, -1.0)) for n, w in weights.items()])
        expected = torch.ones(scores.numel(), dtype=torch.bool)
        expected[torch.argsort(scores, stable=True)[:round(sparsity * scores.numel())]] = False
        keep = prune("magnitude", weights, sparsity, current=current)
        assert torch.equal(torch.cat([keep["a"], keep["b"]]), expected)


def test_every_level_with_a_next_level_records_its_mask_distance_curve(full):
    for level in (0, 1, 2):
        metrics = _level(full, level)
        assert [p["step"] for p in metrics["mask_distance"]] == [1, 2, 3, 4, 5, 6]  # a tenth of 6 steps: every step
        assert all(0 <= p["distance"] <= 1 for p in metrics["mask_distance"])
        assert metrics["mask_check_s"] > 0 and "early_stop" not in metrics and metrics["steps"] == 6


def test_a_never_met_threshold_trains_to_the_end_and_equals_a_normal_level_bit_for_bit(full, tmp_path):
    never = dataclasses.replace(FULL, early_stop=EarlyStopConfig(window=2, threshold=0.0, check_every=1))
    assert never.content_key() != FULL.content_key()
    out = str(tmp_path / "never")
    results = run_trajectory(never, out, progress=False)
    for result in results:
        level, metrics, reference = result.level, result.metrics, _level(full, result.level)
        assert metrics["early_stop"]["stopped_at_step"] is None and not metrics["early_stop"]["converged"]
        assert metrics["early_stop"]["may_stop"] == (level >= 1)
        for key in ("steps", "train_loss", "metrics", "sparsity", "mask_distance"):
            assert metrics[key] == reference[key], key
        assert _mask_hash(out, level) == _mask_hash(full, level)
        assert _mask_hash(out, level, NEXT_MASK) == _mask_hash(full, level, NEXT_MASK)
        for ours, theirs in zip(load_weights(os.path.join(level_dir(out, level), HEAD_WEIGHTS)).values(),
                                load_weights(os.path.join(level_dir(full, level), HEAD_WEIGHTS)).values()):
            assert torch.equal(ours, theirs)
    dense = [load_weights(os.path.join(level_dir(folder, 0), TRAINED_WEIGHTS)) for folder in (out, full)]
    assert all(torch.equal(dense[0][name], dense[1][name]) for name in dense[1])


def test_a_met_threshold_stops_each_pruned_level_and_draws_its_next_mask_there(early, full):
    dense = _level(early, 0)
    assert dense["steps"] == 6 and dense["early_stop"]["may_stop"] is False
    assert dense["early_stop"]["converged"] and dense["early_stop"]["stopped_at_step"] is None
    assert _mask_hash(early, 1) == _mask_hash(full, 1)  # drawn at the end of the same full-length level 0
    for level in (1, 2):
        metrics = _level(early, level)
        assert metrics["early_stop"] == {"window": 2, "threshold": 1.0, "relative": None, "level_threshold": 1.0,
                                         "check_every": 1, "may_stop": True, "converged": True,
                                         "converged_at_step": 2, "stopped_at_step": 2}
        assert metrics["steps"] == 2 and [p["step"] for p in metrics["mask_distance"]] == [1, 2]
    assert _mask_hash(early, 2) != _mask_hash(full, 2)


def test_a_resumed_early_stopped_search_gives_the_masks_of_an_uninterrupted_one(early, tmp_path):
    class Crash(Exception):
        pass

    def crash_after_level_1(result):
        if result.level == 1:
            raise Crash

    out = str(tmp_path / "resumed")
    with pytest.raises(Crash):
        run_trajectory(STOPS, out, on_level=crash_after_level_1, progress=False)
    assert finished_levels(out) == [0, 1]
    results = run_trajectory(STOPS, out, progress=False)
    assert [r.reused for r in results] == [True, True, False]
    for level in (0, 1, 2):
        assert _mask_hash(out, level) == _mask_hash(early, level)
        assert _mask_hash(out, level, NEXT_MASK) == _mask_hash(early, level, NEXT_MASK)
        assert _level(out, level)["mask_distance"] == _level(early, level)["mask_distance"]


def test_the_ticket_of_a_stopped_level_is_its_full_imp_training_and_a_full_level_is_its_own_ticket(early, full,
                                                                                                    tmp_path):
    ticket = run_branch(BranchConfig("ticket", STOPS.without_early_stop(),
                                     os.path.join(level_dir(early, 1), MASK), early), str(tmp_path / "t1"),
                        progress=False)
    reference = _level(full, 1)  # the same mask (drawn from the same level 0) trained to the end by full IMP
    assert (ticket["metrics"], ticket["train_loss"], ticket["steps"]) == \
        (reference["metrics"], reference["train_loss"], reference["steps"])
    assert ticket["evaluation_steps"] == 6 and ticket["branch"] == "ticket"
    own = run_branch(BranchConfig("ticket", FULL, os.path.join(level_dir(full, 2), MASK), full), str(tmp_path / "t2"),
                     progress=False)
    assert own["evaluation_steps"] == 0 and own["same_as"] == os.path.abspath(level_dir(full, 2))
    assert own["metrics"] == _level(full, 2)["metrics"] and own["steps"] == 6
    with pytest.raises(TicketsError, match="pruned level"):
        BranchConfig("ticket", FULL, os.path.join(level_dir(full, 0), MASK), full).validate()
    with pytest.raises(TicketsError, match="early stopping needs the head rewound"):
        dataclasses.replace(STOPS, rewind_head=False).validate()


@pytest.mark.parametrize("count", [1, 2, 5, 8])
def test_bisection_finds_the_last_matching_level_of_a_monotone_series(count):
    levels = list(range(1, count + 1))
    for boundary in range(count + 1):  # levels 1..boundary match, the sparser ones do not
        judged = []

        def matches(level):
            judged.append(level)
            return level <= boundary

        sparsest, trace = bisect_sparsest(levels, matches)
        assert sparsest == (boundary or None)
        assert [step["level"] for step in trace] == judged and len(set(judged)) == len(judged)
        assert judged[0] == count and trace[0]["reason"].startswith("the sparsest level")
        assert len(judged) <= 1 + (count - 1).bit_length()
    assert bisect_sparsest([], lambda level: True) == (None, [])


def test_bisection_records_why_and_resumes_from_the_tickets_it_trained(early, tmp_path):
    recipe = STOPS.without_early_stop()
    interrupted = str(tmp_path / "resumed")
    first = run_branch(BranchConfig("ticket", recipe, os.path.join(level_dir(early, 2), MASK), early),
                       level_dir(os.path.join(interrupted, TICKET_EVALUATIONS), 2), run_key="k", progress=False)
    straight = run_bisection(STOPS, early, str(tmp_path / "straight"), tolerance=0.05, key="k", progress=False)
    resumed = run_bisection(STOPS, early, interrupted, tolerance=0.05, key="k", progress=False)
    again = run_bisection(STOPS, early, interrupted, tolerance=0.05, key="k", progress=False)
    ticket = finished_metrics(level_dir(os.path.join(interrupted, TICKET_EVALUATIONS), 2))
    assert ticket["started_at"] == first["started_at"]  # trained once, before the interruption
    assert [r.metrics["bisection"] for r in straight] == [r.metrics["bisection"] for r in resumed]
    assert all(r.reused for r in again)
    record = straight[0].metrics["bisection"]
    assert record["assumption"] == MONOTONE_ASSUMPTION and record["trace"][0]["level"] == 2
    assert record["dense_metric"] == _level(early, 0)["metrics"]["accuracy"]
    by_level = {r.level: r.metrics for r in straight}
    assert by_level[2]["evaluated"] and by_level[2]["evaluation_steps"] == 6
    if record["sparsest_matching_level"] == 2:
        assert not by_level[1]["evaluated"] and by_level[1]["matches"] and by_level[1]["metrics"] == {}
    for level in (1, 2):
        assert os.path.isfile(os.path.join(level_dir(str(tmp_path / "straight"), level), MASK))


def test_the_sweep_summary_shows_a_level_the_bisection_only_inferred_as_not_evaluated(early, tmp_path):
    spec_file = _spec_file(tmp_path, "{evaluate: bisect, tolerance: 1.0}", name="bisect")
    piece = next(p for p in build_plan(load_spec(spec_file)) if p.kind == "ticket-bisect")
    store = ResultsStore(str(tmp_path / "storage"))
    run_bisection(STOPS, early, store.path(piece.key), tolerance=1.0, key="k", progress=False)
    console = Console(record=True, width=200)
    console.print(results_table(SweepResult("bisect", store.storage, "", [piece])))
    rows = {line.split()[1]: line for line in console.export_text().splitlines() if line.split()[:1] == [piece.name]}
    assert "not evaluated" in rows["1"]  # level 2 matched with this tolerance, so level 1 was inferred
    assert "not evaluated" not in rows["2"] and "accuracy" in rows["2"]


def _spec_file(tmp_path, early_stop: str = "", name: str = "e", extra: str = ""):
    path = tmp_path / f"{name}.yaml"
    stop = f", early_stop: {early_stop}" if early_stop else ""
    path.write_text(f"""\
name: {name}
model: tiny-random-bert
data_dir: {GLUE_DIR}
tasks: [sst2]
seeds: [0, 1]
pruning: {{rate: 0.2, levels: 2, rewind: [0]{stop}{extra}}}
training: {{epochs: 1, batch_size: 8, learning_rate: 1.0e-3, max_seq_length: 32, max_train_samples: 48,
           max_eval_samples: 32}}
storage: {tmp_path / "storage"}
""")
    return str(path)


@pytest.mark.parametrize("early_stop, extra, field, message", [
    ("{windw: 5}", "", "pruning.early_stop.windw", "did you mean 'window'"),
    ("{evaluate: bisect}", "", "pruning.early_stop", "needs tolerance"),
    ("{evaluate: [1, 3]}", "", "pruning.early_stop.evaluate.1", "beyond the last IMP level (2)"),
    ("{evaluate: all, tolerance: 0.01}", "", "pruning.early_stop", "bisect or boundary only"),
    ("{threshold: 1.5}", "", "pruning.early_stop.threshold", ""),
    ("{window: 0}", "", "pruning.early_stop.window", ""),
    ("{}", ", rewind_head: false", "pruning.early_stop", "needs rewind_head"),
])
def test_early_stop_spec_errors_name_the_field_and_line(tmp_path, early_stop, extra, field, message):
    with pytest.raises(SpecError) as info:
        load_spec(_spec_file(tmp_path, early_stop, extra=extra))
    assert info.value.field == field and info.value.line == 6 and message in info.value.message


def test_the_plan_of_an_early_spec_has_its_ticket_pieces(tmp_path):
    normal = build_plan(load_spec(_spec_file(tmp_path, name="normal")))
    every = build_plan(load_spec(_spec_file(tmp_path, "{check_every: 1}", name="all")))
    listed = build_plan(load_spec(_spec_file(tmp_path, "{evaluate: [2]}", name="listed")))
    bisect = build_plan(load_spec(_spec_file(tmp_path, "{evaluate: bisect, tolerance: 0.01}", name="bisect")))
    assert [p.kind for p in normal] == ["trajectory"] * 2
    trajectories = [p for p in every if p.is_trajectory]
    assert {p.key for p in trajectories}.isdisjoint(p.key for p in normal)
    assert trajectories[0].recipe.early_stop == EarlyStopConfig(window=5, threshold=0.1, check_every=1)
    tickets = [p for p in every if p.kind == "ticket"]
    assert [(p.source_key, p.level) for p in tickets] == [(t.key, lv) for t in trajectories for lv in (1, 2)]
    assert all(p.recipe.early_stop == EarlyStopConfig() and not p.is_chain for p in tickets)
    assert [(p.kind, p.level) for p in listed if not p.is_trajectory] == [("ticket", 2), ("ticket", 2)]
    pieces = [p for p in bisect if not p.is_trajectory]
    assert [p.kind for p in pieces] == ["ticket-bisect"] * 2
    assert all(p.is_chain and p.level == 2 and p.levels == [1, 2] and p.options == {"tolerance": 0.01}
               for p in pieces)
    search = [p.key for p in listed if p.is_trajectory]
    assert search == [p.key for p in bisect if p.is_trajectory]  # which tickets are evaluated leaves the search
    assert len({p.key for p in every + listed + bisect}) == len(every) + len(listed) + 2


def _record_arms(tmp_path, full, early, arms: dict[str, str]) -> str:
    """Each arm of a tiny study (name -> early_stop), run piece by piece by the engine into one results store (seed
    0's trajectories taken from the fixtures by their content keys) and logged to one MLflow store by the sweep's own
    logging; returns the store's URI."""
    import shutil

    from cluster import tracking
    from sweeps.mlflow_runs import SweepRuns, check_layout

    uri = f"sqlite:///{tmp_path}/mlruns.db"
    for name, early_stop in arms.items():
        spec = load_spec(_spec_file(tmp_path, early_stop, name=name))
        plan = build_plan(spec)
        store = ResultsStore(spec.storage)
        finished = {FULL.content_key(): full, STOPS.content_key(): early}
        for piece in plan:
            if piece.key in finished and not os.path.isdir(store.path(piece.key)):
                shutil.copytree(finished[piece.key], store.path(piece.key))
            if piece.is_trajectory:
                run_trajectory(piece.recipe, store.path(piece.key), progress=False)
            elif piece.kind in SEARCH_KINDS:
                run_bisection(piece.recipe, store.path(piece.source_key), store.path(piece.key),
                              piece.options["tolerance"], key=piece.key, progress=False, kind=piece.kind)
            else:
                branch = BranchConfig(piece.kind, piece.recipe, store.source_mask(piece), store.path(piece.source_key))
                run_branch(branch, store.path(piece.key), run_key=piece.key, progress=False)
        client = tracking.client(uri)
        experiment = tracking.ensure_experiment(client, spec.name, uri)
        check_layout(client, experiment, spec.name)
        SweepRuns(client, experiment, plan, store).reconcile(ended=True)
    return uri


def test_early_report_against_full_imp(tmp_path, full, early):
    """Both arms of a tiny study in one MLflow store; the report states steps, stops, tickets, matching and mask
    overlap."""
    import pandas as pd

    from analysis.__main__ import main

    arms = {"full_arm": "", "early_arm": "{window: 2, threshold: 1.0, check_every: 1}"}
    uri = _record_arms(tmp_path, full, early, arms)
    out = tmp_path / "report"
    assert main(["early", "--experiment", "early_arm", "--against", "full_arm", "--tracking-uri", uri,
                 "--out", str(out)]) == 0
    summary = pd.read_csv(out / "early_summary.csv").iloc[0]
    assert (summary["search_steps"], summary["evaluation_steps"], summary["full_steps"]) == (2 * 10, 2 * 12, 2 * 18)
    assert summary["steps_ratio"] == pytest.approx(44 / 36)
    assert summary["early_matching_level"] == summary["full_matching_level"] == 2  # the tiny model: one class
    levels = pd.read_csv(out / "early.csv").set_index("level")
    assert list(levels["stopped"]) == [0, 2, 2] and levels.loc[1, "stop_step_mean"] == 2
    assert levels.loc[1, "ticket_mean"] == levels.loc[1, "full_mean"] and levels.loc[1, "jaccard_mean"] == 1.0
    assert 0 < levels.loc[2, "jaccard_mean"] <= 1 and levels.loc[2, "ticket_n"] == 2
    distances = pd.read_csv(out / "early_distances.csv")
    assert sorted(distances.groupby("level")["step"].max()) == [2, 2, 6]
    assert (out / "early_distances_sst2.png").stat().st_size > 0
    text = (out / "early.md").read_text()
    assert "ratio 1.22" in text and "sparsest matching level, full IMP: level 2" in text


@pytest.mark.parametrize("count", [1, 2, 5, 9])
def test_a_boundary_search_trains_the_predicted_level_and_the_next_sparser_and_bisects_where_it_missed(count):
    levels = list(range(1, count + 1))
    for boundary in range(count + 1):  # levels 1..boundary match, the sparser ones do not
        for predicted in range(count + 1):
            judged = []

            def matches(level):
                judged.append(level)
                return level <= boundary

            found, trace = confirm_boundary(levels, predicted, matches)
            assert found == (boundary or None) and [step["level"] for step in trace] == judged
            assert len(set(judged)) == len(judged)
            if predicted == boundary:  # a hit: that level and the next sparser one, no more
                assert set(judged) == {lv for lv in (boundary, boundary + 1) if 1 <= lv <= count}
            else:  # a miss: bisection of the levels on the side the verdicts point to
                side = predicted - 1 if predicted > boundary else count - predicted - 1
                assert len(judged) <= 2 + side.bit_length() and judged[0] == (predicted or 1)


def test_the_boundary_is_predicted_from_the_early_stopped_metrics_and_measured_levels_count_as_they_are():
    early = {1: 0.80, 2: 0.81, 3: 0.805, 4: 0.79, 5: 0.83}
    assert predict_boundary([1, 2, 3, 4, 5], early, {}, 0.01, lower=False) == (
        3, {1: True, 2: True, 3: True, 4: False, 5: True})  # 0.79 < 0.81 - 0.01: the first predicted failure
    assert predict_boundary([1, 2, 3, 4, 5], early, {5: False}, 0.03, lower=False)[0] == 4
    assert predict_boundary([1, 2], {1: 0.2, 2: 0.5}, {}, 0.1, lower=True) == (1, {1: True, 2: False})


def test_a_boundary_run_marks_every_level_it_did_not_train_as_predicted_everywhere(tmp_path, full, early):
    """Tolerance 1: every level is predicted to match, so only the sparsest (level 2) is trained to the end and level
    1 is predicted: in its metrics.json, the MLflow run's tags and metrics, the sweep summary and the report."""
    import pandas as pd

    from analysis.__main__ import main
    from cluster import conventions as cv
    from cluster import tracking

    stop = "{window: 2, threshold: 1.0, check_every: 1, evaluate: boundary, tolerance: 1.0}"
    uri = _record_arms(tmp_path, full, early, {"full_arm": "", "boundary_arm": stop})
    spec = load_spec(_spec_file(tmp_path, stop, name="boundary_arm"))
    pieces = [p for p in build_plan(spec) if p.kind == BOUNDARY]
    store = ResultsStore(spec.storage)
    assert len(pieces) == 2 and all(p.is_chain and p.options == {"tolerance": 1.0} for p in pieces)
    for piece in pieces:
        predicted, measured = (store.level_metrics(piece, level) for level in (1, 2))
        assert predicted["evaluated"] is False and predicted["predicted"] is True and predicted["metrics"] == {}
        assert predicted["matches"] and predicted["evaluation_steps"] == 0 and "early_metric" in predicted
        assert measured["evaluated"] is True and "accuracy" in measured["metrics"]
        record = measured["boundary"]
        assert record["predicted_sparsest_matching_level"] == 2 == record["sparsest_matching_level"]
        assert record["levels_evaluated"] == [2] and record["prediction_hit"] is True
        assert record["predicted_matches"] == {"1": True, "2": True} and record["predictor"]
    client = tracking.client(uri)
    experiment = client.get_experiment_by_name("boundary_arm").experiment_id
    runs = client.search_runs([experiment], filter_string=f"tags.{cv.TAG_BRANCH_KIND} = '{BOUNDARY}'")
    assert len(runs) == 2
    for run in runs:
        assert run.data.tags[cv.ticket_tag(1)] == "predicted" and run.data.tags[cv.ticket_tag(2)] == "measured"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")] == [2]
    console = Console(record=True, width=200)
    progress = SweepProgress(console)
    for level in (1, 2):  # the line the sweep prints as each level of the search's trial finishes
        result = level_report(pieces[0], level, store.level_metrics(pieces[0], level), reused=True, node_id="n")
        progress.on_trial_result(0, [], SimpleNamespace(config={"piece": {"name": pieces[0].name}}), result)
    lines = console.export_text().splitlines()
    assert "predicted match (not evaluated)" in lines[0] and "nan" not in lines[0] and "accuracy 0." in lines[1]
    console.print(results_table(SweepResult("boundary_arm", store.storage, "", pieces)))
    rows = {line.split()[1]: line for line in console.export_text().splitlines()
            if line.split()[:1] == [pieces[0].name]}
    assert "predicted match (not evaluated)" in rows["1"] and "predicted" not in rows["2"]
    out = tmp_path / "report"
    assert main(["early", "--experiment", "boundary_arm", "--against", "full_arm", "--tracking-uri", uri,
                 "--out", str(out)]) == 0
    levels = pd.read_csv(out / "early.csv").set_index("level")
    assert levels.loc[1, "predicted"] == 2 and levels.loc[1, "ticket_n"] == 0
    assert levels.loc[2, "predicted"] == 0 and levels.loc[2, "ticket_n"] == 2
    boundaries = pd.read_csv(out / "early_boundary.csv")
    assert sorted(boundaries["seed"]) == [0, 1] and set(boundaries["predicted_level"]) == {2}
    assert set(boundaries["full_level"]) == {2} and boundaries["predicted_hit"].all()  # tolerance 1: all match
    summary = pd.read_csv(out / "early_summary.csv").iloc[0]
    assert summary["boundary_predicted_hit_rate"] == 1.0 and summary["boundary_seeds"] == 2
    assert summary["evaluation_steps"] == 2 * 6  # level 2 of each seed (6 steps); level 1 never trained
    text = (out / "early.md").read_text()
    assert "PREDICTED, NOT MEASURED" in text and "Boundary search, per seed" in text
