"""The DeepSpeed backend on DeepSpeed's CPU accelerator: exact masks in every copy, parity with torch, Ray trials.

The first DeepSpeed engine on a machine compiles a C++ communication op (about 40-150 s on 2 cores), cached under
TORCH_EXTENSIONS_DIR (default ~/.cache/torch_extensions).
"""

import dataclasses
import os
import time

import pytest
import torch
from torch import nn

deepspeed = pytest.importorskip("deepspeed")

from tickets.backends.deepspeed_backend import DeepSpeedBackend  # noqa: E402
from tickets.config import TrainConfig  # noqa: E402
from tickets.data import load_task_data, train_loader  # noqa: E402
from tickets.errors import TicketsError  # noqa: E402
from tickets.imp import level_dir, run_trajectory  # noqa: E402
from tickets.paths import NEXT_MASK, REWIND_POINT_WEIGHTS as REWIND_POINT, TRAINED_WEIGHTS as DENSE_TRAINED  # noqa: E402
from tickets.masks import Mask, overlap  # noqa: E402
from tickets.models import build_model, load_tokenizer, prunable_parameters, prunable_patterns  # noqa: E402
from tickets.pruning import prune  # noqa: E402
from tickets.tasks import get_task  # noqa: E402
from tickets.training import fine_tune, masked_pairs  # noqa: E402
from tickets.weights import load_weights  # noqa: E402

from conftest import GLUE_DIR  # noqa: E402

DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")
PARTITIONED = {"zero_optimization": {"stage3_param_persistence_threshold": 0}}  # ZeRO-3 keeps no full copies


@pytest.fixture(scope="module")
def sst2():
    return load_task_data(get_task("sst2"), load_tokenizer("tiny-random-bert"), str(GLUE_DIR), 32, 64, 32)


def masked_model(sparsity=0.5, seed=0):
    """The tiny random BERT with a random mask applied: (model, {name: param}, {name: keep})."""
    model = build_model("tiny-random-bert", "classification", 2, seed=seed)
    params = prunable_parameters(model, prunable_patterns(model))
    keep = prune("random", {n: p.detach() for n, p in params.items()}, sparsity, seed=1)
    return model, params, keep


