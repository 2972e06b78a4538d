"""analysis: a real SQLite MLflow store written by the sweep's own writer from recorded levels with known numbers ->
summary, matching, transfer, masks, plots, reports."""

import os
import statistics
from urllib.parse import urlparse

import pandas as pd
import pytest

from cluster import conventions as C
from conftest import GLUE_DIR, SHARED_DATA
from recorded_sweep import MODEL, PRUNABLE, level_values, make_mask, record, spec_text, sqlite_store

SPARSITY = {0: 0.0, 1: 0.2, 2: 0.4, 3: 0.6}
SEEDS = (0, 1, 2)

# IMP trajectories: task -> level -> value per seed (None: not finished, the trajectory is still running).
IMP_VALUES = {
    "sst2": {0: [0.8125, 0.875, 0.9375], 1: [0.875, 0.875, 0.875], 2: [0.8125, 0.84375, 0.875],
             3: [0.75, 0.78125, 0.8125]},
    "cola": {0: [0.5, 0.5625, 0.625], 1: [0.5, 0.53125, 0.5625], 2: [0.5625, 0.59375, 0.625],
             3: [0.25, 0.375, None]},
}
MAIN = {"sst2": "accuracy", "cola": "mcc"}
RANDOM_PRUNE_SST2 = {1: [0.84, 0.86, 0.85], 2: [0.70, 0.72, 0.74], 3: [0.60, 0.62, 0.58]}
# Transfer at level 2: (source, target) -> value per seed (None: not finished for that seed).
TRANSFER_VALUES = {("cola", "sst2"): [0.80, 0.82, 0.84], ("sst2", "cola"): [0.55, 0.5, None]}
MASK_LEVEL = 3
# Rewinding to 5% of training: 100 steps on sst2, 50 on cola (level 0 records the steps); two seeds, levels 0-2.
REWOUND = {"sst2": {0: [0.9, 0.92], 1: [0.88, 0.9], 2: [0.85, 0.86]},
           "cola": {0: [0.6, 0.62], 1: [0.58, 0.6], 2: [0.5, 0.54]}}
REWIND_STEPS = {"sst2": 100, "cola": 50}
GLUE_BRANCHES = "{kind: random-prune}, {kind: oneshot, levels: [1]}"
GLUE_TRANSFER = "{sources: [sst2, cola], targets: [sst2, cola], sparsity: 0.4}"


def _glue_values(piece, level):
    task, seed = piece.recipe.task, piece.recipe.seed
    if piece.is_trajectory:
        value = IMP_VALUES[task][level][seed]
    elif piece.kind == "random-prune" and task == "sst2":
        value = RANDOM_PRUNE_SST2[level][seed]
    elif piece.kind == "transfer":
        value = TRANSFER_VALUES[piece.source_task, task][seed]
    else:
        value = None
    return None if value is None else level_values(MAIN[task], value, level)


def _rewind_values(piece, level):
    task, seed = piece.recipe.task, piece.recipe.seed
    if piece.is_trajectory:
        if level not in REWOUND[task]:
            return None
        extra = {"rewind_steps": REWIND_STEPS[task]} if level == 0 else {}
        return level_values(MAIN[task], REWOUND[task][level][seed], level, **extra)
    return level_values(MAIN[task], [0.52, 0.5][seed], level)  # the transfer sst2 -> cola at level 1


