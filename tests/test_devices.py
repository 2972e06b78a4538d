"""GPU readiness on CPU: which device a trial picks, that every phase honours it, the training precision, and what a
trial reports about its training."""

import dataclasses
from contextlib import contextmanager

import pytest
import torch

from tickets import devices
from tickets.backends import resolve_backend
from tickets.backends.deepspeed_config import engine_config, recipe_settings
from tickets.backends.torch_backend import TorchBackend
from tickets.config import TrainConfig
from tickets.devices import CPU, allow_tf32, pick_device, training_device, use_device
from tickets.errors import TicketsError
from tickets.data import train_loader
from tickets.session import TaskSession
from tickets.training import masked_pairs
from tickets.usage import METER, Usage

CUDA0, CUDA1, CUDA2 = (torch.device("cuda", i) for i in range(3))


@pytest.mark.parametrize("cuda_count, assigned, visible, expected", [
    (0, ["0"], "0", CPU),  # no CUDA device at all
    (4, None, None, CUDA0),  # outside Ray: the current device
    (4, [], None, CPU),  # a Ray trial without GPUs on a GPU node sees every GPU, but none is its own
    (4, [], "0,1,2,3", CPU),
    (1, ["3"], "3", CUDA0),  # Ray narrowed CUDA_VISIBLE_DEVICES to the assigned GPU
    (4, ["2"], "0,1,2,3", CUDA2),  # RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES: every GPU stays visible
    (4, ["2"], None, CUDA2),
    (2, ["3", "1"], "1,3", CUDA0),  # several GPUs: the first visible one (training is single-process)
    (2, ["GPU-bb"], "GPU-aa,GPU-bb", CUDA1),  # UUIDs
    (1, [0], "0", CUDA0),  # ids as ints
])
def test_pick_device_from_a_fake_set_of_visible_devices(cuda_count, assigned, visible, expected):
    assert pick_device(cuda_count, assigned, visible) == expected


def test_fractional_trials_sharing_one_gpu_all_get_it():
    """Four trials with `gpus: 0.25` on GPU 1: Ray gives each the same id and the same visible set."""
    assert {pick_device(1, ["1"], "1") for _ in range(4)} == {CUDA0}
    assert {pick_device(4, ["1"], "0,1,2,3") for _ in range(4)} == {CUDA1}


@pytest.mark.parametrize("cuda_count, assigned, visible, needle", [
    (2, ["5"], "0,1", "hides"),
    (2, ["GPU-aa"], None, "unset"),
    (2, ["3"], None, "sees only 2"),
])
def test_pick_device_says_when_the_assigned_gpu_is_out_of_reach(cuda_count, assigned, visible, needle):
    with pytest.raises(TicketsError, match=needle):
        pick_device(cuda_count, assigned, visible)


def test_trial_device_reads_rays_assignment_and_the_visible_devices(monkeypatch):
    ray = pytest.importorskip("ray")
    from sweeps import trial

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: ["6"])
    assert trial.trial_device() == CUDA2
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    assert trial.trial_device() == CPU


