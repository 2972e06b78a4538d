"""The report never mixes results of one cell, and every level records the library versions it ran on.

Stores are written by the sweep's own writer (recorded_sweep) into a real SQLite MLflow store and a real results store:
a sweep recorded once, then again with a changed recipe (another content key) for seed 0, so that seed 0's IMP
series has an old and a new run. The report and `analysis.load` read the new run only, even where it failed or is
still running, and list the old one as superseded."""

import dataclasses
import json
import os
from importlib.metadata import PackageNotFoundError, version

import pandas as pd
import pytest
import torch
import transformers

import analysis
from analysis.__main__ import main
from cluster import conventions as C
from recorded_sweep import level_values, record, spec_text, sqlite_store
from tickets.imp import run_trajectory
from tickets.paths import METRICS, level_dir

OLD = {0: {0: 0.70, 1: 0.71, 2: 0.72}, 1: {0: 0.80, 1: 0.81, 2: 0.82}}  # seed -> level -> value
NEW = {0: 0.60, 1: 0.61, 2: 0.62}  # seed 0's new run (a changed recipe: another content key)


def _old(piece, level):
    return level_values("accuracy", OLD[piece.recipe.seed][level], level)


def _report(uri: str, name: str, out) -> str:
    assert main(["report", "--experiment", name, "--tracking-uri", uri, "--out", str(out), "--no-masks"]) == 0
    return (out / "report.md").read_text()


def _old_and_new(root, name: str, new_levels: set[int], ended: bool):
    """A store where seed 0's IMP series has an old finished run and a new one with values at `new_levels`."""
    uri = sqlite_store(root)
    text = spec_text(name, str(root / "storage"), seeds=(0, 1), levels=2)
    old = record(root, text, uri, _old, ended=True)
    changed = text.replace("seeds: [0, 1]", "seeds: [0]").replace("epochs: 1", "epochs: 2")
    new = record(root, changed, uri, lambda piece, level: level_values("accuracy", NEW[level], level)
                 if level in new_levels else None, sweep=False, ended=ended)
    return uri, old.run_id(old.piece("trajectory", "sst2", 0)), new


def _seed0(points: pd.DataFrame) -> pd.DataFrame:
    return points[(points["branch"] == "imp") & (points["seed"] == 0)].set_index("level")


def test_a_newer_result_replaces_the_older_run_of_its_cell(tmp_path):
    uri, old_run, new = _old_and_new(tmp_path, "replaced", {0, 1, 2}, ended=True)
    new_run = new.run_id(new.piece("trajectory", "sst2", 0))
    points = analysis.load("replaced", tracking_uri=uri)
    assert old_run not in set(points["run_id"]) and len(points) == 6
    seed0 = _seed0(points)
    assert seed0["accuracy"].to_dict() == NEW and set(seed0["run_id"]) == {new_run}
    assert not points["partial"].any()
    markdown = _report(uri, "replaced", tmp_path / "report")
    summary = pd.read_csv(tmp_path / "report" / "summary.csv").set_index("level")
    for level, value in NEW.items():
        assert summary.loc[level, "accuracy_mean"] == pytest.approx((value + OLD[1][level]) / 2)
        assert summary.loc[level, "n"] == 2
    runs_section = markdown.split("## Incomplete, failed and running runs")[1].split("\n## ")[0]
    assert "1 superseded runs" in runs_section and old_run in runs_section and new_run not in runs_section
    assert "1 runs of older results were superseded" in markdown
    assert "finished runs preferred, then the newest" not in markdown


