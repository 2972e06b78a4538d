"""analysis: a real SQLite MLflow store with known numbers -> summary, matching, transfer, masks, plots, reports."""

import json
import os
import statistics
import time

import pandas as pd
import pytest
import torch

from cluster import conventions as C

MODEL = "tiny-model"
PRUNABLE = [r"encoder\.layer\.\d+\.attention\.self\.(query|key|value)\.weight",
            r"encoder\.layer\.\d+\.intermediate\.dense\.weight"]
SPARSITY = {0: 0.0, 1: 0.2, 2: 0.4, 3: 0.6}
SEEDS = (0, 1, 2)

# IMP trajectories: task -> level -> value per seed (None: not logged, the run is still running).
IMP_VALUES = {
    "sst2": {0: [0.8125, 0.875, 0.9375], 1: [0.875, 0.875, 0.875], 2: [0.8125, 0.84375, 0.875],
             3: [0.75, 0.78125, 0.8125]},
    "cola": {0: [0.5, 0.5625, 0.625], 1: [0.5, 0.53125, 0.5625], 2: [0.5625, 0.59375, 0.625],
             3: [0.25, 0.375, None]},
}
MAIN = {"sst2": "accuracy", "cola": "mcc"}
RANDOM_PRUNE_SST2 = {1: [0.84, 0.86, 0.85], 2: [0.70, 0.72, 0.74], 3: [0.60, 0.62, 0.58]}
# Transfer at level 2: (source, target) -> value per seed (None: no run for that seed).
TRANSFER_VALUES = {("cola", "sst2"): [0.80, 0.82, 0.84], ("sst2", "sst2"): [0.85, 0.86, 0.87],
                   ("sst2", "cola"): [0.55, 0.5, None]}
MASK_LEVEL = 3


def _mask(seed: int, task: str, level: int):
    from tickets.masks import Mask

    g = torch.Generator().manual_seed(1000 * level + 10 * seed + (task == "cola"))
    keep = 1.0 - SPARSITY[level]
    shapes = {"encoder.layer.0.attention.self.query.weight": (8, 8),
              "encoder.layer.0.intermediate.dense.weight": (16, 8),
              "encoder.layer.1.attention.self.query.weight": (8, 8),
              "encoder.layer.1.intermediate.dense.weight": (16, 8), "pooler.dense.weight": (8, 8)}
    tensors = {n: torch.rand(*s, generator=g) < keep * (0.8 if "query" in n else 1.1) for n, s in shapes.items()}
    return Mask(tensors, {"level": str(level), "seed": str(seed), "source_task": task, "model_id": MODEL})


def _log(client, run_id, level, values: dict, clock=[0]):  # noqa: B006 - a shared, increasing timestamp
    from mlflow.entities import Metric

    clock[0] += 1
    stamp = int(time.time() * 1000) + clock[0]
    client.log_batch(run_id, metrics=[Metric(k, v, stamp, level) for k, v in values.items()])