@pytest.fixture
def gpu_visible(monkeypatch):
    """A machine where CUDA looks available: code that still picks `cuda` by itself would fail on this CPU build."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_training_and_backend_choice_honour_the_runs_device(gpu_visible, tiny_recipe):
    assert training_device() == CUDA0 and resolve_backend("auto") == "deepspeed"
    with use_device(CPU):
        assert training_device() == CPU
        assert resolve_backend("auto") == "torch"
        session = TaskSession.open(tiny_recipe)
        result = session.train(session.full_mask(), progress=False)
    assert result.steps == 6 and next(session.model.parameters()).device == CPU


def test_structured_search_trains_scores_and_evaluates_inside_one_placement_on_the_runs_device(monkeypatch, tmp_path,
                                                                                                tiny_recipe):
    from tickets.structured import runs, search

    events = []
    real_placed, real_evaluate, real_backend = runs.placed, search.evaluate, TorchBackend.__init__

    @contextmanager
    def spy_placed(model, device):
        events.append(("placed", device))
        with real_placed(model, device):
            yield model
        events.append(("home", device))

    def spy_backend(self, *args):
        real_backend(self, *args)
        events.append(("train", self.device))

    def spy_evaluate(model, *args):
        events.append(("evaluate", next(model.parameters()).device))
        return real_evaluate(model, *args)

    strategy = runs.get_structured_strategy("gradient-importance")

    def spy_strategy(name):
        def scorer(model, batches, structure):
            events.append(("score", next(model.parameters()).device))
            return strategy.importance(model, batches, structure)

        return dataclasses.replace(strategy, importance=scorer)

    monkeypatch.setattr(runs, "placed", spy_placed)
    monkeypatch.setattr(search, "evaluate", spy_evaluate)
    monkeypatch.setattr(TorchBackend, "__init__", spy_backend)
    monkeypatch.setattr(runs, "get_structured_strategy", spy_strategy)
    with use_device(CPU):
        runs.run_search(runs.SearchConfig(tiny_recipe, threshold=0.5, importance_samples=16), str(tmp_path / "s"),
                        progress=False)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "placed" and kinds[-1] == "home" and kinds.count("placed") == 1
    assert {"train", "score", "evaluate"} <= set(kinds[1:-1])
    assert {device for _, device in events} == {CPU}


def _train_steps(cfg: TrainConfig, tiny_recipe, steps: int = 3):
    """(backend, prunable parameters, keep, logits dtypes seen) after `steps` torch-backend steps of the tiny model
    under a random 50% mask."""
    session = TaskSession.open(tiny_recipe)
    generator = torch.Generator().manual_seed(0)
    keep = {n: torch.rand(p.shape, generator=generator) > 0.5 for n, p in session.prunable.items()}
    backend = TorchBackend(session.model, cfg, steps, masked_pairs(session.prunable, keep))
    seen = []
    handle = session.model.classifier.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    for _, batch in zip(range(steps), train_loader(session.data, 8, seed=0)):
        backend.backward(backend.forward(batch))
        backend.step()
    handle.remove()
    return backend, session.prunable, keep, seen


@pytest.mark.parametrize("precision, compute", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_torch_backend_trains_in_the_recipes_precision_with_float32_weights_and_exact_masks(precision, compute,
                                                                                             tiny_recipe):
    cfg = dataclasses.replace(tiny_recipe.train, precision=precision).validate()
    backend, params, keep, seen = _train_steps(cfg, tiny_recipe)
    assert seen and set(seen) == {compute}
    model = backend.unwrap()
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    for name, k in keep.items():
        assert torch.count_nonzero(params[name][~k]) == 0, name


def test_precision_is_a_checked_recipe_setting_that_reaches_deepspeed():
    with pytest.raises(TicketsError, match="unknown precision 'fp8'"):
        TrainConfig(precision="fp8").validate()
    with pytest.raises(TicketsError, match="fp16 needs the deepspeed backend"):
        TrainConfig(precision="fp16").validate()
    config = engine_config(recipe_settings(TrainConfig(precision="bf16")), 16, 1.0)
    assert config["bf16"]["enabled"] and not config["fp16"]["enabled"]


def test_the_default_precision_leaves_content_keys_alone(tiny_recipe):
    explicit = dataclasses.replace(tiny_recipe, train=dataclasses.replace(tiny_recipe.train, precision="fp32"))
    bf16 = dataclasses.replace(tiny_recipe, train=dataclasses.replace(tiny_recipe.train, precision="bf16"))
    assert explicit.content_key(1) == tiny_recipe.content_key(1) != bf16.content_key(1)
    assert "train.precision" not in tiny_recipe.identity()["settings"]


def test_tf32_only_on_a_cuda_device():
    before = torch.backends.cuda.matmul.fp32_precision
    try:
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        allow_tf32(CPU)
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        allow_tf32(CUDA0)
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    finally:
        torch.backends.cuda.matmul.fp32_precision = before


def test_to_device_leaves_cpu_batches_unpinned():
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long)}
    moved = devices.to_device(batch, CPU)
    assert moved["input_ids"].device == CPU and not moved["input_ids"].is_pinned()


def test_usage_meter_counts_training_samples_and_is_read_once(tiny_recipe):
    METER.take()
    session = TaskSession.open(tiny_recipe)
    session.train(session.full_mask(), progress=False)
    used = METER.take()
    assert (used.device, used.precision, used.samples, used.peak_memory_mb) == ("cpu", "fp32", 48, None)
    assert used.samples_per_s > 0
    assert METER.take() is None


def test_trial_logs_device_precision_throughput_and_gpu_memory_only_on_a_gpu():
    pytest.importorskip("mlflow")
    from sweeps.mlflow_runs import usage_tags, usage_values

    cpu, gpu = Usage("cpu", "fp32", 48, 2.0, None), Usage("cuda:0", "bf16", 64, 0.5, 812.5)
    assert (usage_tags(cpu), usage_values(cpu)) == ({"device": "cpu", "precision": "fp32"}, {"samples_per_s": 24.0})
    assert usage_tags(gpu) == {"device": "cuda:0", "precision": "bf16"}
    assert usage_values(gpu) == {"samples_per_s": 128.0, "peak_memory_mb": 812.5}
    assert usage_tags(None) == usage_values(None) == {}  # a reused level trained nothing
