"""Bad input at the four front doors (`tickets`, `sweeps`, `analysis`, `cluster`): one line naming the problem, exit 2,
no traceback, and nothing already recorded changed (a trajectory folder, an MLflow store, mask files: every file that
existed before a case is checksummed before and after it). The fixes are real: the corrected input then works.

Cases run the CLIs in-process through their `main(argv)` (stderr captured); a few run as subprocesses to prove "no
traceback" end to end. Every case that needs a trained trajectory shares one tiny one, trained once per module.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from conftest import GLUE_DIR, REPO
from tickets.masks import Mask
from tickets.paths import MASK, NEXT_MASK, TRAINED_WEIGHTS, TRAJECTORY_SETTINGS

MAINS = {"tickets": "tickets.cli", "sweeps": "sweeps.cli", "analysis": "analysis.__main__", "cluster": "cluster.cli"}
SMALL = ["--model", "tiny-random-bert", "--max-train-samples", "16", "--max-eval-samples", "8", "--max-seq-length", "16",
         "--no-progress"]
SST2 = ["--task", "sst2", "--data-dir", str(GLUE_DIR), *SMALL]
EXPERIMENT = "probe"
BINARY = bytes(range(256)) * 8  # not UTF-8, not a safetensors header, NUL bytes included
SPEC = f"""\
name: probe
model: tiny-random-bert
data_dir: {GLUE_DIR}
tasks: [sst2]
seeds: [0]
pruning:
  rate: 0.2
  levels: 1
training:
  max_seq_length: 16
  max_train_samples: 16
  max_eval_samples: 8
