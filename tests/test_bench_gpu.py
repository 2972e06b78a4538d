"""bench/gpu.py --device cpu --tiny: every section of the GPU benchmark runs, on tiny models, in seconds (the run is
the session fixture `bench_gpu_tiny`, shared by every test that reads its JSON)."""

import json

import pytest

pytest.importorskip("deepspeed")
pytest.importorskip("ray")


@pytest.mark.slow
def test_gpu_benchmark_tiny_cpu_mode_writes_its_json_and_ends_with_the_headline(bench_gpu_tiny):
    proc, out = bench_gpu_tiny
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