def engine_copies(backend, param):
    """(live weights, fp32 master, Adam exp_avg) of one engine parameter, read through DeepSpeed's own APIs."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    optimizer = backend.optimizer
    if hasattr(param, "ds_id"):
        with deepspeed.zero.GatheredParameters([param]):
            live = param.detach().clone()
        return live, safe_get_full_fp32_param(param), safe_get_full_optimizer_state(param, "exp_avg")
    if getattr(param, "_hp_mapping", None) is not None:
        return param.detach(), safe_get_full_fp32_param(param), safe_get_full_optimizer_state(param, "exp_avg")
    if hasattr(optimizer, "fp32_groups"):
        pairs = zip(optimizer.fp16_groups, optimizer.fp32_groups)
        master = next(high for lows, highs in pairs for low, high in zip(lows, highs) if low is param)
        return param.detach(), master, optimizer.optimizer.state[master]["exp_avg"]
    return param.detach(), param.detach(), optimizer.state[param]["exp_avg"]


OPTIMIZERS = {0: "AdamW", 1: "DeepSpeedZeroOptimizer", 2: "DeepSpeedZeroOptimizer", 3: "DeepSpeedZeroOptimizer_Stage3"}


@pytest.mark.parametrize(
    "settings",
    [
        {"zero_stage": 0},
        {"zero_stage": 0, "precision": "bf16"},
        {"zero_stage": 1, "precision": "bf16"},
        {"zero_stage": 2},
        {"zero_stage": 2, "precision": "bf16"},
        {"zero_stage": 2, "precision": "bf16", "offload_optimizer": True},
        {"zero_stage": 3, "config": PARTITIONED},
        {"zero_stage": 3, "precision": "bf16", "config": PARTITIONED},
    ],
    ids=lambda s: f"zero{s['zero_stage']}-{s.get('precision', 'fp32')}{'-offload' if s.get('offload_optimizer') else ''}",
)
def test_pruned_weights_exactly_zero_in_model_and_fp32_masters_after_every_step(sst2, settings):
    model, params, keep = masked_model()
    env_before = {k: os.environ.get(k) for k in DIST_ENV}
    engine = {k: v for k, v in settings.items() if k != "precision"}
    cfg = TrainConfig(batch_size=8, learning_rate=5e-3, weight_decay=0.1, backend="deepspeed",
                      precision=settings.get("precision", "fp32"), deepspeed=engine)
    backend = DeepSpeedBackend(model, cfg, 8, masked_pairs(params, keep))
    try:
        low = torch.bfloat16 if settings.get("precision") == "bf16" else torch.float32
        expected = "FP16_UnfusedOptimizer" if settings["zero_stage"] == 0 and low == torch.bfloat16 else None
        assert type(backend.optimizer).__name__ == (expected or OPTIMIZERS[settings["zero_stage"]])
        engine_params = dict(backend.engine.module.bert.named_parameters())
        start = {n: backend.full_fp32(engine_params[n]).clone() for n in params}
        for step, batch in zip(range(4), train_loader(sst2, 8, seed=0)):
            backend.backward(backend.forward(batch))
            backend.step()
            for name in params:
                live, master, exp_avg = engine_copies(backend, engine_params[name])
                pruned = ~keep[name]
                assert live.dtype == low and master.dtype == torch.float32, name
                assert torch.count_nonzero(live[pruned]) == 0, (step, name, "model weights")
                assert torch.count_nonzero(master[pruned]) == 0, (step, name, "fp32 master")
                assert torch.count_nonzero(exp_avg[pruned]) == 0, (step, name, "Adam moment")
        for hook in backend.hooks:  # now gradients reach pruned weights: only the re-masking after the step is left
            hook.remove()
        backend.backward(backend.forward(next(iter(train_loader(sst2, 8, seed=1)))))
        backend.step()
        reached = 0
        for name in params:
            live, master, exp_avg = engine_copies(backend, engine_params[name])
            assert torch.count_nonzero(live[~keep[name]]) == 0 and torch.count_nonzero(master[~keep[name]]) == 0
            reached += int(torch.count_nonzero(exp_avg[~keep[name]]))
        assert reached > 0
        plain = backend.unwrap()
        for name, param in prunable_parameters(plain, prunable_patterns(plain)).items():
            master = engine_copies(backend, engine_params[name])[1]
            assert param.dtype == torch.float32 and not hasattr(param, "ds_id")
            assert torch.equal(param.detach(), master.reshape(param.shape)), name
            assert torch.count_nonzero(param[~keep[name]]) == 0, name
            assert not torch.equal(master[keep[name]], start[name][keep[name]]), f"{name} did not train"
    finally:
        backend.close()
    assert not torch.distributed.is_initialized()
    assert {k: os.environ.get(k) for k in DIST_ENV} == env_before


def test_same_level_result_as_torch_backend_with_rewinding(tmp_path, tiny_recipe):
    """fp32 ZeRO-0 reproduces the torch backend: rewind point, trained weights, next mask and dev metric."""
    outs, metrics = {}, {}
    for backend in ("torch", "deepspeed"):
        train = dataclasses.replace(tiny_recipe.train, backend=backend, weight_decay=0.01, warmup_ratio=0.2)
        outs[backend] = str(tmp_path / backend)
        results = run_trajectory(dataclasses.replace(tiny_recipe, levels=1, rewind=2, train=train), outs[backend],
                                 progress=False)
        metrics[backend] = [r.metrics["metrics"] for r in results]
    for name in (REWIND_POINT, os.path.join(level_dir("", 0), DENSE_TRAINED)):
        ours, theirs = (load_weights(os.path.join(outs[b], name)) for b in ("deepspeed", "torch"))
        for key in theirs:
            torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=1e-5, msg=f"{name}: {key}")
    masks = [Mask.load(os.path.join(level_dir(outs[b], 0), NEXT_MASK)) for b in ("deepspeed", "torch")]
    assert overlap(*masks)["jaccard"] > 0.99
    for ours, theirs in zip(metrics["deepspeed"], metrics["torch"]):
        assert abs(ours["accuracy"] - theirs["accuracy"]) <= 1 / 32
        assert ours["eval_loss"] == pytest.approx(theirs["eval_loss"], abs=1e-3)


def test_gradient_accumulation_matches_one_full_batch(sst2):
    """ZeRO-2 with 2 micro-batches per step trains like the torch backend on the whole batch (dropout off)."""
    trained = {}
    for backend, settings in (("torch", {}), ("deepspeed", {"zero_stage": 2, "grad_accum": 2})):
        model, params, keep = masked_model(0.3)
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        cfg = TrainConfig(batch_size=8, learning_rate=1e-3, backend=backend, deepspeed=settings)
        result = fine_tune(model, sst2, cfg, masked_pairs(params, keep), seed=0, progress=False)
        assert result.steps == 8
        trained[backend] = {n: p.detach().clone() for n, p in model.named_parameters()}
    for name, value in trained["torch"].items():
        torch.testing.assert_close(trained["deepspeed"][name], value, rtol=0, atol=1e-4, msg=name)


def test_zero3_bf16_trajectory_levels_in_one_process_and_resume(tmp_path, tiny_recipe):
    """Consecutive levels re-initialise DeepSpeed in one process; a resumed run restores mask and rewind point."""
    train = dataclasses.replace(tiny_recipe.train, backend="deepspeed", precision="bf16",
                                deepspeed={"zero_stage": 3, "config": PARTITIONED})
    cfg = dataclasses.replace(tiny_recipe, levels=1, rewind=1, train=train)
    out = str(tmp_path / "traj")
    first = run_trajectory(cfg, out, progress=False)
    resumed = run_trajectory(dataclasses.replace(cfg, levels=2), out, progress=False)
    assert [r.reused for r in resumed] == [True, True, False]
    assert [r.metrics["sparsity"] for r in first + resumed[2:]] == pytest.approx([0.0, 0.2, 0.4], abs=1e-3)
    masks = [Mask.load(os.path.join(level_dir(out, level), "mask.safetensors")) for level in (1, 2)]
    assert all(torch.all(masks[1].tensors[n] <= masks[0].tensors[n]) for n in masks[0].tensors)
    assert all(value.dtype == torch.float32 for value in load_weights(os.path.join(out, REWIND_POINT)).values())
    assert "MASTER_PORT" not in os.environ and not torch.distributed.is_initialized()


@pytest.mark.parametrize(
    "settings, needles",
    [
        ({"precision": "bf16"}, ["precision is a recipe setting", "--precision"]),
        ({"config": {"bf16": {"enabled": True}}}, ["enables bf16", "recipe's precision is fp32"]),
        ({"zero_stage": 4}, ["ZeRO stage", "4"]),
        ({"grad_accum": 3}, ["grad_accum 3", "batch_size 16"]),
        ({"micro_batch_size": 0}, ["micro_batch_size"]),
        ({"offload_optimizer": True}, ["offload", "stage 0"]),
        ({"stage": 2}, ["unknown DeepSpeed setting 'stage'"]),
        ({"config": "/nonexistent/ds.json"}, ["/nonexistent/ds.json"]),
        ({"config": {"optimizer": {"type": "Adam"}}}, ["'optimizer'", "recipe"]),
        ({"config": {"train_batch_size": 32}}, ["train_batch_size 32", "batch_size 16"]),
    ],
)
def test_bad_deepspeed_settings_fail_before_any_compute(settings, needles):
    with pytest.raises(TicketsError) as err:
        TrainConfig(backend="deepspeed", deepspeed=settings).validate()
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_invalid_json_file_and_fp16_on_cpu(tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_text("{not json")
    with pytest.raises(TicketsError, match="not valid JSON"):
        TrainConfig(backend="deepspeed", deepspeed={"config": str(bad)}).validate()
    if not torch.cuda.is_available():
        with pytest.raises(TicketsError, match="fp16 needs DeepSpeed on a GPU"):
            TrainConfig(backend="deepspeed", precision="fp16").validate()
        with pytest.raises(TicketsError, match="fp16 needs the deepspeed backend on a GPU"):
            TrainConfig(backend="auto", precision="fp16").validate()  # auto means torch here


def _concurrent_trial(name: str, barrier: str, glue_dir: str) -> dict:
    """One short DeepSpeed fine-tune that holds its process group until the other trial holds one too."""
    model, params, keep = masked_model(0.5)
    data = load_task_data(get_task("sst2"), load_tokenizer("tiny-random-bert"), glue_dir, 32, 32, 16)
    cfg = TrainConfig(batch_size=8, learning_rate=1e-3, backend="deepspeed", deepspeed={"zero_stage": 2})
    backend = DeepSpeedBackend(model, cfg, 4, masked_pairs(params, keep))
    port = os.environ["MASTER_PORT"]
    open(os.path.join(barrier, name), "w").close()
    deadline = time.time() + 180
    while len(os.listdir(barrier)) < 2 and time.time() < deadline:
        time.sleep(0.2)
    together = len(os.listdir(barrier)) == 2
    try:
        for batch in train_loader(data, 8, seed=0):
            backend.backward(backend.forward(batch))
            backend.step()
        plain = backend.unwrap()
    finally:
        backend.close()
    trained = prunable_parameters(plain, prunable_patterns(plain))
    pruned = sum(int(torch.count_nonzero(p[~keep[n]])) for n, p in trained.items())
    return {"port": port, "together": together, "pruned_nonzero": pruned, "env_after": os.environ.get("MASTER_PORT")}


def test_two_deepspeed_trials_at_once_in_local_ray(local_ray, tmp_path):
    import ray

    barrier = tmp_path / "barrier"
    barrier.mkdir()
    trial = ray.remote(num_cpus=1)(_concurrent_trial)
    results = ray.get([trial.remote(name, str(barrier), str(GLUE_DIR)) for name in ("a", "b")], timeout=600)
    assert all(r["together"] for r in results), results
    assert results[0]["port"] != results[1]["port"]
    assert [r["pruned_nonzero"] for r in results] == [0, 0]
    assert all(r["env_after"] is None for r in results)