"""


# ---------------------------------------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Recorded:
    """What exists before any case runs and must never change: a trajectory, an MLflow store, a foreign mask."""

    trajectory: Path
    store_db: Path
    store_artifacts: Path
    foreign_mask: Path

    @property
    def store_uri(self) -> str:
        return f"sqlite:///{self.store_db}"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Recorded:
    from cluster import tracking
    from tickets.cli import main

    root = tmp_path_factory.mktemp("recorded")
    trajectory = root / "trajectory"
    assert main(["imp", *SST2, "--levels", "1", "--out", str(trajectory)]) == 0
    db = root / "mlruns.db"
    uri = f"sqlite:///{db}"
    client = tracking.client(uri)
    experiment = tracking.ensure_experiment(client, EXPERIMENT, uri)
    run = client.create_run(experiment).info.run_id
    client.log_metric(run, "sparsity", 0.0, step=0)
    client.set_terminated(run)
    foreign = root / "bert_base.safetensors"
    Mask({"encoder.layer.0.attention.self.query.weight": torch.ones(768, 768, dtype=torch.bool)},
         {"model_id": "bert-base-uncased", "level": "3", "source_task": "mnli"}).save(str(foreign))
    return Recorded(trajectory, db, root / "mlartifacts", foreign)


@dataclass
class World:
    """One case's folder and helpers that build its bad input there."""

    tmp: Path
    recorded: Recorded
    held: list = field(default_factory=list)

    @property
    def trajectory(self) -> Path:
        return self.recorded.trajectory

    def mask(self, level: int = 1, name: str = MASK) -> str:
        return str(self.trajectory / f"level_{level:02d}" / name)

    def write(self, name: str, data: bytes | str) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    def folder(self, name: str) -> str:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def trajectory_copy(self) -> Path:
        copy = self.tmp / "trajectory"
        if not copy.exists():
            shutil.copytree(self.trajectory, copy)
        return copy

    def mask_copy(self, level: int = 1) -> str:
        target = self.tmp / f"mask_{level}.safetensors"
        shutil.copyfile(self.mask(level), target)
        return str(target)

    def glue_copy(self, file: str, data: bytes | str | None) -> str:
        """A GLUE data folder whose SST-2/`file` holds `data` (None: is missing); the other files are the real ones."""
        folder = self.tmp / "glue" / "SST-2"
        if not folder.exists():
            shutil.copytree(GLUE_DIR / "SST-2", folder)
        if data is None:
            (folder / file).unlink()
        else:
            (folder / file).write_bytes(data.encode() if isinstance(data, str) else data)
        return str(folder.parent)

    def minilm_structured_mask(self) -> str:
        """A structured mask of MiniLM's shape (6 layers of 12 heads), not the tiny model's."""
        from tickets.structured.structure import Structure

        path = self.tmp / "minilm.safetensors"
        Structure(torch.ones(6, 12, dtype=torch.bool), torch.ones(6, dtype=torch.bool)).to_mask(
            {"source_task": "sst2"}).save(str(path))
        return str(path)

    def spec(self, text: str = SPEC, name: str = "spec.yaml") -> str:
        return self.write(name, text)

    def busy_port(self) -> int:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        self.held.append(sock)
        return sock.getsockname()[1]

    def unreachable(self) -> str:
        with socket.socket() as sock:  # a port nothing listens on
            sock.bind(("127.0.0.1", 0))
            return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def world(tmp_path, recorded, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.chdir(tmp_path)
    w = World(tmp_path, recorded)
    yield w
    for sock in w.held:
        sock.close()


# ----------------------------------------------------------------------------------------------------------- helpers


def flip_last_byte(path: str | Path) -> str:
    """Damage a mask's bits (the last byte of a safetensors file is tensor data)."""
    data = bytearray(Path(path).read_bytes())
    data[-1] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    return str(path)


def edit_metadata(path: str | Path, drop: tuple[str, ...] = (), **changes: str) -> str:
    """Rewrite a mask file's metadata as a hand edit would, leaving its tensors (and so its content hash) alone."""
    with safe_open(str(path), framework="np") as handle:
        meta = dict(handle.metadata() or {})
    tensors = load_file(str(path))
    meta.update(changes)
    for key in drop:
        meta.pop(key, None)
    save_file(tensors, str(path), metadata=meta)
    return str(path)


def format_1(path: str | Path) -> str:
    """A mask file as format version 1 wrote it: content hash, no metadata hash."""
    return edit_metadata(path, drop=("metadata_hash",), format_version="1")


def damaged_trajectory(w: World, damage: Callable[[Path], object]) -> str:
    copy = w.trajectory_copy()
    damage(copy)
    return str(copy)


def checksums(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under `roots` (files or folders)."""
    found: dict[str, str] = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        for path in files:
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def run_main(cli: str, argv: list[str]) -> int:
    try:
        return importlib.import_module(MAINS[cli]).main(argv)
    except SystemExit as exc:  # argparse
        return exc.code


def assert_one_line_error(code: int, stderr: str, needles: tuple[str, ...]) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


# ------------------------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """A command line built in a case's World (cli first), the words its one-line error must contain, the
    environment variables it runs with, and whether its `--out` folder must not even be created."""

    name: str
    argv: Callable[[World], list]
    needles: tuple[str, ...]
    env: Callable[[World], dict[str, str]] = lambda w: {}
    out_stays_absent: bool = False


def imp(*args) -> list:
    return ["tickets", "imp", *args]


def imp_sst2(*args) -> list:
    return imp(*SST2, "--levels", "1", *args)


def resume(damage: Callable[[Path], object]) -> Callable[[World], list]:
    """Resume a copy of the shared trajectory, damaged by `damage`, with its own recipe."""
    return lambda w: imp_sst2("--out", damaged_trajectory(w, damage))


def branch(kind: str, *args) -> list:
    return ["tickets", "branch", kind, *args]


def sweep(w: World, *args, spec: str | None = None) -> list:
    return ["sweeps", spec or w.spec(), *args]


def report(w: World, *args, uri: str | None = None, out: str | None = None) -> list:
    return ["analysis", "report", "--experiment", EXPERIMENT, "--tracking-uri", uri or w.recorded.store_uri,
            "--out", out or str(w.tmp / "report"), *args]


TSV_HEADER = "sentence\tlabel\n"

CASES = [
    # ---- tickets imp: settings
    Case("imp-unknown-task", lambda w: imp("--task", "sst3", "--data-dir", str(GLUE_DIR), *SMALL, "--out", "o"),
         ("unknown task 'sst3'", "sst2")),
    Case("imp-missing-data-dir", lambda w: imp("--task", "sst2", "--data-dir", "/nonexistent/glue", *SMALL, "--out", "o"),
         ("/nonexistent/glue", "does not exist")),
    Case("imp-data-dir-is-a-file", lambda w: imp("--task", "sst2", "--data-dir", w.write("glue", "x"), *SMALL,
                                                 "--out", "o"), ("is a file, not a folder",)),
    Case("imp-rate-above-one", lambda w: imp_sst2("--rate", "1.5", "--out", "o"), ("pruning rate", "1.5")),
    Case("imp-rate-zero", lambda w: imp_sst2("--rate", "0", "--out", "o"), ("pruning rate",)),
    Case("imp-target-sparsity-above-one", lambda w: imp(*SST2, "--target-sparsity", "1.2", "--out", "o"),
         ("target sparsity",)),
    Case("imp-schedule-reaches-100-percent", lambda w: imp(*SST2, "--rate", "0.5", "--levels", "2", "--out", "o"),
         ("100% sparsity",)),
    Case("imp-rewind-in-steps-and-percent", lambda w: imp_sst2("--rewind", "2", "--rewind-percent", "10",
                                                               "--out", "o"), ("not both",)),
    Case("imp-rewind-percent-100", lambda w: imp_sst2("--rewind-percent", "100", "--out", "o"),
         ("rewind_percent", "100")),
    Case("imp-no-train-samples", lambda w: imp_sst2("--max-train-samples", "0", "--out", "o"),
         ("max_train_samples",)),
    Case("imp-negative-learning-rate", lambda w: imp_sst2("--lr", "-1", "--out", "o"), ("learning_rate",)),
    Case("imp-zero-epochs", lambda w: imp_sst2("--epochs", "0", "--out", "o"), ("epochs",)),
    Case("imp-zero-batch-size", lambda w: imp_sst2("--batch-size", "0", "--out", "o"), ("batch_size",)),
    Case("imp-warmup-ratio-one", lambda w: imp_sst2("--warmup-ratio", "1", "--out", "o"), ("warmup_ratio",)),
    Case("imp-model-folder-missing", lambda w: imp("--task", "sst2", "--data-dir", str(GLUE_DIR), "--model",
                                                   "/nonexistent/model", "--out", "o"), ("/nonexistent/model",)),
    # ---- tickets imp: files
    Case("imp-deepspeed-config-missing", lambda w: imp_sst2("--deepspeed-config", "/nonexistent/ds.json",
                                                            "--out", "o"), ("cannot read DeepSpeed config",)),
    Case("imp-deepspeed-config-binary", lambda w: imp_sst2("--deepspeed-config", w.write("ds.json", BINARY),
                                                           "--out", "o"), ("DeepSpeed config", "not UTF-8")),
    Case("imp-deepspeed-config-not-json", lambda w: imp_sst2("--deepspeed-config", w.write("ds.json", "{zero"),
                                                             "--out", "o"), ("not valid JSON",)),
    Case("imp-deepspeed-config-a-list", lambda w: imp_sst2("--deepspeed-config", w.write("ds.json", "[1]"),
                                                           "--out", "o"), ("JSON object",)),
    Case("imp-deepspeed-grad-accum-not-dividing-the-batch",  # the DeepSpeed flags reach the recipe
         lambda w: imp_sst2("--backend", "deepspeed", "--deepspeed-config",
                            w.write("ds.json", '{"zero_optimization": {"stage": 2}}'), "--grad-accum", "5", "--out",
                            "o"), ("DeepSpeed grad_accum 5 does not divide the batch_size 16",), out_stays_absent=True),
    Case("imp-train-tsv-latin-1", lambda w: imp("--task", "sst2", "--data-dir",
                                                w.glue_copy("train.tsv", TSV_HEADER.encode() + "caf\xe9\t1\n".encode(
                                                    "latin-1")), *SMALL, "--out", "o"),
         ("train.tsv", "not UTF-8 text", "0xe9")),
    Case("imp-dev-tsv-binary", lambda w: imp("--task", "sst2", "--data-dir", w.glue_copy("dev.tsv", BINARY), *SMALL,
                                             "--out", "o"), ("dev.tsv", "not UTF-8 text")),
    Case("imp-dev-tsv-missing", lambda w: imp("--task", "sst2", "--data-dir", w.glue_copy("dev.tsv", None), *SMALL,
                                              "--out", "o"), ("data file not found", "dev.tsv")),
    Case("imp-dev-tsv-wrong-header", lambda w: imp("--task", "sst2", "--data-dir",
                                                   w.glue_copy("dev.tsv", "text\tgold\nfine\t1\n"), *SMALL, "--out", "o"),
         ("has no column", "'sentence'")),
    Case("imp-dev-tsv-malformed-row", lambda w: imp("--task", "sst2", "--data-dir",
                                                    w.glue_copy("dev.tsv", TSV_HEADER + "fine\t1\nbroken\t7\n"), *SMALL,
                                                    "--out", "o"), ("malformed row in eval file", "line 3")),
    # ---- tickets imp: output folder
    Case("imp-out-is-a-file", lambda w: imp_sst2("--out", w.write("taken", "x")), ("is a file, not a folder",)),
    Case("imp-out-under-a-file", lambda w: imp_sst2("--out", w.write("taken", "x") + "/sub"),
         ("cannot be created", "is a file")),
    Case("imp-out-under-proc", lambda w: imp_sst2("--out", "/proc/bert-tickets-out"), ("cannot be written", "/proc")),
    # ---- tickets imp: resuming a recorded trajectory
    Case("resume-with-other-settings", lambda w: imp_sst2("--seed", "1", "--out", str(w.trajectory_copy())),
         ("holds a trajectory with other settings", "seed")),
    Case("resume-corrupt-level-mask", resume(lambda t: flip_last_byte(t / "level_01" / MASK)),
         ("finished level 1", "content hash")),
    Case("resume-edited-level-number", resume(lambda t: edit_metadata(t / "level_01" / MASK, level="7")),
         ("finished level 1", "metadata")),
    Case("resume-edited-source-task", resume(lambda t: edit_metadata(t / "level_00" / MASK, source_task="rte")),
         ("finished level 0", "metadata")),
    Case("resume-corrupt-next-mask", resume(lambda t: flip_last_byte(t / "level_00" / NEXT_MASK)),
         ("finished level 0", "next_mask", "content hash")),
    Case("resume-level-mask-missing", resume(lambda t: (t / "level_01" / MASK).unlink()),
         ("finished level 1", "does not exist")),
    Case("resume-mask-of-another-level", resume(lambda t: shutil.copyfile(t / "level_00" / MASK, t / "level_01" / MASK)),
         ("finished level 1", "records level 0, not 1")),
    Case("resume-format-1-mask-with-edited-level", resume(lambda t: format_1(edit_metadata(t / "level_01" / MASK,
                                                                                           level="4"))),
         ("finished level 1", "records level 4, not 1")),
    Case("resume-trajectory-json-binary", resume(lambda t: (t / TRAJECTORY_SETTINGS).write_bytes(BINARY)),
         (TRAJECTORY_SETTINGS, "not UTF-8")),
    Case("resume-trajectory-json-truncated", resume(lambda t: (t / TRAJECTORY_SETTINGS).write_text('{"config": {')),
         (TRAJECTORY_SETTINGS, "not valid JSON")),
    # ---- tickets branch
    Case("transfer-without-target-task", lambda w: branch("transfer", "--mask", w.mask(), "--trajectory",
                                                          str(w.trajectory), *SMALL, "--out", "o"),
         ("branch transfer needs --task",)),
    Case("transfer-onto-its-own-task-by-alias", lambda w: branch("transfer", "--mask", w.mask(), "--task", "SST-2",
                                                                 "--data-dir", str(GLUE_DIR), *SMALL, "--out", "o"),
         ("itself",)),
    Case("branch-mask-missing", lambda w: branch("random-prune", "--mask", "/nonexistent/m.safetensors", "--trajectory",
                                                 str(w.trajectory), "--out", "o"), ("does not exist",)),
    Case("branch-mask-is-a-folder", lambda w: branch("random-prune", "--mask", str(w.trajectory / "level_01"),
                                                     "--trajectory", str(w.trajectory), "--out", "o"),
         ("is a folder, not a mask file", "did you mean", MASK)),
    Case("branch-mask-of-another-architecture", lambda w: branch("transfer", "--mask", str(w.recorded.foreign_mask),
                                                                 *SST2, "--out", "o"),
         ("encoder.layer.0.attention.self.query.weight", "(768, 768)")),
    Case("branch-mask-corrupt", lambda w: branch("random-prune", "--mask", flip_last_byte(w.mask_copy()),
                                                 "--trajectory", str(w.trajectory), "--out", "o"), ("content hash",)),
    Case("branch-mask-edited-level", lambda w: branch("oneshot", "--mask", edit_metadata(w.mask_copy(), level="9"),
                                                      "--trajectory", str(w.trajectory), "--out", "o"), ("metadata",)),
    Case("branch-mask-unknown-format", lambda w: branch("oneshot", "--mask", edit_metadata(w.mask_copy(),
                                                                                           format_version="9"),
                                                        "--trajectory", str(w.trajectory), "--out", "o"),
         ("format version 9", "reads versions 1, 2")),
    Case("branch-not-a-trajectory-folder", lambda w: branch("oneshot", "--mask", w.mask(), "--trajectory",
                                                            w.folder("empty"), "--out", "o"),
         ("is not a trajectory folder", TRAJECTORY_SETTINGS)),
    Case("branch-standard-from-level-0", lambda w: branch("standard", "--mask", w.mask(0), "--trajectory",
                                                          str(w.trajectory), "--out", "o"), ("level >= 1",)),
    Case("branch-standard-without-trajectory", lambda w: branch("standard", "--mask", w.mask(), *SST2, "--out", "o"),
         ("needs --trajectory",)),
    Case("branch-out-is-a-file", lambda w: branch("random-prune", "--mask", w.mask(), "--trajectory",
                                                  str(w.trajectory), "--out", w.write("taken", "x")),
         ("is a file, not a folder",)),
    Case("branch-dense-weights-missing", lambda w: branch(
        "oneshot-finetuned", "--mask", w.mask(), "--trajectory",
        damaged_trajectory(w, lambda t: (t / "level_00" / TRAINED_WEIGHTS).unlink()), "--out", "o"),
        ("needs", TRAINED_WEIGHTS, "does not exist")),
    # ---- tickets mask
    Case("mask-info-folder", lambda w: ["tickets", "mask", "info", str(w.trajectory / "level_01")],
         ("is a folder, not a mask file", "did you mean")),
    Case("mask-info-missing", lambda w: ["tickets", "mask", "info", "/nonexistent/m.safetensors"], ("does not exist",)),
    Case("mask-info-text-file", lambda w: ["tickets", "mask", "info", w.write("m.safetensors", "garbage")],
         ("cannot read mask file",)),
    Case("mask-info-binary-file", lambda w: ["tickets", "mask", "info", w.write("m.safetensors", BINARY)],
         ("cannot read mask file",)),
    Case("mask-info-metrics-json", lambda w: ["tickets", "mask", "info", str(w.trajectory / "level_01/metrics.json")],
         ("cannot read mask file",)),
    Case("mask-info-safetensors-weights", lambda w: ["tickets", "mask", "info", str(w.trajectory / "level_01/head.safetensors")],
         ("not a mask file",)),
    Case("mask-info-edited-level", lambda w: ["tickets", "mask", "info", edit_metadata(w.mask_copy(), level="5")],
         ("metadata", "was changed")),
    Case("mask-info-edited-sparsity", lambda w: ["tickets", "mask", "info", edit_metadata(w.mask_copy(), sparsity="0.9")],
         ("metadata",)),
    Case("mask-compare-other-shapes", lambda w: ["tickets", "mask", "compare", str(w.recorded.foreign_mask), w.mask()],
         ("has shape (768, 768) but the other mask has",)),
    Case("mask-compare-missing", lambda w: ["tickets", "mask", "compare", w.mask(), "/nonexistent/b.safetensors"],
         ("does not exist",)),
    # ---- tickets structured
    Case("structured-retrain-not-a-search", lambda w: ["tickets", "structured", "retrain", "good", "--search",
                                                       w.folder("empty"), "--out", "o"],
         ("not a finished structured search folder",)),
    Case("structured-compact-unstructured-mask", lambda w: ["tickets", "structured", "compact", "--mask", w.mask(),
                                                            "--out", "o"], ("not a structured mask",)),
    Case("structured-compact-mask-missing", lambda w: ["tickets", "structured", "compact", "--mask",
                                                       "/nonexistent/good.safetensors", "--out", "o"],
         ("does not exist",)),
    Case("structured-search-threshold", lambda w: ["tickets", "structured", "search", *SST2, "--threshold", "1.5",
                                                   "--out", "o"], ("threshold must be in (0, 1]", "1.5")),
    Case("structured-compact-mask-of-another-architecture",
         lambda w: ["tickets", "structured", "compact", "--mask", w.minilm_structured_mask(), "--model",
                    "tiny-random-bert", "--out", "o"], ("encoder.layer.0.attention.heads", "(12,)")),
    Case("structured-search-out-under-proc", lambda w: ["tickets", "structured", "search", *SST2, "--out",
                                                        "/proc/bert-tickets-search"], ("cannot be written",)),
    # ---- sweeps: the spec file
    Case("spec-missing", lambda w: ["sweeps", "/nonexistent/spec.yaml", "--dry-run"], ("cannot read the spec",)),
    Case("spec-is-a-folder", lambda w: ["sweeps", w.folder("specs"), "--dry-run"], ("cannot read the spec",)),
    Case("spec-binary", lambda w: sweep(w, "--dry-run", spec=w.write("spec.yaml", BINARY)), ("not UTF-8 text",)),
    Case("spec-latin-1", lambda w: sweep(w, "--dry-run", spec=w.write("spec.yaml", SPEC.encode() + "# caf\xe9\n".encode(
        "latin-1"))), ("line 13", "not UTF-8 text", "0xe9")),
    Case("spec-control-character", lambda w: sweep(w, "--dry-run", spec=w.spec(SPEC.replace("name: probe",
                                                                                             "name: pro\x00be"))),
         ("line 1", "not allowed in YAML")),
    Case("spec-invalid-yaml", lambda w: sweep(w, "--dry-run", spec=w.spec(SPEC.replace("seeds: [0]", "seeds: [0"))),
         ("not valid YAML",)),
    Case("spec-empty", lambda w: sweep(w, "--dry-run", spec=w.spec("")), ("a YAML mapping",)),
    Case("spec-unknown-field", lambda w: sweep(w, "--dry-run", spec=w.spec(SPEC.replace("tasks:", "taks:"))),
         ("did you mean 'tasks'",)),
    # ---- sweeps: paths, validated before anything is recorded (dry run or not)
    Case("spec-storage-is-a-file", lambda w: sweep(w, "--dry-run", spec=w.spec(SPEC + f"storage: {w.write('st', 'x')}\n")),
         ("storage", "line 13", "is a file, not a folder")),
    Case("storage-flag-is-a-file", lambda w: sweep(w, "--dry-run", "--storage", w.write("st", "x")),
         ("--storage", "is a file, not a folder")),
    Case("storage-under-a-file", lambda w: sweep(w, "--dry-run", "--storage", w.write("st", "x") + "/sub"),
         ("--storage", "cannot be created")),
    Case("storage-under-proc", lambda w: sweep(w, "--dry-run", "--storage", "/proc/bert-tickets-storage"),
         ("--storage", "cannot be written")),
    Case("storage-uri-unreachable", lambda w: sweep(w, "--dry-run", "--storage", "s3://bucket/x"),
         ("--storage", "s3://bucket/x", "cannot be reached or written"),
         env=lambda w: {"AWS_ENDPOINT_URL": w.unreachable(), "AWS_MAX_ATTEMPTS": "1", "AWS_ACCESS_KEY_ID": "probe",
                        "AWS_SECRET_ACCESS_KEY": "probe", "AWS_DEFAULT_REGION": "us-east-1"}),
    Case("storage-uri-unknown-scheme", lambda w: sweep(w, "--dry-run", "--storage", "nosuch://bucket/x"),
         ("--storage", "not a storage URI")),
    Case("storage-uri-with-password", lambda w: sweep(w, "--dry-run", "--storage", "s3://key:secret@bucket/x"),
         ("--storage", "carries a password")),
    Case("data-dir-flag-missing", lambda w: sweep(w, "--dry-run", "--data-dir", "/nonexistent/glue"),
         ("--data-dir", "does not exist")),
    Case("data-dir-flag-is-a-file", lambda w: sweep(w, "--dry-run", "--data-dir", w.write("glue", "x")),
         ("--data-dir", "is a file, not a folder")),
    Case("run-storage-is-a-file", lambda w: sweep(w, "--storage", w.write("st", "x"), "--tracking-uri",
                                                  w.recorded.store_uri), ("is a file, not a folder",)),
    # ---- sweeps: the tracking store (a real run stops before any result or MLflow run is written)
    Case("run-unreachable-tracking-flag", lambda w: sweep(w, "--storage", str(w.tmp / "st"), "--tracking-uri",
                                                          w.unreachable()), ("not reachable", "comes from --tracking-uri")),
    Case("run-unreachable-tracking-env", lambda w: sweep(w, "--storage", str(w.tmp / "st")),
         ("not reachable", "comes from MLFLOW_TRACKING_URI", "unset MLFLOW_TRACKING_URI"),
         env=lambda w: {"MLFLOW_TRACKING_URI": w.unreachable()}),
    Case("run-corrupt-sqlite-store", lambda w: sweep(w, "--storage", str(w.tmp / "st"), "--tracking-uri",
                                                     f"sqlite:///{w.write('bad.db', BINARY)}"),
         ("is not an SQLite database",)),
    Case("run-sqlite-store-folder-missing", lambda w: sweep(w, "--storage", str(w.tmp / "st"), "--tracking-uri",
                                                            "sqlite:////nonexistent/folder/m.db"), ("does not exist",)),
    Case("run-sqlite-store-is-a-folder", lambda w: sweep(w, "--storage", str(w.tmp / "st"), "--tracking-uri",
                                                         f"sqlite:///{w.folder('db')}"), ("is a folder",)),
    # ---- analysis
    Case("report-out-is-a-file", lambda w: report(w, out=w.write("taken", "x")), ("is a file, not a folder",)),
    Case("report-out-under-a-file", lambda w: report(w, out=w.write("taken", "x") + "/r"), ("cannot be created",)),
    Case("report-out-under-proc", lambda w: report(w, out="/proc/bert-tickets-report"), ("cannot be written",)),
    Case("report-unknown-experiment", lambda w: ["analysis", "report", "--experiment", "nope", "--tracking-uri",
                                                 w.recorded.store_uri, "--out", "r"],
         ("experiment 'nope' does not exist", EXPERIMENT)),
    Case("report-unreachable-server-flag", lambda w: report(w, uri=w.unreachable()), ("comes from --tracking-uri",)),
    Case("report-unreachable-server-env", lambda w: ["analysis", "report", "--experiment", EXPERIMENT, "--out", "r"],
         ("comes from MLFLOW_TRACKING_URI",), env=lambda w: {"MLFLOW_TRACKING_URI": w.unreachable()}),
    Case("report-corrupt-sqlite-store", lambda w: report(w, uri=f"sqlite:///{w.write('bad.db', BINARY)}"),
         ("is not an SQLite database",)),
    Case("report-sqlite-store-missing", lambda w: report(w, uri=f"sqlite:///{w.tmp / 'none.db'}"), ("does not exist",)),
    Case("report-sqlite-store-is-a-folder", lambda w: report(w, uri=f"sqlite:///{w.folder('db')}"), ("is a folder",)),
    Case("report-overlap-sparsity-above-one", lambda w: report(w, "--overlap-sparsity", "2"), ("--overlap-sparsity",)),
    Case("compare-one-experiment", lambda w: ["analysis", "compare", "--experiment", EXPERIMENT, "--tracking-uri",
                                              w.recorded.store_uri, "--out", "c"], ("at least two",)),
    Case("compare-out-is-a-file", lambda w: ["analysis", "compare", "--experiment", EXPERIMENT, "--experiment", "b",
                                             "--tracking-uri", w.recorded.store_uri, "--out", w.write("taken", "x")],
         ("is a file, not a folder",)),
    # ---- cluster (only inputs refused before anything starts)
    Case("down-without-state", lambda w: ["cluster", "down", "--state-dir", w.folder("state")], ("nothing to stop",)),
    Case("runtime-env-out-is-a-folder", lambda w: ["cluster", "runtime-env", "--out", w.folder("env")],
         ("cannot write the runtime_env file", "Is a directory")),
    Case("runtime-env-out-under-a-file", lambda w: ["cluster", "runtime-env", "--out", w.write("taken", "x") + "/e.yaml"],
         ("cannot write the runtime_env file",)),
    Case("runtime-env-out-under-proc", lambda w: ["cluster", "runtime-env", "--out", "/proc/bert-tickets-env.yaml"],
         ("cannot write the runtime_env file",)),
    Case("up-port-in-use", lambda w: ["cluster", "up", "--state-dir", str(w.tmp / "state"), "--port",
                                      str(w.busy_port()), "--dashboard-port", str(w.busy_port()),
                                      "--mlflow-port", str(w.busy_port())], ("is in use", "--port")),
    Case("up-postgres-and-a-store", lambda w: ["cluster", "up", "--state-dir", str(w.tmp / "state"), "--tracking",
                                               "postgres", "--backend-store-uri", "sqlite:///x.db"], ("not both",)),
]


def test_the_table_covers_every_front_door_with_distinct_cases():
    assert len(CASES) >= 60
    assert len({case.name for case in CASES}) == len(CASES)
    assert {case.name.split("-")[0] for case in CASES} >= {"imp", "resume", "branch", "mask", "structured", "spec",
                                                           "storage", "run", "report", "compare", "down", "up"}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing_recorded(case, world, monkeypatch, capsys):
    argv = [str(part) for part in case.argv(world)]
    for name, value in case.env(world).items():
        monkeypatch.setenv(name, value)
    watched = (world.tmp, world.recorded.trajectory.parent)
    before = checksums(*watched)
    capsys.readouterr()
    code = run_main(argv[0], argv[1:])
    stderr = capsys.readouterr().err
    assert_one_line_error(code, stderr, case.needles)
    after = checksums(*watched)
    changed = sorted(path for path, digest in before.items() if after.get(path) != digest)
    assert not changed, f"recorded files changed or removed: {changed}"
    if case.out_stays_absent:
        assert not os.path.exists(argv[argv.index("--out") + 1]), "the output folder was created"


SUBPROCESS_CASES = ["mask-info-folder", "spec-binary", "report-corrupt-sqlite-store", "runtime-env-out-under-proc"]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_end_to_end_no_traceback(name, world):
    case = next(case for case in CASES if case.name == name)
    argv = [str(part) for part in case.argv(world)]
    proc = subprocess.run([sys.executable, "-m", argv[0], *argv[1:]], capture_output=True, text=True,
                          cwd=world.tmp, timeout=300, env={**_clean_env(), "PYTHONPATH": str(REPO)})
    assert_one_line_error(proc.returncode, proc.stderr, case.needles)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}


# ------------------------------------------------------------------------------------- the corrected input then works


def test_a_run_that_failed_on_its_data_is_rerun_in_the_same_folder_once_the_data_is_fixed(world):
    from tickets.cli import main

    data = world.glue_copy("train.tsv", TSV_HEADER.encode() + "caf\xe9\t1\n".encode("latin-1"))
    args = ["imp", "--task", "sst2", "--data-dir", data, *SMALL, "--levels", "0", "--out", "o"]
    assert main(args) == 2
    shutil.copyfile(GLUE_DIR / "SST-2" / "train.tsv", Path(data) / "SST-2" / "train.tsv")
    assert main(args) == 0
    assert (world.tmp / "o" / "level_00" / "metrics.json").is_file()


def test_a_standard_chain_that_failed_before_training_does_not_block_the_corrected_run(world):
    from tickets.cli import main

    bad = world.glue_copy("dev.tsv", BINARY)
    args = ["branch", "standard", "--mask", world.mask(), "--trajectory", str(world.trajectory), *SMALL, "--out", "c"]
    assert main([*args, "--data-dir", bad]) == 2
    assert main([*args, "--data-dir", str(GLUE_DIR)]) == 0
    assert (world.tmp / "c" / "level_01" / "metrics.json").is_file()


def test_an_intact_trajectory_resumes_its_finished_levels_in_either_mask_format(world, capsys):
    from tickets.cli import main

    copy = world.trajectory_copy()
    assert main(["imp", *SST2, "--levels", "1", "--out", str(copy)]) == 0
    assert capsys.readouterr().out.count("(done earlier)") == 2
    for path in copy.glob("level_*/*mask.safetensors"):
        format_1(path)
    assert main(["imp", *SST2, "--levels", "1", "--out", str(copy)]) == 0
    assert capsys.readouterr().out.count("(done earlier)") == 2


def test_format_1_masks_read_as_before_and_are_rewritten_as_format_2(world):
    from tickets.masks import FORMAT_VERSION

    original = Mask.load(world.mask())
    old = Mask.load(format_1(world.mask_copy()))
    assert old.metadata["format_version"] == "1" and old.content_hash() == original.content_hash()
    assert all(torch.equal(old.tensors[n], t) for n, t in original.tensors.items())
    path = str(world.tmp / "resaved.safetensors")
    old.save(path)
    assert Mask.load(path).metadata["format_version"] == FORMAT_VERSION == "2"


def test_mask_info_on_the_file_inside_the_folder_prints_it(world, capsys):
    from tickets.cli import main

    assert main(["mask", "info", world.mask()]) == 0
    assert "level: 1" in capsys.readouterr().out


def test_transfer_with_a_target_task_trains(world):
    from tickets.cli import main

    assert main(["branch", "transfer", "--mask", world.mask(), "--task", "rte", "--data-dir", str(GLUE_DIR), *SMALL,
                 "--out", "t"]) == 0
    assert Mask.load(str(world.tmp / "t" / MASK)).metadata["target_task"] == "rte"


def test_a_sweep_with_a_writable_storage_plans_and_creates_nothing(world):
    from sweeps.cli import main

    assert main([world.spec(), "--dry-run", "--storage", str(world.tmp / "new" / "storage")]) == 0
    assert not (world.tmp / "new").exists()


def test_the_recorded_tracking_store_opens(world):
    from analysis.collect import find_experiment, open_client
    from cluster.tracking import check_tracking

    check_tracking(world.recorded.store_uri)
    assert find_experiment(open_client(world.recorded.store_uri), EXPERIMENT).name == EXPERIMENT