def artifact_file(client, run_id: str, artifact_path: str) -> str:
    """The local file of a run's artifact in a file-based artifact store."""
    return os.path.join(urlparse(client.get_run(run_id).info.artifact_uri).path, artifact_path)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Experiment 'glue' (sst2 and cola x 3 seeds x levels 0-3, random pruning, transfer, a running, a failed and a
    scheduled run, masks) and experiment 'glue_rewind' (rewind 5%, two seeds) in one SQLite store, written by the
    sweep's writer."""
    from cluster.tracking import log_step

    root = tmp_path_factory.mktemp("mlflow")
    uri = sqlite_store(root)
    glue = record(root, spec_text("glue", str(root / "storage"), tasks=("sst2", "cola"), branches=GLUE_BRANCHES,
                                  transfer=GLUE_TRANSFER), uri, _glue_values)
    client, runs = glue.client, glue.runs
    running = glue.piece("trajectory", "cola", 2)
    runs.open(running)  # a trial of cola seed 2 is logging level 3: its metrics are there, not yet its sparsity
    runs.started(running)
    log_step(client, glue.run_id(running), 3, {"samples_per_s": 32.0})
    failed = glue.piece("random-prune", "cola", 0, level=1)
    runs.open(failed)
    runs.started(failed)
    runs.close(failed, failed=True)
    runs.wait()  # the driver updates status in the background
    runs.open(glue.piece("oneshot", "sst2", 0, level=1))  # a trial waiting for resources
    foreign = client.create_run(glue.experiment_id, tags={"note": "a run a user added by hand"})
    client.set_terminated(foreign.info.run_id)
    # sst2 seed 2's level-3 mask is lost from the artifact store
    os.remove(artifact_file(client, glue.run_id(glue.piece("trajectory", "sst2", 2)), C.mask_artifact_path(3)))

    # glue_rewind planned 3 levels and ended after level 2 (its trajectories FAILED); the same spec shortened to 2
    # levels then finished them, under the tags of the first plan (3 levels planned).
    for levels in (3, 2):
        record(root, spec_text("glue_rewind", str(root / "storage"), tasks=("sst2", "cola"), seeds=(0, 1),
                               levels=levels, rewind='"5%"', transfer="{sources: [sst2], targets: [cola], "
                                                                       "sparsity: 0.2}"),
               uri, _rewind_values, sweep=False, ended=True)
    return {"uri": uri, "root": root, "glue": glue}

@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    """The report of experiment 'glue', written once through the command line entry point."""
    from analysis.__main__ import main

    out = tmp_path_factory.mktemp("report")
    assert main(["report", "--experiment", "glue", "--tracking-uri", store["uri"], "--out", str(out)]) == 0
    return out


def _row(frame, **where):
    mask = pd.Series(True, index=frame.index)
    for column, value in where.items():
        mask &= frame[column].astype(str) == str(value)
    rows = frame[mask]
    assert len(rows) == 1, f"{len(rows)} rows for {where}"
    return rows.iloc[0]


def _check_stats(row, metric, values):
    values = [v for v in values if v is not None]
    assert row[f"{metric}_n"] == len(values)
    assert row[f"{metric}_mean"] == pytest.approx(statistics.mean(values), abs=1e-12)
    if len(values) > 1:
        assert row[f"{metric}_std"] == pytest.approx(statistics.stdev(values), abs=1e-12)
    else:
        assert pd.isna(row[f"{metric}_std"])
    assert row[f"{metric}_min"] == min(values)
    assert row[f"{metric}_median"] == pytest.approx(statistics.median(values), abs=1e-12)
    assert row[f"{metric}_max"] == max(values)


def test_summary_has_exact_seed_statistics(report):
    summary = pd.read_csv(report / "summary.csv")
    for task, levels in IMP_VALUES.items():
        for level, values in levels.items():
            row = _row(summary, task=task, branch="imp", level=level)
            _check_stats(row, MAIN[task], values)
            assert row["sparsity"] == pytest.approx(SPARSITY[level])
            assert (row["method"], row["model"], row["rewind"], row["schedule"]) == ("magnitude", MODEL, 0, "original")
    for level, values in RANDOM_PRUNE_SST2.items():  # compared with the IMP of its trajectory's method
        row = _row(summary, task="sst2", branch="random-prune", level=level)
        _check_stats(row, "accuracy", values)
        assert (row["method"], row["model"], row["rewind"]) == ("magnitude", MODEL, 0)
        assert row["sparsity"] == pytest.approx(SPARSITY[level])
    partial = _row(summary, task="cola", branch="imp", level=3)
    assert (partial["n"], partial["seeds_expected"], bool(partial["partial"])) == (2, 3, True)
    assert not _row(summary, task="sst2", branch="imp", level=3)["partial"]
    _check_stats(_row(summary, task="sst2", branch="imp", level=2), "eval_loss", [0.1875, 0.15625, 0.125])
    assert "train_loss_mean" in summary  # every metric is summarised, not only the known ones
    assert set(summary["branch"]) == {"imp", "random-prune", "transfer"}  # the failed run has no values
    assert (summary["samples_per_s_n"] == 0).all()  # at level 3 of the trial still logging it, before its sparsity


