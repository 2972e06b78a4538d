"""The report's paired comparison (IMP minus each baseline by seed, verdicts by the rule on means and per seed), its
plots, run links, and its upload to the sweep run, on a real SQLite MLflow store written by the sweep's own writer
from recorded levels with known numbers.

Experiment 'paired': sst2, seeds 0-2, IMP trajectories with levels 0-2 (schedule 'remaining': 20%, 36%); random pruning
at levels 1 and 2 (one series run per seed holding both levels as steps); one-shot pruning at level 1, seeds 0 and 1
only; a sweep run whose `report/` already holds a file of an earlier report.
"""

import os
import statistics

import pandas as pd
import pytest
from scipy import stats

from cluster import conventions as C
from recorded_sweep import level_values, record, spec_text, sqlite_store

SPARSITY = {0: 0.0, 1: 0.2, 2: 0.36}
IMP = {0: [0.80, 0.84, 0.88], 1: [0.83, 0.80, 0.86], 2: [0.78, 0.76, 0.83]}
RANDOM_PRUNE = {1: [0.80, 0.78, 0.84], 2: [0.70, 0.72, 0.74]}
ONESHOT = {1: [0.81, 0.79, None]}
DENSE_MEAN, DENSE_STD = statistics.mean(IMP[0]), statistics.stdev(IMP[0])
STALE = "curves_mnli.png"
BRANCHES = "{kind: random-prune, levels: [1, 2]}, {kind: oneshot, levels: [1]}"


def _values(piece, level):
    table = {"trajectory": IMP, "random-prune": RANDOM_PRUNE, "oneshot": ONESHOT}[piece.kind]
    value = table[level][piece.recipe.seed]
    return None if value is None else level_values("accuracy", value, level)


def build_store(root, name="paired", sweep=True, branches=BRANCHES, values=_values, ended=False):
    """The experiment described in the module docstring, recorded into `root`; returns (uri, run ids by (series,
    seed), the recorded sweep)."""
    from analysis.publish import publish

    uri = sqlite_store(root)
    recorded = record(root, spec_text(name, str(root / "storage"), levels=2, schedule="remaining",
                                      branches=branches), uri, values, sweep=sweep, ended=ended)
    ids = {(kind, seed): recorded.run_id(recorded.piece(kind, "sst2", seed, level=None if kind == "trajectory" else 1))
           for kind in ("trajectory", "random-prune") for seed in range(3)}
    ids = {("imp" if kind == "trajectory" else kind, seed): run_id for (kind, seed), run_id in ids.items()}
    ids.update({("oneshot", seed): recorded.run_id(recorded.piece("oneshot", "sst2", seed, level=1)) for seed in (0, 1)})
    if sweep:
        ids["sweep"] = recorded.sweep_run
        stale = root / STALE
        stale.write_text("an earlier report's plot")
        publish(recorded.client, recorded.sweep_run, [str(stale)])
    return uri, ids, recorded


@pytest.fixture(scope="module")
def paired_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("paired")
    uri, ids, _ = build_store(root)
    return {"uri": uri, "ids": ids, "root": root}


@pytest.fixture(scope="module")
def paired_report(paired_store, tmp_path_factory):
    """The report of 'paired' through the command line, with what it printed."""
    import contextlib
    import io

    from analysis.__main__ import main

    out = tmp_path_factory.mktemp("paired_report")
    printed, warned = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(warned):
        assert main(["report", "--experiment", "paired", "--tracking-uri", paired_store["uri"], "--out", str(out)]) == 0
    return {"out": out, "stdout": printed.getvalue(), "stderr": warned.getvalue()}


def _row(frame, **where):
    mask = pd.Series(True, index=frame.index)
    for column, value in where.items():
        mask &= frame[column].astype(str) == str(value)
    assert mask.sum() == 1, f"{mask.sum()} rows for {where}"
    return frame[mask].iloc[0]


def test_paired_difference_is_over_seeds_with_the_paired_t_test(paired_report):
    paired = pd.read_csv(paired_report["out"] / "paired.csv")
    assert set(paired["baseline"]) == {"random-prune", "oneshot"} and set(paired["metric"]) == {"accuracy"}
    for level in (1, 2):
        row = _row(paired, level=level, baseline="random-prune")
        diffs = [a - b for a, b in zip(IMP[level], RANDOM_PRUNE[level])]
        mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
        half = stats.t.ppf(0.975, len(diffs) - 1) * sd / len(diffs) ** 0.5
        assert (row["n"], row["seeds"], row["sparsity"]) == (3, "0,1,2", SPARSITY[level])
        assert row["mean_difference"] == pytest.approx(mean) and row["std_difference"] == pytest.approx(sd)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((mean - half, mean + half))
        assert row["p_value"] == pytest.approx(2 * stats.t.sf(mean / (sd / 3 ** 0.5), 2))
        assert row["per_seed_differences"] == ";".join(f"{s}:{d:+.6g}" for s, d in enumerate(diffs))
        assert (row["dense_n"], row["dense_mean"], row["threshold"]) == (3, pytest.approx(DENSE_MEAN),
                                                                         pytest.approx(DENSE_MEAN - DENSE_STD))
    oneshot = _row(paired, level=1, baseline="oneshot")  # seed 2 has no one-shot run: two pairs, IMP still has 3
    assert (oneshot["n"], oneshot["seeds"], oneshot["imp_n"], oneshot["baseline_n"]) == (2, "0,1", 3, 2)
    assert oneshot["mean_difference"] == pytest.approx(statistics.mean([0.83 - 0.81, 0.80 - 0.79]))
    assert oneshot["imp_mean"] == pytest.approx(statistics.mean(IMP[1]))


