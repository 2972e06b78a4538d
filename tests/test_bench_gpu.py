"""bench/gpu.py --device cpu --tiny: every section of the GPU benchmark runs, on tiny models, in seconds."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytest.importorskip("deepspeed")
pytest.importorskip("ray")


def test_gpu_benchmark_tiny_cpu_mode_writes_its_json_and_ends_with_the_headline(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run([sys.executable, "bench/gpu.py", "--device", "cpu", "--tiny", "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("headline: ") and "masks exact" in lines[-1] and "FAILED" not in lines[-1], lines[-1]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["headline"] == lines[-1]
    finetune = result["finetune"]
    assert {(r["recipe"], r["variant"]) for r in finetune} == {
        (recipe, variant) for recipe in ("torch fp32", "torch bf16", "deepspeed bf16 zero0", "deepspeed bf16 zero1",
                                         "deepspeed bf16 zero2") for variant in ("dense", "masked")}
    assert all(r["pruned_nonzero"] == 0 and r["masked_over_dense"] > 0 for r in finetune if r["variant"] == "masked")
    assert all(r["samples_per_s"] > 0 and r["mfu"] is None for r in finetune)
    packing = result["packing"]
    assert packing["trials"] == 2 and packing["devices"] == ["cpu", "cpu"] and packing["ratio"] > 0
    inference = {r["variant"]: r for r in result["inference"]}
    assert inference["compact"]["max_abs_diff"] <= 0.05 and inference["compact"]["speedup"] > 0
    assert inference["2:4"]["note"] == "2:4 kernels need CUDA"
