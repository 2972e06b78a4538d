"""Masked fine-tuning throughput of the torch and DeepSpeed backends, measured side by side in one run.

Each repetition runs every configuration once, interleaved (torch, DeepSpeed ZeRO a, DeepSpeed ZeRO b, torch, ...),
from the same starting weights under the same 50% random mask, on synthetic full-length batches (random token ids,
no padding, so tokens = batch x length). Engine set-up is not timed. Prints median samples/s per configuration, the
ratio to torch and, on a GPU, model FLOPs utilisation: 6 x parameters x tokens / time / peak (dense count; pruned
weights still cost FLOPs with dense kernels). The last line is the headline ratio.

    python bench/deepspeed_vs_torch.py                                   # tiny model, a couple of minutes on 2 CPUs
    python bench/deepspeed_vs_torch.py --model-size bert-base --batch-size 32 --seq-len 128 --precision bf16
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time

import torch

from tickets.backends import get_backend
from tickets.config import TrainConfig
from tickets.models import TINY_CONFIG, prunable_parameters, prunable_patterns
from tickets.pruning import prune
from tickets.training import masked_pairs

SIZES = {
    "tiny": TINY_CONFIG,
    "minilm": dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536),
    "bert-base": {},  # BertConfig's defaults are BERT-base: 12 layers, hidden 768, 110M parameters
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks (SXM)


def build_model(size: str, seed: int) -> torch.nn.Module:
    """A randomly initialised BERT of the given size with a 2-way classification head (no download)."""
    from transformers import AutoModelForSequenceClassification, BertConfig
    from transformers import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(BertConfig(num_labels=2, **SIZES[size]))


def synthetic_batches(count: int, batch_size: int, seq_len: int, vocab: int, seed: int) -> list[dict]:
    """Full-length batches of random token ids and labels."""
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            "input_ids": torch.randint(1000, vocab, (batch_size, seq_len), generator=generator),
            "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
            "labels": torch.randint(0, 2, (batch_size,), generator=generator),
        }
        for _ in range(count)
    ]


def time_run(base: torch.nn.Module, keep: dict, cfg: TrainConfig, batches: list[dict], warmup: int) -> float:
    """Seconds for the timed batches (after `warmup` untimed ones) of one fresh backend on a copy of `base`."""
    model = copy.deepcopy(base)
    params = prunable_parameters(model, prunable_patterns(model, include_pooler=False))
    backend = get_backend(cfg.backend)(model, cfg, len(batches), masked_pairs(params, keep))
    try:
        for index, batch in enumerate(batches):
            if index == warmup:
                _synchronize()
                started = time.perf_counter()
            loss = backend.forward(batch)
            backend.backward(loss)
            backend.step()
            float(loss.detach())
        _synchronize()
        return time.perf_counter() - started
    finally:
        backend.close()


def peak_flops(override_tflops: float | None) -> float | None:
    """Peak FLOP/s of this GPU for MFU (from --peak-tflops or the table), None on CPU or for an unknown GPU."""
    if override_tflops:
        return override_tflops * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((tflops * 1e12 for key, tflops in PEAK_BF16_TFLOPS.items() if key in name), None)


def main(argv: list[str] | None = None) -> None:
    """Run the interleaved comparison and print the table."""
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-size", choices=SIZES, default="tiny")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--zero-stages", default="0,2", help="DeepSpeed ZeRO stages to compare, comma-separated")
    parser.add_argument("--precision", default="bf16" if cuda else "fp32", help="DeepSpeed precision")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--peak-tflops", type=float, help="peak TFLOP/s for MFU (default: table for H100/H200/A100)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--steps and --repeats must be at least 1, --warmup at least 0")

    base = build_model(args.model_size, seed=0)
    n_params = sum(p.numel() for p in base.parameters())
    prunable = prunable_parameters(base, prunable_patterns(base, include_pooler=False))
    keep = prune("random", {n: p.detach() for n, p in prunable.items()}, args.sparsity, seed=1)
    batches = synthetic_batches(args.warmup + args.steps, args.batch_size, args.seq_len, base.config.vocab_size, 0)
    recipe = TrainConfig(batch_size=args.batch_size, learning_rate=1e-4, max_seq_length=args.seq_len)
    configs = {"torch fp32": dataclasses.replace(recipe, backend="torch")}
    for stage in (int(s) for s in args.zero_stages.split(",")):
        configs[f"deepspeed {args.precision} zero{stage}"] = dataclasses.replace(
            recipe, backend="deepspeed", precision=args.precision, deepspeed={"zero_stage": stage}).validate()

    device = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.model_size} BERT ({n_params / 1e6:.1f}M parameters), batch {args.batch_size} x {args.seq_len} tokens, "
          f"{args.steps} timed steps x {args.repeats} interleaved repeats, sparsity {args.sparsity}, on {device}")
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, cfg in configs.items():
            seconds[name].append(time_run(base, keep, cfg, batches, args.warmup))

    peak = peak_flops(args.peak_tflops)
    tokens = args.steps * args.batch_size * args.seq_len
    torch_rate = args.steps * args.batch_size / statistics.median(seconds["torch fp32"])
    print(f"{'backend':<26}{'samples/s':>11}{'min-max':>17}{'ratio':>8}{'MFU':>8}")
    for name, times in seconds.items():
        rate = args.steps * args.batch_size / statistics.median(times)
        spread = f"{args.steps * args.batch_size / max(times):.1f}-{args.steps * args.batch_size / min(times):.1f}"
        mfu = f"{6 * n_params * tokens / statistics.median(times) / peak:.1%}" if peak else "-"
        print(f"{name:<26}{rate:>11.1f}{spread:>17}{rate / torch_rate:>7.2f}x{mfu:>8}")
    headline = list(configs)[1]
    rate = args.steps * args.batch_size / statistics.median(seconds[headline])
    print(f"headline: {headline} / torch fp32 = {rate / torch_rate:.2f}x samples/s")


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