def test_matching_levels_and_the_within_one_std_case(report):
    matching = pd.read_csv(report / "matching.csv")
    sst2 = _row(matching, task="sst2", branch="imp", metric="accuracy")
    assert (sst2["dense_n"], sst2["dense_mean"], sst2["dense_std"]) == (3, 0.875, 0.0625)
    assert sst2["threshold"] == 0.8125
    # level 2 (mean 0.84375) is within one dense std but below the dense mean: matching, not strictly matching
    assert (sst2["matching_level"], sst2["matching_mean"]) == (2, 0.84375)
    assert sst2["matching_sparsity"] == pytest.approx(0.4)
    assert (sst2["strict_level"], sst2["strict_mean"]) == (1, 0.875)
    assert sst2["strict_sparsity"] == pytest.approx(0.2)
    assert sst2["matching_n"] == 3 and bool(sst2["is_main"])
    cola = _row(matching, task="cola", branch="imp", metric="mcc")
    assert (cola["dense_mean"], cola["threshold"]) == (0.5625, 0.5)
    assert (cola["matching_level"], cola["strict_level"]) == (2, 2)
    assert bool(cola["partial"])
    random = _row(matching, task="sst2", branch="random-prune", metric="accuracy")
    assert random["matching_level"] == 1 and pd.isna(random["strict_level"])
    assert random["dense_mean"] == 0.875  # judged against the IMP trajectories' level 0


def test_paired_differences_imp_minus_random_pruning_by_seed(report):
    """paired.csv: at every level, IMP minus random pruning of the same seed; cola's only baseline run failed
    without values and transfers are compared in transfer.csv, so sst2's random pruning is the only baseline."""
    paired = pd.read_csv(report / "paired.csv")
    assert set(zip(paired["task"], paired["baseline"])) == {("sst2", "random-prune")}
    for level, values in RANDOM_PRUNE_SST2.items():
        row = _row(paired, task="sst2", baseline="random-prune", level=level, metric="accuracy")
        diffs = [imp - random for imp, random in zip(IMP_VALUES["sst2"][level], values)]
        assert (row["n"], row["sparsity"]) == (3, SPARSITY[level])
        assert row["mean_difference"] == pytest.approx(statistics.mean(diffs))
        assert row["std_difference"] == pytest.approx(statistics.stdev(diffs))
        assert row["ci_low"] < row["mean_difference"] < row["ci_high"]
    assert "## IMP minus each baseline, paired by seed" in (report / "report.md").read_text()