def _trajectory(client, exp, task, seed, rewind=0, levels=IMP_VALUES, status="FINISHED", point=None):
    tags = {C.TAG_RUN_KIND: C.RUN_KIND_TRAJECTORY, C.TAG_TASK: task, C.TAG_SEED: str(seed),
            C.TAG_METHOD: "magnitude", C.TAG_REWIND: str(rewind), C.TAG_REWIND_POINT: point or str(rewind),
            C.TAG_SCHEDULE: "original", C.TAG_MODEL: MODEL, C.TAG_CONTENT_KEY: f"{task}-{seed}-{rewind}",
            C.TAG_PRUNABLE_SET: json.dumps(PRUNABLE), C.TAG_MAIN_METRIC: MAIN[task], C.TAG_LEVELS_PLANNED: "3",
            "sweep_extra_tag": "ignored"}
    run = client.create_run(exp, tags=tags, run_name=f"{task}-s{seed}")
    for level, values in levels[task].items():
        if values[seed] is not None:
            _log(client, run.info.run_id, level, {MAIN[task]: values[seed], C.METRIC_SPARSITY: SPARSITY[level],
                                                  "eval_loss": 1.0 - values[seed], "train_loss": 0.1 * level})
    if status == "RUNNING":  # level 3 is being logged: its values are there, its commit marker `sparsity` not yet
        _log(client, run.info.run_id, 3, {MAIN[task]: 0.0, "eval_loss": 9.0})
    else:
        client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def _branch(client, exp, parent, kind, task, seed, level, value, source=None, status="FINISHED", inherit=False,
            rewind=0, point="0"):
    tags = {C.TAG_RUN_KIND: C.RUN_KIND_BRANCH, C.TAG_BRANCH_KIND: kind, C.TAG_SEED: str(seed),
            C.TAG_SOURCE_LEVEL: str(level), C.TAG_PARENT_RUN: parent, C.TAG_TASK: task}
    if source:
        tags[C.TAG_SOURCE_TASK] = source
    if not inherit:
        tags.update({C.TAG_METHOD: "magnitude", C.TAG_REWIND: str(rewind), C.TAG_REWIND_POINT: point,
                     C.TAG_SCHEDULE: "original", C.TAG_MODEL: MODEL, C.TAG_MAIN_METRIC: MAIN[task]})
    run = client.create_run(exp, tags=tags, run_name=f"{kind}-{task}-s{seed}-l{level}")
    if value is not None:
        _log(client, run.info.run_id, level, {MAIN[task]: value, C.METRIC_SPARSITY: SPARSITY[level]})
    if status == "SCHEDULED":
        client.update_run(run.info.run_id, status=status)
    else:
        client.set_terminated(run.info.run_id, status=status)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Experiment 'glue' (2 tasks x 3 seeds x levels 0-3, branches, transfer, a running and a failed run, masks)
    and experiment 'glue_rewind' (sst2, rewind 100, two seeds) in one SQLite store."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("glue", artifact_location=(root / "artifacts").as_uri())
    trajectories = {}
    for task in ("sst2", "cola"):
        for seed in SEEDS:
            running = task == "cola" and seed == 2
            trajectories[task, seed] = _trajectory(client, exp, task, seed, status="RUNNING" if running else "FINISHED")
    for seed in SEEDS:
        for level, values in RANDOM_PRUNE_SST2.items():
            _branch(client, exp, trajectories["sst2", seed], "random-prune", "sst2", seed, level, values[seed],
                    inherit=True)
        for (source, target), values in TRANSFER_VALUES.items():
            if values[seed] is not None:
                _branch(client, exp, trajectories[source, seed], "transfer", target, seed, 2, values[seed], source)
    _branch(client, exp, trajectories["cola", 0], "random-prune", "cola", 0, 1, None, status="FAILED")
    _branch(client, exp, trajectories["sst2", 0], "oneshot", "sst2", 0, 1, None, status="SCHEDULED")
    client.set_terminated(client.create_run(exp, tags={"note": "a sweep-level run without run_kind"}).info.run_id)
    masks = root / "masks"
    for (task, seed), run_id in trajectories.items():
        if (task, seed) in (("cola", 2), ("sst2", 2)):
            continue  # cola seed 2 never reached level 3; sst2 seed 2's mask is missing on purpose
        path = masks / f"{task}{seed}" / os.path.basename(C.mask_artifact_path(MASK_LEVEL))
        _mask(seed, task, MASK_LEVEL).save(str(path))
        client.log_artifact(run_id, str(path), os.path.dirname(C.mask_artifact_path(MASK_LEVEL)))

    # Rewinding to 5% of training: 100 steps on sst2, 50 on cola; a transfer run carries its source's steps.
    other = client.create_experiment("glue_rewind", artifact_location=(root / "artifacts_b").as_uri())
    rewound = {"sst2": {0: [0.9, 0.92, None], 1: [0.88, 0.9, None], 2: [0.85, 0.86, None]},
               "cola": {0: [0.6, 0.62, None], 1: [0.58, 0.6, None], 2: [0.5, 0.54, None]}}
    for seed in (0, 1):
        source = _trajectory(client, other, "sst2", seed, rewind=100, levels=rewound, point="5%=100")
        _trajectory(client, other, "cola", seed, rewind=50, levels=rewound, point="5%=50")
        _branch(client, other, source, "transfer", "cola", seed, 1, [0.52, 0.5][seed], "sst2", rewind=100,
                point="5%=100")
    return {"uri": uri, "root": root}


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
    for level, values in RANDOM_PRUNE_SST2.items():  # tags inherited from the parent trajectory
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

    from mlflow import MlflowClient

    from analysis.__main__ import main
    from analysis.matching import NOTE_NO_DENSE, NOTE_ONE_DENSE_SEED

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("one_seed", artifact_location=(tmp_path / "artifacts").as_uri())
    source = _trajectory(client, exp, "sst2", 0)
    _branch(client, exp, source, "transfer", "cola", 0, 2, 0.5, "sst2")
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
    assert cola_to_sst2["self_source"] == "transfer"  # TRANSFER(T,T) from the S == T transfer runs
    assert cola_to_sst2["transfer_mean"] == pytest.approx(0.82)
    assert cola_to_sst2["self_mean"] == pytest.approx(0.86)
    assert cola_to_sst2["diff"] == pytest.approx(-0.04)
    assert (cola_to_sst2["diff_n"], cola_to_sst2["transfer_n"]) == (3, 3)
    assert cola_to_sst2["diff_std"] == pytest.approx(statistics.stdev([-0.05, -0.04, -0.03]))
    sst2_to_cola = _row(transfer, source_task="sst2", task="cola", metric="mcc")
    assert sst2_to_cola["self_source"] == "imp"  # no S == T transfer runs for cola: its own IMP level 2
    assert (sst2_to_cola["transfer_n"], sst2_to_cola["self_n"], sst2_to_cola["diff_n"]) == (2, 3, 2)
    assert sst2_to_cola["diff"] == pytest.approx(0.525 - 0.59375)
    assert sst2_to_cola["diff_std"] == pytest.approx(statistics.stdev([0.55 - 0.5625, 0.5 - 0.59375]))
    assert _row(transfer, source_task="sst2", task="sst2", metric="accuracy")["diff"] == 0.0


