"""GPU readiness in one run: fine-tuning throughput and MFU, masking overhead, trials packed on one GPU, and inference
speedups of structured and 2:4 tickets; one JSON, one table, the headline last.

1. Fine-tuning, batch 32 x 128 on synthetic full-length batches (random token ids, no padding): torch fp32, torch
   bf16 (autocast), DeepSpeed bf16 ZeRO-0/1/2, each dense and under a 50% random mask, through the engine's own
   backends on the run's device. Samples/s, tokens/s and model FLOPs utilisation against the device's dense bf16
   peak (FLOPs per token: 6 x non-embedding parameters + 12 x layers x hidden x sequence length for attention; the
   dense count for masked runs too, since dense kernels still multiply the zeros); masked/dense is the ratio of step
   times. After the steps every pruned weight is checked to be exactly zero (DeepSpeed: in its fp32 masters).
   Models: a BERT-base-size model built from its config with RANDOM weights (no BERT-base weights are available
   offline; speed does not depend on the values) and the embedded pre-trained MiniLM (all-MiniLM-L6-v2).
2. Packing: MiniLM torch-bf16 trials as tasks of a local Ray, each asking for 1/4 of the GPU and picking its device
   the way a sweep trial does (sweeps.trial.trial_device); four at once vs one alone, timed over the same steps
   after a barrier: total samples/s of the four / samples/s of one.
3. Inference at BERT-base size, batch 32 x 128, bf16: a compacted structured ticket (half the heads of every layer,
   half the MLP blocks) vs dense, and 2:4 semi-structured sparsity (torch.sparse.to_sparse_semi_structured on the
   prunable linears, CUDA only) vs dense. Best-of-rounds forward latency; max |difference| of the logits against
   the model each variant must equal (the gated dense model; the dense model with the same 2:4-pruned weights), in
   bf16.

    python bench/gpu.py                        # on one H100/H200: under 8 minutes
    python bench/gpu.py --device cpu --tiny    # the same code paths on tiny models in seconds (the suite runs it)

With --tiny the models are tiny (a config-built one standing in for BERT-base, tiny-random-bert for MiniLM: the
fine-tuning section runs only the first, packing the second), batches 4 x 16, two timed steps, one round, one CPU
thread, and packing runs two trials sharing the CPUs (each asks for half of them); its numbers only show that the
paths run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from tickets.backends import get_backend
from tickets.config import TrainConfig
from tickets.devices import release_memory, use_device
from tickets.models import (TINY_CONFIG, TINY_RANDOM_MODEL, base_model, build_model, prunable_parameters,
                            prunable_patterns)
from tickets.pruning import prune
from tickets.structured.compact import compact
from tickets.structured.gates import Gates
from tickets.structured.structure import Layout
from tickets.training import masked_pairs

from common import machine, synthetic_batch
from structured_speedup import default_structure, measure, two_four

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks (SXM)
BERT_BASE = "bert-base (random weights)"
MINILM = "minilm"
RECIPES = {
    "torch fp32": dict(backend="torch", precision="fp32"),
    "torch bf16": dict(backend="torch", precision="bf16"),
    "deepspeed bf16 zero0": dict(backend="deepspeed", precision="bf16", deepspeed={"zero_stage": 0}),
    "deepspeed bf16 zero1": dict(backend="deepspeed", precision="bf16", deepspeed={"zero_stage": 1}),
    "deepspeed bf16 zero2": dict(backend="deepspeed", precision="bf16", deepspeed={"zero_stage": 2}),
}
TARGETS = {"mfu": 0.40, "masked_over_dense": 1.03, "packing": 2.5}


@dataclass(frozen=True)
class Scale:
    """How big each section runs: models, batch, steps, rounds, packed trials."""

    bert_base: str | None  # None: BERT-base; else a model name standing in for it ("tiny": TINY_CONFIG)
    minilm: str | None  # None: the embedded MiniLM; else a model name standing in for it
    finetuned: tuple[str, ...]  # the models of the fine-tuning section
    batch_size: int
    seq_len: int
    warmup: int
    steps: int
    rounds: int
    pack_trials: int
    pack_steps: int
    inference_rounds: int


FULL = Scale(None, None, (BERT_BASE, MINILM), 32, 128, warmup=5, steps=20, rounds=2, pack_trials=4, pack_steps=60,
             inference_rounds=10)
TINY = Scale("tiny", TINY_RANDOM_MODEL, (BERT_BASE,), 4, 16, warmup=1, steps=2, rounds=1, pack_trials=2,
             pack_steps=3, inference_rounds=2)


def build(which: str, scale: Scale, seed: int = 0) -> nn.Module:
    """The BERT-base-size model (random weights, from its config) or MiniLM of this scale, with a 2-way head."""
    from transformers import BertConfig, BertForSequenceClassification
    from transformers import logging as hf_logging

    hf_logging.set_verbosity_error()
    name = scale.bert_base if which == BERT_BASE else scale.minilm
    if which == MINILM:
        return build_model(name, "classification", 2, seed)
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(num_labels=2, **(TINY_CONFIG if name == "tiny" else {})))


def prunable(model: nn.Module) -> dict[str, nn.Parameter]:
    """The prunable weights of a benchmark model (the encoder's linears; its pooler was never pre-trained here)."""
    return prunable_parameters(model, prunable_patterns(model, include_pooler=False))


def failure(exc: BaseException) -> str:
    """One line saying what failed."""
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:100]}"


