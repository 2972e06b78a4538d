"""analysis's Python API (load, summary, matching, paired) on a quickstart-shaped store written by the sweep's own
writer from recorded levels, while the sweep still runs: the tidy rows, their agreement with the report's CSV tables,
and the example script that shows them."""

import io
import runpy
import statistics

import pandas as pd
import pytest

import analysis
from conftest import REPO
from recorded_sweep import level_values, record, spec_text, sqlite_store

# The quickstart's shape: sst2, seeds 0 and 1, IMP levels 0-2 and random pruning at levels 1 and 2.
IMP = {0: [0.80, 0.82], 1: [0.81, 0.80], 2: [0.78, 0.79]}
RANDOM_PRUNE = {1: [0.77, 0.79], 2: [0.70, None]}  # seed 1's level 2 is still training


def _values(piece, level):
    value = (IMP if piece.is_trajectory else RANDOM_PRUNE)[level][piece.recipe.seed]
    return None if value is None else level_values("accuracy", value, level)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """The store, the recorded sweep and the report written from it by `python -m analysis report`."""
    from analysis.__main__ import main

    root = tmp_path_factory.mktemp("quickstart")
    uri = sqlite_store(root)
    recorded = record(root, spec_text("quickstart", str(root / "storage"), seeds=(0, 1), levels=2,
                                      branches="{kind: random-prune, levels: all}"), uri, _values)
    training = recorded.piece("random-prune", "sst2", 1, level=2)
    recorded.runs.open(training)
    recorded.runs.started(training)
    recorded.runs.wait()  # the driver updates status in the background
    out = root / "report"
    assert main(["report", "--experiment", "quickstart", "--tracking-uri", uri, "--out", str(out), "--no-masks"]) == 0
    return {"uri": uri, "recorded": recorded, "report": out}


@pytest.fixture(scope="module")
def points(quickstart):
    return analysis.load("quickstart", tracking_uri=quickstart["uri"])


def test_load_gives_one_row_per_series_seed_and_level_with_its_run(points, quickstart):
    recorded = quickstart["recorded"]
    assert len(points) == 6 + 4 and not points.duplicated(["branch", "seed", "level"]).any()
    for level, values in IMP.items():
        for seed, value in enumerate(values):
            row = points[(points["branch"] == "imp") & (points["seed"] == seed) & (points["level"] == level)].iloc[0]
            assert row["accuracy"] == value and row["eval_loss"] == pytest.approx(1 - value)
            assert row["sparsity"] == pytest.approx(0.2 * level)
            assert row["run_id"] == recorded.run_id(recorded.piece("trajectory", "sst2", seed))
            assert (row["status"], row["problem"], row["logged"], row["partial"]) == ("FINISHED", "", True, False)
            assert (row["task"], row["model"], row["method"], row["rewind_point"]) == ("sst2", "tiny-random-bert",
                                                                                     "magnitude", "0")
    assert list(points.columns[:11]) == ["task", "model", "schedule", "method", "branch", "source_task",
                                         "rewind_point", "rewind", "seed", "level", "sparsity"]
    assert points.attrs["experiment"] == "quickstart"


def test_a_running_sweep_marks_its_partial_rows(points, quickstart):
    """Seed 1's random pruning is training level 2: its level 1 is logged but partial, level 2 planned, not logged."""
    recorded = quickstart["recorded"]
    series = points[(points["branch"] == "random-prune") & (points["seed"] == 1)].set_index("level")
    run_id = recorded.run_id(recorded.piece("random-prune", "sst2", 1, level=1))
    assert set(series["run_id"]) == {run_id} and set(series["status"]) == {"RUNNING"}
    assert (series.loc[1, "accuracy"], series.loc[1, "logged"], series.loc[1, "partial"]) == (0.79, True, True)
    assert pd.isna(series.loc[2, "accuracy"]) and not series.loc[2, "logged"] and series.loc[2, "partial"]
    assert points.loc[~points["partial"], "status"].eq("FINISHED").all()


def test_the_rows_give_the_report_summary(points, quickstart):
    """Mean, std and n over seeds of the loaded rows are the report's summary.csv, row by row."""
    written = pd.read_csv(quickstart["report"] / "summary.csv")
    logged = points[points["logged"]]
    assert len(written) == len(logged.groupby(["branch", "level"]))
    for (branch, level), rows in logged.groupby(["branch", "level"]):
        row = written[(written["branch"] == branch) & (written["level"] == level)].iloc[0]
        values = rows["accuracy"].tolist()
        assert row["accuracy_n"] == row["n"] == len(values)
        assert row["accuracy_mean"] == pytest.approx(statistics.mean(values))
        assert row["sparsity"] == pytest.approx(rows["sparsity"].mean())
        if len(values) > 1:
            assert row["accuracy_std"] == pytest.approx(statistics.stdev(values))
    partial = written[(written["branch"] == "random-prune") & (written["level"] == 2)].iloc[0]
    assert (partial["n"], partial["seeds_expected"], bool(partial["partial"])) == (1, 2, True)


@pytest.mark.parametrize("name, function", [("summary.csv", analysis.summary), ("matching.csv", analysis.matching),
                                            ("paired.csv", analysis.paired),
                                            ("paired_seeds.csv", analysis.paired_by_seed)])
def test_the_functions_return_the_tables_the_report_writes(points, quickstart, name, function):
    computed = pd.read_csv(io.StringIO(function(points).to_csv(index=False)))
    pd.testing.assert_frame_equal(computed, pd.read_csv(quickstart["report"] / name))


def test_the_example_runs_on_the_store(quickstart, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["results_api.py", quickstart["uri"]])
    runpy.run_path(str(REPO / "examples" / "results_api.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "accuracy_mean" in printed and "matching_level" in printed and "mean_difference" in printed
    assert "RUNNING" in printed and "random-prune" in printed


def test_an_unknown_experiment_is_one_clear_error(quickstart):
    from analysis.errors import AnalysisError

    with pytest.raises(AnalysisError, match="'nope' does not exist.*existing experiments: .*quickstart"):
        analysis.load("nope", tracking_uri=quickstart["uri"])