def test_masks_layer_sparsity_and_overlap(report):
    from tickets.masks import overlap

    layers = pd.read_csv(report / "layer_sparsity.csv")
    assert set(zip(layers["task"], layers["seed"])) == {("sst2", 0), ("sst2", 1), ("cola", 0), ("cola", 1)}
    assert set(layers["level"]) == {MASK_LEVEL}
    for (task, seed), rows in layers.groupby(["task", "seed"]):
        expected = _mask(seed, task, MASK_LEVEL).layer_sparsity()
        assert dict(zip(rows["tensor"], rows["tensor_sparsity"])) == pytest.approx(expected)
    assert set(layers["kind"]) == {"query", "intermediate", "pooler.dense"}
    assert set(layers["layer"].dropna()) == {0, 1} and layers["layer"].isna().sum() == 4  # the pooler: no layer
    pairs = pd.read_csv(report / "overlap.csv")
    assert len(pairs) == 6
    for _, pair in pairs.iterrows():
        want = overlap(_mask(pair["seed_a"], pair["task_a"], MASK_LEVEL),
                       _mask(pair["seed_b"], pair["task_b"], MASK_LEVEL))
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
    assert "cola-s2" in md and "random-prune-cola-s0-l1" in md  # the running and the failed run are named
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
    assert "glue: 3 of 25 runs not complete (1 failed, 1 running, 1 scheduled)" in text
    assert "glue_rewind: 4 of 6 runs not complete (4 incomplete)" in text  # levels_planned 3, logged 0-2
    assert (out / "compare.html").exists()


def test_transfer_lines_up_with_the_target_by_rewind_point(store):
    """5% rewinding is 100 steps on the source sst2 and 50 on the target cola: matched on the point '5%'."""
    from analysis.collect import collect, open_client
    from analysis.transfer import transfer_table

    collected = collect(open_client(store["uri"]), "glue_rewind")
    assert set(collected.runs["rewind_point"]) == {"5%"} and set(collected.runs["rewind"]) == {50, 100}
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
                         for r in runs for k in r.data.metrics for m in client.get_metric_history(r.info.run_id, k)])
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
    monkeypatch.setattr(handlers, "_tracking_store", SqlAlchemyStore(store["uri"], str(store["root"] / "artifacts")))
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
    assert len(remote.runs) == len(local.runs) == 25
    pd.testing.assert_frame_equal(remote.table(), local.table())


def test_a_task_trained_on_part_of_its_dev_set_is_flagged_in_the_report(tmp_path):
    from mlflow import MlflowClient

    from analysis.__main__ import main

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("dev_split", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(exp, tags={C.TAG_RUN_KIND: C.RUN_KIND_TRAJECTORY, C.TAG_TASK: "squad-dev-split",
                                       C.TAG_SEED: "0", C.TAG_REWIND: "0", C.TAG_MAIN_METRIC: "f1",
                                       C.TAG_NOT_COMPARABLE: "true", C.TAG_LEVELS_PLANNED: "0"})
    _log(client, run.info.run_id, 0, {"f1": 9.3, "exact_match": 5.7, C.METRIC_SPARSITY: 0.0})
    client.set_terminated(run.info.run_id)
    out = tmp_path / "report"
    assert main(["report", "--experiment", "dev_split", "--tracking-uri", uri, "--out", str(out), "--no-masks"]) == 0
    assert "NOT COMPARABLE TO PUBLISHED NUMBERS: squad-dev-split" in (out / "report.md").read_text()