def test_verdicts_by_the_rule_on_means_and_per_seed(paired_report):
    """Level 1: IMP's mean 0.83 and random pruning's 0.8067 both reach dense mean - std (0.80), neither the dense
    mean; per seed against each seed's own dense run (0.80, 0.84, 0.88), IMP matches in 3 of 3 seeds, random
    pruning in 2 (seed 1: 0.78 < 0.80); strictly, each in 1 (IMP seed 0: 0.83 >= 0.80; random seed 0: 0.80 >= 0.80)."""
    paired = pd.read_csv(paired_report["out"] / "paired.csv")
    row = _row(paired, level=1, baseline="random-prune")
    assert (row["imp_matching"], row["imp_strictly_matching"]) == (True, False)
    assert (row["baseline_matching"], row["baseline_strictly_matching"]) == (True, False)
    assert (row["imp_seeds_judged"], row["imp_matching_seeds"], row["imp_strictly_matching_seeds"]) == (3, 3, 1)
    assert (row["baseline_seeds_judged"], row["baseline_matching_seeds"],
            row["baseline_strictly_matching_seeds"]) == (3, 2, 1)
    deeper = _row(paired, level=2, baseline="random-prune")
    assert (deeper["imp_matching"], deeper["imp_matching_seeds"], deeper["baseline_matching_seeds"]) == (False, 1, 0)
    matching = pd.read_csv(paired_report["out"] / "matching.csv")
    imp = _row(matching, branch="imp", metric="accuracy")
    assert (imp["matching_level"], imp["seedwise_matching_level"], imp["seedwise_matching_seeds"]) == (1, 1, 3)
    assert pd.isna(imp["seedwise_strict_level"])
    random = _row(matching, branch="random-prune", metric="accuracy")
    assert random["matching_level"] == 1 and pd.isna(random["seedwise_matching_level"])  # the mean matches, a seed not
    md = (paired_report["out"] / "report.md").read_text()
    assert "## IMP minus each baseline, paired by seed" in md
    assert "per seed: matching in 2 of 3, strictly in 1 of 3" in md
    assert "+0.0233 ± 0.0058 (n=3), 95% CI" in md and "s0: +0.0300, s1: +0.0200, s2: +0.0200" in md


def test_per_seed_rows_name_their_runs_including_a_run_holding_two_levels(paired_report, paired_store):
    seeds = pd.read_csv(paired_report["out"] / "paired_seeds.csv")
    ids = paired_store["ids"]
    assert len(seeds[seeds["baseline"] == "random-prune"]) == 6
    for level in (1, 2):
        for seed in range(3):
            row = _row(seeds, level=level, baseline="random-prune", seed=seed)
            assert row["baseline_run_id"] == ids["random-prune", seed]  # one run, both levels
            assert row["imp_run_id"] == ids["imp", seed] and row["dense_run_ids"] == ids["imp", seed]
            assert row["difference"] == pytest.approx(IMP[level][seed] - RANDOM_PRUNE[level][seed])
            assert row["dense_value"] == pytest.approx(IMP[0][seed])
    missing = _row(seeds, level=1, baseline="oneshot", seed=2)
    assert pd.isna(missing["baseline_value"]) and pd.isna(missing["difference"]) and missing["imp_value"] == 0.86
    paired = pd.read_csv(paired_report["out"] / "paired.csv")
    assert _row(paired, level=2, baseline="random-prune")["baseline_run_ids"] == ";".join(
        f"{s}:{ids['random-prune', s]}" for s in range(3))
    md = (paired_report["out"] / "report.md").read_text()
    assert f"IMP s0 {ids['imp', 0][:8]}" in md and f"random-prune s2 {ids['random-prune', 2][:8]}" in md