@pytest.mark.parametrize("status", ["FAILED", "RUNNING"])
def test_a_failed_or_running_new_run_shows_no_older_value(tmp_path, status):
    """Seed 0's new run has levels 0 and 1; its level 2 failed (or is training): the old run's level 2 is not shown."""
    uri, old_run, new = _old_and_new(tmp_path, "unfinished", {0, 1}, ended=status == "FAILED")
    piece = new.piece("trajectory", "sst2", 0)
    if status == "RUNNING":
        new.runs.open(piece)
        new.runs.started(piece)
        new.runs.wait()  # the driver updates status in the background
    points = analysis.load("unfinished", tracking_uri=uri)
    seed0 = _seed0(points)
    assert old_run not in set(points["run_id"]) and set(seed0["status"]) == {status}
    assert seed0.loc[0, "accuracy"] == NEW[0] and seed0.loc[1, "accuracy"] == NEW[1]
    assert pd.isna(seed0.loc[2, "accuracy"]) and not seed0.loc[2, "logged"] and seed0["partial"].all()
    markdown = _report(uri, "unfinished", tmp_path / "report")
    summary = pd.read_csv(tmp_path / "report" / "summary.csv").set_index("level")
    assert (summary.loc[2, "n"], summary.loc[2, "seeds_expected"], bool(summary.loc[2, "partial"])) == (1, 2, True)
    assert summary.loc[2, "accuracy_mean"] == pytest.approx(OLD[1][2])
    assert f"{OLD[0][2]:.4f}" not in markdown
    runs_section = markdown.split("## Incomplete, failed and running runs")[1].split("\n## ")[0]
    assert new.run_id(piece) in runs_section and status in runs_section and old_run in runs_section


def _installed() -> dict:
    try:
        deepspeed = version("deepspeed")
    except PackageNotFoundError:
        deepspeed = None
    return {"torch": torch.__version__, "transformers": transformers.__version__, "deepspeed": deepspeed}


def _tag(versions: dict) -> str:
    return " ".join(f"{name}={value or 'none'}" for name, value in versions.items())


OTHER = {"torch": "2.12.1", "transformers": "5.24.0", "deepspeed": None}


def test_levels_record_their_versions_and_runs_tag_them(tmp_path, tiny_recipe):
    out = str(tmp_path / "trajectory")
    run_trajectory(dataclasses.replace(tiny_recipe, levels=0), out, progress=False)
    with open(os.path.join(level_dir(out, 0), METRICS)) as handle:
        recorded = json.load(handle)["versions"]
    assert recorded == _installed()

    uri = sqlite_store(tmp_path)
    text = spec_text("versions", str(tmp_path / "storage"), seeds=(0,), levels=2)
    first = record(tmp_path, text, uri, lambda piece, level: level_values("accuracy", 0.8, level, versions=recorded)
                   if level < 2 else None)
    run_id = first.run_id(first.piece("trajectory", "sst2", 0))
    assert first.client.get_run(run_id).data.tags[C.TAG_VERSIONS] == _tag(_installed())
    # level 2 ran later on other versions, logged by a new writer (as a resumed sweep's driver logs it)
    record(tmp_path, text, uri, lambda piece, level: level_values("accuracy", 0.7, level, versions=OTHER))
    tags = first.client.get_run(run_id).data.tags
    assert tags[C.TAG_VERSIONS] == f"{_tag(_installed())} | {_tag(OTHER)}"


def test_the_report_names_cells_whose_seeds_ran_on_different_versions(tmp_path):
    """IMP: seed 0 on the installed versions, seed 1 on others, seed 2 unrecorded (an older record); random pruning:
    seeds 0 and 2 on the installed versions, seed 1 unrecorded, which is no difference."""
    installed = _installed()
    on = {"trajectory": {0: installed, 1: OTHER, 2: None}, "random-prune": {0: installed, 1: None, 2: installed}}

    def values(piece, level):
        versions = on[piece.kind][piece.recipe.seed]
        return level_values("accuracy", 0.8, level, **({"versions": versions} if versions else {}))

    uri = sqlite_store(tmp_path)
    recorded = record(tmp_path, spec_text("mixed", str(tmp_path / "storage"), levels=1,
                                          branches="{kind: random-prune, levels: all}"), uri, values, ended=True)
    assert C.TAG_VERSIONS not in recorded.client.get_run(
        recorded.run_id(recorded.piece("trajectory", "sst2", 2))).data.tags
    markdown = _report(uri, "mixed", tmp_path / "report")
    assert "MIXED LIBRARY VERSIONS: in 2 cells" in markdown
    for level in (0, 1):
        assert f"sst2, IMP, level {level}: {_tag(installed)}; {_tag(OTHER)}" in markdown \
            or f"sst2, IMP, level {level}: {_tag(OTHER)}; {_tag(installed)}" in markdown
    assert "random-prune, level" not in markdown