def flops_per_sample(model: nn.Module, seq_len: int) -> float:
    """Training FLOPs of one full-length sample: 6 x non-embedding parameters + attention, per token."""
    config = model.config
    embeddings = sum(p.numel() for p in base_model(model).embeddings.parameters())
    weights = sum(p.numel() for p in model.parameters()) - embeddings
    return seq_len * (6 * weights + 12 * config.num_hidden_layers * config.hidden_size * seq_len)


def peak_flops(device: torch.device, override_tflops: float | None) -> float | None:
    """The device's dense bf16 peak FLOP/s (from --peak-tflops or the table); None on CPU or an unknown GPU."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in PEAK_BF16_TFLOPS.items() if key in name), None)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batches(model: nn.Module, scale: Scale, count: int, seed: int = 0) -> list[dict]:
    """`count` synthetic training batches in host memory (the backend copies them to the device)."""
    return [synthetic_batch(scale.batch_size, scale.seq_len, model.config.vocab_size, seed + i) for i in range(count)]


def train_timed(base: nn.Module, keep: dict | None, cfg: TrainConfig, data: list[dict], warmup: int,
                device: torch.device) -> tuple[float, int]:
    """(seconds of the steps after `warmup`, pruned weights that are not exactly zero afterwards) of one fresh
    backend training a copy of `base` (under `keep`, or dense)."""
    model = copy.deepcopy(base)
    backend = get_backend(cfg.backend)(model, cfg, len(data), masked_pairs(prunable(model), keep or {}))
    try:
        for index, batch in enumerate(data):
            if index == warmup:
                synchronize(device)
                started = time.perf_counter()
            backend.backward(backend.forward(batch))
            backend.step()
        synchronize(device)
        seconds = time.perf_counter() - started
        trained = prunable(backend.unwrap())
        nonzero = sum(int(torch.count_nonzero(trained[n][~k.to(trained[n].device)])) for n, k in (keep or {}).items())
    finally:
        backend.close()
        del model, backend
        release_memory(device)
    return seconds, nonzero


def finetune_section(scale: Scale, device: torch.device, peak: float | None) -> list[dict]:
    """One row per (model, recipe, dense/masked): samples/s, tokens/s, MFU, masked/dense, pruned non-zeros."""
    rows = []
    recipe = TrainConfig(batch_size=scale.batch_size, learning_rate=1e-4, max_seq_length=scale.seq_len)
    for which in scale.finetuned:
        base = build(which, scale)
        keep = prune("random", {n: p.detach() for n, p in prunable(base).items()}, 0.5, seed=1)
        data = batches(base, scale, scale.warmup + scale.steps)
        flops = flops_per_sample(base, scale.seq_len)
        for name, settings in RECIPES.items():
            cfg = replace(recipe, **settings).validate()
            best = {"dense": float("inf"), "masked": float("inf")}
            nonzero = 0
            try:
                for round_ in range(scale.rounds):  # alternating the order, so drift hits both alike
                    for variant in list(best) if round_ % 2 == 0 else reversed(list(best)):
                        print(f"  {which} {name} {variant}", file=sys.stderr, flush=True)
                        seconds, left = train_timed(base, keep if variant == "masked" else None, cfg, data,
                                                    scale.warmup, device)
                        best[variant] = min(best[variant], seconds)
                        nonzero += left
            except Exception as exc:  # noqa: BLE001 - one failing recipe must not cost the rest of a rare GPU run
                rows.append({"model": which, "recipe": name, "variant": "failed", "error": failure(exc)})
                continue
            for variant, seconds in best.items():
                rate = scale.steps * scale.batch_size / seconds
                rows.append({
                    "model": which, "recipe": name, "variant": variant, "samples_per_s": rate,
                    "tokens_per_s": rate * scale.seq_len, "mfu": rate * flops / peak if peak else None,
                    "masked_over_dense": best["masked"] / best["dense"] if variant == "masked" else None,
                    "pruned_nonzero": nonzero if variant == "masked" else None, "error": "",
                })
        del base
        release_memory(device)
    return rows


def packed_trial(scale: Scale, barrier: str, expected: int) -> dict:
    """One Ray task training MiniLM with the torch backend in bf16 on the device a sweep trial would pick; waits for
    `expected` tasks at the barrier, then times the same steps. Returns its device, wall-clock window and samples."""
    from sweeps.trial import trial_device

    device = trial_device()
    with use_device(device):
        model = build(MINILM, scale)
        cfg = TrainConfig(batch_size=scale.batch_size, max_seq_length=scale.seq_len, precision="bf16")
        backend = get_backend("torch")(model, cfg, scale.warmup + scale.pack_steps, [])
        data = batches(model, scale, scale.warmup + scale.pack_steps)
        for batch in data[:scale.warmup]:
            backend.backward(backend.forward(batch))
            backend.step()
        synchronize(device)
        open(os.path.join(barrier, uuid.uuid4().hex), "w").close()
        deadline = time.time() + 300
        while len(os.listdir(barrier)) < expected and time.time() < deadline:
            time.sleep(0.01)
        start = time.time()
        for batch in data[scale.warmup:]:
            backend.backward(backend.forward(batch))
            backend.step()
        synchronize(device)
        end = time.time()
        backend.close()
    release_memory(device)
    return {"device": str(device), "start": start, "end": end, "samples": scale.pack_steps * scale.batch_size}


def packing_section(scale: Scale, device: torch.device) -> dict:
    """Total samples/s of `pack_trials` concurrent trials sharing the device vs one trial alone, on a local Ray."""
    import ray

    gpu = device.type == "cuda"
    cpus = os.cpu_count() or 2
    share = 1 / scale.pack_trials
    ray.init(address="local", num_cpus=cpus, num_gpus=1 if gpu else 0, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([REPO, os.path.join(REPO, "bench")]),
                                       "RAY_USAGE_STATS_ENABLED": "0"}})
    try:
        resources = {"num_cpus": cpus * share}
        if gpu:
            resources = {"num_gpus": share, "num_cpus": max(1, cpus // scale.pack_trials)}
        task = ray.remote(**resources)(packed_trial)
        runs = {}
        for count in (1, scale.pack_trials):
            print(f"  packing: {count} trial(s)", file=sys.stderr, flush=True)
            with tempfile.TemporaryDirectory() as barrier:
                runs[count] = ray.get([task.remote(scale, barrier, count) for _ in range(count)], timeout=600)
    finally:
        ray.shutdown()
    rates = {count: sum(r["samples"] for r in done) / (max(r["end"] for r in done) - min(r["start"] for r in done))
             for count, done in runs.items()}
    packed = rates[scale.pack_trials]
    return {"trials": scale.pack_trials, "one_samples_per_s": rates[1], "packed_samples_per_s": packed,
            "ratio": packed / rates[1], "devices": [r["device"] for r in runs[scale.pack_trials]]}


def two_four_pruned(model: nn.Module) -> nn.Module:
    """A copy of `model` whose prunable weights keep only the 2 largest of every 4 (the 2:4 pattern), still dense."""
    pruned = copy.deepcopy(model)
    for param in prunable(pruned).values():
        param.data = two_four(param.detach(), torch.ones_like(param, dtype=torch.bool))
    return pruned


def semi_structured(pruned: nn.Module) -> nn.Module:
    """A copy of a 2:4-pruned CUDA model with its prunable weights stored as 2:4 sparse tensors."""
    from torch.sparse import to_sparse_semi_structured

    sparse = copy.deepcopy(pruned)
    encoder = base_model(sparse)
    for name, param in prunable(sparse).items():
        encoder.get_submodule(name.rsplit(".", 1)[0]).weight = nn.Parameter(
            to_sparse_semi_structured(param.detach()), requires_grad=False)
    return sparse


def sparse_variant(pruned: nn.Module, batch: dict) -> tuple[nn.Module | None, float | None, str]:
    """(the 2:4-sparse copy of the 2:4-pruned `pruned`, the max |logit difference| between them on `batch`, ''), or
    (None, None, why not)."""
    if next(pruned.parameters()).device.type != "cuda":
        return None, None, "2:4 kernels need CUDA"
    try:
        sparse = semi_structured(pruned)
        with torch.inference_mode():
            return sparse, float((sparse(**batch).logits - pruned(**batch).logits).abs().max()), ""
    except Exception as exc:  # noqa: BLE001 - the other numbers stand; the table says why 2:4 is missing
        return None, None, f"2:4 unavailable: {failure(exc)}"


def inference_section(scale: Scale, device: torch.device) -> list[dict]:
    """Dense, compacted (half the heads and MLPs) and 2:4 forward passes in bf16: samples/s, speedup, max |diff|."""
    dtype = torch.bfloat16
    model = build(BERT_BASE, scale).eval()
    structure = default_structure(Layout.of(model), 0.5, 0.5, seed=0)
    smaller = compact(model, structure).eval().to(device, dtype)
    model.to(device, dtype)
    batch = synthetic_batch(scale.batch_size, scale.seq_len, model.config.vocab_size, seed=7)
    batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
    with torch.inference_mode():
        with Gates(model, structure):
            gated = model(**batch).logits
        compact_diff = float((smaller(**batch).logits - gated).abs().max())
    sparse, sparse_diff, why = sparse_variant(two_four_pruned(model), batch)
    differences = {"compact": compact_diff, "2:4": sparse_diff}
    variants = {"dense": model, "compact": smaller, **({"2:4": sparse} if sparse is not None else {})}
    print("  inference", file=sys.stderr, flush=True)
    seconds = measure(variants, batch, scale.inference_rounds, device)
    rows = [{"variant": name, "samples_per_s": scale.batch_size / seconds[name],
             "speedup": seconds["dense"] / seconds[name], "max_abs_diff": differences.get(name), "note": ""}
            for name in variants]
    if sparse is None:
        rows.append({"variant": "2:4", "samples_per_s": None, "speedup": None, "max_abs_diff": None, "note": why})
    return rows


def headline(finetune: list[dict], packing: dict, inference: list[dict]) -> str:
    """The one-line summary against the targets."""
    bf16 = [r for r in finetune if (r["model"], r["recipe"], r["variant"]) == (BERT_BASE, "torch bf16", "dense")]
    mfu = "failed" if not bf16 else f"{bf16[0]['mfu']:.1%}" if bf16[0]["mfu"] is not None else "n/a (no GPU peak)"
    ratios = [r["masked_over_dense"] for r in finetune if r["variant"] == "masked"]
    exact = all(r["pruned_nonzero"] == 0 for r in finetune if r["variant"] == "masked")
    failed = sum(r["variant"] == "failed" for r in finetune) + bool(packing.get("error"))
    packed = f"{packing['ratio']:.2f}x" if "ratio" in packing else "failed"
    speed = {r["variant"]: r["speedup"] for r in inference}
    two_four = f"{speed['2:4']:.2f}x" if speed.get("2:4") else "n/a"
    return (f"headline: BERT-base torch bf16 MFU {mfu} (target >= {TARGETS['mfu']:.0%}); masked/dense worst "
            f"{max(ratios, default=float('nan')):.3f} (<= {TARGETS['masked_over_dense']}), masks "
            f"{'exact' if exact else 'NOT EXACT'}; {packing['trials']} packed MiniLM trials {packed} one trial "
            f"(>= {TARGETS['packing']}x); inference compact {speed['compact']:.2f}x, 2:4 {two_four} dense"
            + (f"; {failed} FAILED (see the table)" if failed else ""))


def cell(value: float | None, spec: str, width: int) -> str:
    """`value` formatted with `spec` and right-aligned in `width` characters; '-' when there is none."""
    return f"{'-' if value is None else format(value, spec):>{width}}"


def table(finetune: list[dict], packing: dict, inference: list[dict]) -> list[str]:
    """The result table, one line per measurement."""
    lines = [f"{'section':<10}{'model':<28}{'variant':<32}{'samples/s':>10}{'tokens/s':>11}{'MFU':>7}{'ratio':>8}"
             "  check"]

    def line(section, model, variant, rate, tokens=None, mfu=None, ratio=None, check=""):
        lines.append(f"{section:<10}{model:<28}{variant:<32}{cell(rate, '.1f', 10)}{cell(tokens, '.0f', 11)}"
                     f"{cell(mfu, '.1%', 7)}{cell(ratio, '.3f', 8)}  {check}")

    for r in finetune:
        if r["variant"] == "failed":
            line("finetune", r["model"], f"{r['recipe']} FAILED", None, check=r["error"])
            continue
        check = f"masked/dense; pruned non-zeros {r['pruned_nonzero']}" if r["variant"] == "masked" else ""
        line("finetune", r["model"], f"{r['recipe']} {r['variant']}", r["samples_per_s"], r["tokens_per_s"], r["mfu"],
             r["masked_over_dense"], check)
    if packing.get("error"):
        line("packing", MINILM, f"{packing['trials']} trials FAILED", None, check=packing["error"])
    else:
        line("packing", MINILM, "1 trial, torch bf16", packing["one_samples_per_s"])
        line("packing", MINILM, f"{packing['trials']} trials at once, total", packing["packed_samples_per_s"],
             ratio=packing["ratio"], check="packed/one; devices " + ",".join(packing["devices"]))
    for r in inference:
        check = f"dense/{r['variant']} latency; max |diff| {r['max_abs_diff']:.2e}" if r["max_abs_diff"] is not None \
            else r["note"]
        line("inference", BERT_BASE, f"{r['variant']} bf16", r["samples_per_s"], ratio=r["speedup"], check=check)
    return lines


def main(argv: list[str] | None = None) -> None:
    """Run the three sections on one device, write the JSON, print the table and the headline."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda[:N] or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny models and batches: the code paths in seconds")
    parser.add_argument("--out", default=os.path.join("runs", "bench_gpu.json"), help="where the JSON goes")
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak TFLOP/s for MFU (default: H100/H200/A100)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU; use --device cpu --tiny here")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    scale = TINY if args.tiny else FULL
    if args.tiny and device.type == "cpu":
        torch.set_num_threads(1)  # tiny ops on threads that share busy cores wait on each other (100x slower here)
    started = time.perf_counter()
    with use_device(device):
        peak = peak_flops(device, args.peak_tflops)
        finetune = finetune_section(scale, device, peak)
        inference = inference_section(scale, device)
    try:
        packing = packing_section(scale, device)
    except Exception as exc:  # noqa: BLE001 - the other sections' numbers stand; the table says what failed
        packing = {"trials": scale.pack_trials, "error": failure(exc)}
    wall = time.perf_counter() - started
    summary = headline(finetune, packing, inference)
    result = {"machine": machine(), "device": str(device), "scale": asdict(scale), "wall_s": wall,
              "peak_bf16_flops": peak, "finetune": finetune, "packing": packing, "inference": inference,
              "headline": summary}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    print(f"machine: {machine()}; device {device}; {'tiny' if args.tiny else 'full'} scale, batch "
          f"{scale.batch_size} x {scale.seq_len}; wall {wall:.0f} s; JSON {args.out}")
    print("\n".join(table(finetune, packing, inference)))
    print(summary)


if __name__ == "__main__":
    main()