def test_plots_without_information_are_left_out(paired_report):
    """One task: no between-task overlap heatmap (its diagonal would repeat the seeds one); no transfer runs."""
    out = paired_report["out"]
    for name in ("curves_sst2.png", "layer_sparsity.png", "overlap_seeds.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not (out / "overlap_tasks.png").exists() and not (out / "transfer.png").exists()
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3


def test_report_is_uploaded_to_the_sweep_run_and_stale_files_are_named(paired_report, paired_store):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=paired_store["uri"])
    run_id = paired_store["ids"]["sweep"]
    stored = {os.path.basename(a.path) for a in client.list_artifacts(run_id, C.REPORT_ARTIFACT_DIR)}
    written = {"report.html", "report.md", "summary.csv", "matching.csv", "paired.csv", "paired_seeds.csv",
               "transfer.csv", "structured.csv", "layer_sparsity.csv", "overlap.csv", "curves_sst2.png",
               "layer_sparsity.png", "overlap_seeds.png"}
    assert stored == written | {STALE}
    lines = paired_report["stdout"].splitlines()
    line = next(line for line in lines if line.startswith("uploaded"))
    assert line.startswith(f"uploaded {len(written)} files to artifacts report/ of the sweep run {run_id}")
    assert line.endswith(f"1 files there are left from an earlier report (MLflow cannot delete artifacts; "
                         f"report.md lists the current ones): {STALE}")
    assert paired_report["stderr"] == ""
    local = (paired_report["out"] / "report.md").read_text()
    remote = client.download_artifacts(run_id, f"{C.REPORT_ARTIFACT_DIR}/report.md", str(paired_store["root"]))
    assert open(remote).read() == local and f"Sweep run: {run_id}" in local
    assert "runs without run_kind" not in local  # the sweep run is not an ignored run


def test_without_a_sweep_run_the_upload_is_skipped_in_one_line(tmp_path, capsys):
    from analysis.__main__ import main

    uri, _, _ = build_store(tmp_path, name="no_sweep", sweep=False)
    out = tmp_path / "report"
    assert main(["report", "--experiment", "no_sweep", "--tracking-uri", uri, "--out", str(out), "--no-masks"]) == 0
    printed = capsys.readouterr()
    assert "experiment 'no_sweep' has no sweep run (tag run_kind=sweep): the report was not uploaded" in printed.out
    assert "warning" not in printed.err and (out / "paired.csv").exists()


def test_an_unwritable_artifact_store_gives_one_warning_and_the_report_on_disk(tmp_path, capsys):
    """The sweep run's artifact folder has become a file (a broken artifact store): the upload fails."""
    import shutil
    from urllib.parse import urlparse

    from analysis.__main__ import main

    uri, ids, recorded = build_store(tmp_path, name="read_only")
    artifacts = urlparse(recorded.client.get_run(ids["sweep"]).info.artifact_uri).path
    shutil.rmtree(artifacts)
    open(artifacts, "w").write("not a folder")
    out = tmp_path / "report"
    assert main(["report", "--experiment", "read_only", "--tracking-uri", uri, "--out", str(out), "--no-masks"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "mlflow.store.db" not in line]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"warning: could not write the report to artifacts report/ of the sweep run "
                                  f"{ids['sweep']}") and warnings[0].endswith("the report on disk is complete")
    assert (out / "report.md").exists() and (out / "report.html").exists() and (out / "paired.csv").exists()


def test_runs_link_to_the_mlflow_ui_of_a_tracking_server(paired_store, tmp_path, monkeypatch):
    """Through a real MLflow tracking server (its Flask app in a thread): every run cell links to its UI page."""
    import logging
    import threading

    from mlflow.server import app, handlers
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from werkzeug.serving import make_server

    from analysis.__main__ import main

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    monkeypatch.setattr(handlers, "_tracking_store",
                        SqlAlchemyStore(paired_store["uri"], str(paired_store["root"] / "mlartifacts")))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_port}"
    out = tmp_path / "report"
    try:
        assert main(["report", "--experiment", "paired", "--tracking-uri", uri, "--out", str(out), "--no-masks"]) == 0
    finally:
        server.shutdown()
    from mlflow import MlflowClient

    exp_id = MlflowClient(tracking_uri=paired_store["uri"]).get_experiment_by_name("paired").experiment_id
    url = f"{uri}/#/experiments/{exp_id}/runs/{paired_store['ids']['random-prune', 1]}"
    assert f"[random-prune s1]({url})" in (out / "report.md").read_text()
    assert f"<a href='{url}'>random-prune s1</a>" in (out / "report.html").read_text()


def test_a_baseline_series_missing_a_planned_level_is_flagged_incomplete(tmp_path):
    """Random pruning planned at levels 1 and 2 whose seed-0 trial failed after level 1 (the sweep ended, its run
    FAILED); the same spec re-run with random pruning at level 1 only finishes that series under the tags of the first
    plan (levels 1,2): it is named incomplete with the missing level; the complete series are not."""
    from analysis.collect import collect, open_client

    def without_seed0_level2(piece, level):
        return None if (piece.kind, piece.recipe.seed, level) == ("random-prune", 0, 2) else _values(piece, level)

    uri, ids, _ = build_store(tmp_path, values=without_seed0_level2, ended=True)
    build_store(tmp_path, branches="{kind: random-prune, levels: [1]}, {kind: oneshot, levels: [1]}")
    runs = collect(open_client(uri), "paired").runs.set_index("run_id")
    assert runs.loc[ids["random-prune", 0], "status"] == "FINISHED"
    assert runs.loc[ids["random-prune", 0], "problem"] == "incomplete: level(s) 2 of 2 planned not logged"
    assert all(runs.loc[ids["random-prune", seed], "problem"] == "" for seed in (1, 2))
    assert runs.loc[ids["imp", 0], "problem"] == ""
