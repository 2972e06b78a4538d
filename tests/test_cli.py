"""`python -m tickets`: bad input gives one clear line and exit code 2, never a traceback."""

import subprocess
import sys

import pytest
import torch

from tickets.masks import Mask

from conftest import GLUE_DIR, REPO

TINY = ["--model", "tiny-random-bert", "--max-train-samples", "16", "--max-eval-samples", "8", "--max-seq-length", "16"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tickets", *args], capture_output=True, text=True, cwd=REPO, timeout=300)


def assert_user_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def foreign_mask(tmp_path_factory):
    path = tmp_path_factory.mktemp("masks") / "bert_base.safetensors"
    Mask({"encoder.layer.0.attention.self.query.weight": torch.ones(768, 768, dtype=torch.bool)},
         {"model_id": "bert-base-uncased", "level": "3", "source_task": "mnli"}).save(str(path))
    return str(path)


@pytest.mark.parametrize(
    "args, needles",
    [
        (["imp", "--task", "sst3", "--data-dir", str(GLUE_DIR)], ["unknown task 'sst3'", "sst2"]),
        (["imp", "--task", "sst2", "--data-dir", "/nonexistent/glue"], ["/nonexistent/glue"]),
        (["imp", "--task", "sst2", "--data-dir", str(GLUE_DIR), "--rate", "1.5"], ["pruning rate", "1.5"]),
        (["imp", "--task", "sst2", "--data-dir", str(GLUE_DIR), "--rate", "0"], ["pruning rate"]),
        (["imp", "--task", "sst2", "--data-dir", str(GLUE_DIR), "--target-sparsity", "1.2"], ["target sparsity"]),
        (["imp", "--task", "sst2", "--data-dir", str(GLUE_DIR), "--schedule", "original", "--rate", "0.5",
          "--levels", "2"], ["100% sparsity"]),
    ],
)
def test_bad_imp_input(tmp_path, args, needles):
    assert_user_error(run_cli(*args, *TINY, "--out", str(tmp_path / "o")), *needles)


def test_mask_from_other_architecture(tmp_path, foreign_mask):
    proc = run_cli("branch", "transfer", "--mask", foreign_mask, "--task", "sst2", "--data-dir", str(GLUE_DIR),
                   *TINY, "--out", str(tmp_path / "o"))
    assert_user_error(proc, "encoder.layer.0.attention.self.query.weight", "(768, 768)")


def test_unreadable_mask_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_text("garbage")
    assert_user_error(run_cli("mask", "info", str(bad)), "cannot read mask file")


def test_mask_info_prints_sparsity_per_layer(foreign_mask):
    proc = run_cli("mask", "info", foreign_mask)
    assert proc.returncode == 0, proc.stderr
    assert "sparsity: 0.0000 of 589,824 weights in 1 tensors" in proc.stdout
    assert "source_task: mnli" in proc.stdout


def test_every_subcommand_has_help():
    for args in (["--help"], ["imp", "--help"], ["branch", "--help"], ["mask", "info", "--help"]):
        proc = run_cli(*args)
        assert proc.returncode == 0 and "usage:" in proc.stdout