def test_one_dense_seed_gives_only_the_strict_verdict_and_says_why(tmp_path):
    """One sst2 seed: no dense std, so no matching verdict (noted), but the strictly matching one from the mean;
    a transfer to cola, which has no trajectory, has no dense reference at all (noted)."""
    import html

    from analysis.__main__ import main
    from analysis.matching import NOTE_NO_DENSE, NOTE_ONE_DENSE_SEED

    uri = sqlite_store(tmp_path)
    spec = spec_text("one_seed", str(tmp_path / "storage"), seeds=(0,), transfer="{sources: [sst2], targets: [cola], "
                                                                                  "sparsity: 0.4}")
    record(tmp_path, spec, uri, lambda piece, level: level_values(
        MAIN[piece.recipe.task], 0.5 if piece.kind == "transfer" else IMP_VALUES["sst2"][level][0], level))
    out = tmp_path / "report"
    assert main(["report", "--experiment", "one_seed", "--tracking-uri", uri, "--out", str(out), "--no-masks"]) == 0
    matching = pd.read_csv(out / "matching.csv", keep_default_na=False, na_values=[""])
    sst2 = _row(matching, task="sst2", branch="imp", metric="accuracy")
    assert (sst2["dense_n"], sst2["dense_mean"]) == (1, 0.8125) and pd.isna(sst2["dense_std"])
    assert pd.isna(sst2["threshold"]) and pd.isna(sst2["matching_level"])
    assert sst2["matching_note"] == NOTE_ONE_DENSE_SEED
    assert (sst2["strict_level"], sst2["strict_mean"]) == (2, 0.8125)  # levels 1 (0.875) and 2 (0.8125) >= 0.8125
    cola = _row(matching, task="cola", branch="transfer", metric="mcc")
    assert cola["dense_n"] == 0 and cola["matching_note"] == NOTE_NO_DENSE
    assert pd.isna(cola["matching_level"]) and pd.isna(cola["strict_level"])
    for name, escape in (("report.md", str), ("report.html", html.escape)):
        text = (out / name).read_text()
        assert text.count(escape(f"no verdict: {NOTE_ONE_DENSE_SEED}")) == 1, name
        assert text.count(escape(f"no verdict: {NOTE_NO_DENSE}")) == 2, name  # neither verdict for cola
    md = (out / "report.md").read_text()
    assert "| level 2 (40.0%): 0.8125 ± n/a (n=1) |" in md


def test_transfer_differences(report):
    transfer = pd.read_csv(report / "transfer.csv")
    cola_to_sst2 = _row(transfer, source_task="cola", task="sst2", metric="accuracy")
    assert cola_to_sst2["self_source"] == "imp"  # TRANSFER(T,T): the target's own IMP trajectories at level 2
    assert cola_to_sst2["transfer_mean"] == pytest.approx(0.82)
    assert cola_to_sst2["self_mean"] == pytest.approx(0.84375)
    assert cola_to_sst2["diff"] == pytest.approx(0.82 - 0.84375)
    assert (cola_to_sst2["diff_n"], cola_to_sst2["transfer_n"]) == (3, 3)
    assert cola_to_sst2["diff_std"] == pytest.approx(statistics.stdev([0.80 - 0.8125, 0.82 - 0.84375, 0.84 - 0.875]))
    sst2_to_cola = _row(transfer, source_task="sst2", task="cola", metric="mcc")
    assert sst2_to_cola["self_source"] == "imp"
    assert (sst2_to_cola["transfer_n"], sst2_to_cola["self_n"], sst2_to_cola["diff_n"]) == (2, 3, 2)
    assert sst2_to_cola["diff"] == pytest.approx(0.525 - 0.59375)
    assert sst2_to_cola["diff_std"] == pytest.approx(statistics.stdev([0.55 - 0.5625, 0.5 - 0.59375]))
    assert set(zip(transfer["source_task"], transfer["task"])) == {("cola", "sst2"), ("sst2", "cola")}


def test_masks_layer_sparsity_and_overlap(report):
    from tickets.masks import overlap

    layers = pd.read_csv(report / "layer_sparsity.csv")
    assert set(zip(layers["task"], layers["seed"])) == {("sst2", 0), ("sst2", 1), ("cola", 0), ("cola", 1)}
    assert set(layers["level"]) == {MASK_LEVEL}
    for (task, seed), rows in layers.groupby(["task", "seed"]):
        expected = make_mask(task, seed, MASK_LEVEL, SPARSITY[MASK_LEVEL]).layer_sparsity()
        assert dict(zip(rows["tensor"], rows["tensor_sparsity"])) == pytest.approx(expected)
    assert set(layers["kind"]) == {"query", "intermediate", "pooler.dense"}
    assert set(layers["layer"].dropna()) == {0, 1} and layers["layer"].isna().sum() == 4  # the pooler: no layer
    pairs = pd.read_csv(report / "overlap.csv")
    assert len(pairs) == 6
    for _, pair in pairs.iterrows():
        want = overlap(make_mask(pair["task_a"], pair["seed_a"], MASK_LEVEL, SPARSITY[MASK_LEVEL]),
                       make_mask(pair["task_b"], pair["seed_b"], MASK_LEVEL, SPARSITY[MASK_LEVEL]))
        assert pair["jaccard"] == pytest.approx(want["jaccard"])
        assert pair["hamming"] == pytest.approx(want["hamming"])
    text = (report / "report.md").read_text()
    assert "masks/level_03.safetensors" in text and "Masks that could not be read (1)" in text


def test_plots_and_reports_are_written(report):
    for name in ("curves_sst2.png", "curves_cola.png", "transfer.png", "layer_sparsity.png",
                 "overlap_tasks.png", "overlap_seeds.png"):
        path = report / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000, name
    md = (report / "report.md").read_text()
    html = (report / "report.html").read_text()
    assert "PARTIAL RESULTS" in md and "running" in md and "failed" in md
    assert all(f"`{pattern}`" in md for pattern in PRUNABLE) and MODEL in md
    assert "1 runs are scheduled and have not started: 1 oneshot." in md
    assert "imp cola s2 r0" in md and "random-prune cola s0 r0" in md  # the running and the failed run are named
    assert "0.8750 ± 0.0625 [0.8125, 0.9375] (n=3)" in md
    assert "level 2 (40.0%): 0.8438 ± 0.0312 (n=3)" in md
    assert html.count("data:image/png;base64,") == 6 and "<img" in html and "src='curves" not in html
    assert "1 runs without run_kind" in md


def test_compare_puts_experiments_side_by_side(store, tmp_path):
    from analysis.__main__ import main

    out = tmp_path / "compare"
    assert main(["compare", "--experiment", "glue", "--experiment", "glue_rewind",
                 "--tracking-uri", store["uri"], "--out", str(out)]) == 0
    table = pd.read_csv(out / "compare.csv")
    row = _row(table, task="sst2", branch="imp", metric="accuracy", sparsity_pct=20.0)
    assert row["glue: mean"] == 0.875 and row["glue: n"] == 3
    assert row["glue_rewind: mean"] == pytest.approx(0.89) and row["glue_rewind: n"] == 2
    assert row["glue_rewind - glue: mean"] == pytest.approx(0.89 - 0.875)
    assert pd.isna(_row(table, task="sst2", branch="random-prune", metric="accuracy", sparsity_pct=20.0)[
        "glue_rewind: mean"])
    assert (out / "compare_sst2.png").stat().st_size > 10_000
    text = (out / "compare.md").read_text()
    assert "glue: 3 of 16 runs not complete (1 failed, 1 running, 1 scheduled)" in text
    assert "glue_rewind: 4 of 6 runs not complete (4 incomplete)" in text  # 3 levels planned, 0-2 logged
    assert (out / "compare.html").exists()


def test_transfer_lines_up_with_the_target_by_rewind_point(store):
    """5% rewinding is 100 steps on the source sst2 and 50 on the target cola: matched on the point '5%'."""
    from analysis.collect import collect, open_client
    from analysis.transfer import transfer_table

    collected = collect(open_client(store["uri"]), "glue_rewind")
    assert set(collected.runs["rewind_point"]) == {"5%"} and set(collected.runs["rewind"].dropna()) == {50, 100}
    row = _row(transfer_table(collected.table(), collected.main_metrics()), source_task="sst2", task="cola")
    assert (row["self_source"], row["self_n"], row["diff_n"]) == ("imp", 2, 2)
    assert row["diff"] == pytest.approx(0.51 - 0.59)


def test_choose_levels_by_level_and_nearest_sparsity(store):
    from analysis.collect import collect, open_client
    from analysis.masks import choose_levels

    table = collect(open_client(store["uri"]), "glue").table()
    assert set(choose_levels(table, level=2)["level"]) == {2} and len(choose_levels(table, level=2)) == 6
    nearest = choose_levels(table, sparsity=0.45)
    assert set(nearest["level"]) == {2} and len(nearest) == 6
    default = choose_levels(table)
    assert set(default["level"]) == {3} and len(default) == 5  # cola seed 2 (running) has no level 3


def test_bulk_history_matches_per_run_history(store, monkeypatch):
    from analysis.collect import fetch_histories, open_client, search_all_runs

    client = open_client(store["uri"])
    runs = search_all_runs(client, client.get_experiment_by_name("glue").experiment_id)
    slow = pd.DataFrame([dict(run_id=r.info.run_id, key=k, step=m.step, value=m.value, timestamp=m.timestamp)
                         for r in runs for k in r.data.metrics if k != C.METRIC_LEVEL  # the level repeats the step
                         for m in client.get_metric_history(r.info.run_id, k)])
    slow = slow.sort_values(["run_id", "key", "step"]).reset_index(drop=True)
    monkeypatch.setattr(client, "get_metric_history", lambda *a: pytest.fail("one request per run and key"))
    bulk = fetch_histories(client, runs).sort_values(["run_id", "key", "step"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(bulk[slow.columns], slow)


def test_truncated_bulk_answers_are_split(store, monkeypatch):
    import analysis.collect as collect_module

    client = collect_module.open_client(store["uri"])
    full = collect_module.collect(client, "glue").table()
    monkeypatch.setattr(collect_module, "BULK_MAX_POINTS", 4)  # a trajectory has 4 levels: its answer looks cut
    pd.testing.assert_frame_equal(collect_module.collect(client, "glue").table(), full)


def test_unknown_experiment_lists_existing_ones(store, tmp_path, capsys):
    from analysis.__main__ import main

    assert main(["report", "--experiment", "nope", "--tracking-uri", store["uri"], "--out", str(tmp_path)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "'nope' does not exist" in lines[0] and "glue, glue_rewind" in lines[0]


def test_missing_store_and_unreachable_server_give_one_line(tmp_path, capsys):
    from analysis.__main__ import main

    assert main(["report", "--experiment", "x", "--tracking-uri", f"sqlite:///{tmp_path}/none.db",
                 "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "none.db").exists()
    assert main(["report", "--experiment", "x", "--tracking-uri", "http://127.0.0.1:9", "--out", str(tmp_path)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 2
    assert "does not exist" in errors[0] and "tracking server at http://127.0.0.1:9 is not reachable" in errors[1]


def test_tracking_server_is_read_in_pages_and_in_bulk(store, monkeypatch):
    """Through a real MLflow tracking server (its Flask app in a thread): paged search and the bulk REST endpoint,
    never one history request per run and metric."""
    import logging
    import threading

    from mlflow.server import app, handlers
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from werkzeug.serving import make_server

    import analysis.collect as collect_module

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    monkeypatch.setattr(handlers, "_tracking_store", SqlAlchemyStore(store["uri"], str(store["root"] / "mlartifacts")))
    monkeypatch.setattr(collect_module, "PAGE_SIZE", 5)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = collect_module.open_client(f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setattr(client, "get_metric_history", lambda *a: pytest.fail("one request per run and key"))
        remote = collect_module.collect(client, "glue")
    finally:
        server.shutdown()
    local = collect_module.collect(collect_module.open_client(store["uri"]), "glue")
    assert len(remote.runs) == len(local.runs) == 16
    pd.testing.assert_frame_equal(remote.table(), local.table())


def test_a_task_trained_on_part_of_its_dev_set_is_flagged_in_the_report(tmp_path):
    from analysis.__main__ import main

    uri = sqlite_store(tmp_path)
    spec = spec_text("dev_split", str(tmp_path / "storage"), tasks=("squad-dev-split",), seeds=(0,), levels=0)
    record(tmp_path, spec.replace(f"data_dir: {GLUE_DIR}", f"data_dir: {SHARED_DATA}"), uri,
           lambda piece, level: {"metrics": {"f1": 9.3, "exact_match": 5.7}})
    out = tmp_path / "report"
    assert main(["report", "--experiment", "dev_split", "--tracking-uri", uri, "--out", str(out), "--no-masks"]) == 0
    assert "NOT COMPARABLE TO PUBLISHED NUMBERS: squad-dev-split" in (out / "report.md").read_text()
