"""The masked fine-tuning loop."""

import pytest
import torch

from tickets.config import TrainConfig
from tickets.data import load_task_data, train_loader
from tickets.models import base_model, build_model, load_tokenizer, prunable_parameters, prunable_patterns
from tickets.pruning import prune
from tickets.tasks import get_task
from tickets.training import fine_tune, masked_pairs

from conftest import GLUE_DIR


def test_pruned_weights_stay_exactly_zero_and_others_train():
    task = get_task("sst2")
    data = load_task_data(task, load_tokenizer("tiny-random-bert"), str(GLUE_DIR), 32, 64, 16)
    model = build_model("tiny-random-bert", task.kind, task.num_labels, seed=0)
    params = prunable_parameters(model, prunable_patterns(model))
    keep = prune("random", {n: p.detach() for n, p in params.items()}, 0.6, seed=1)
    before = {n: p.detach().clone() for n, p in params.items()}
    cfg = TrainConfig(epochs=1, batch_size=8, learning_rate=5e-3, weight_decay=0.1, warmup_ratio=0.2)
    result = fine_tune(model, data, cfg, masked_pairs(params, keep), seed=0, progress=False)
    assert result.steps == 8
    for name, param in params.items():
        assert torch.count_nonzero(param[~keep[name]]) == 0, name
        assert not torch.equal(param[keep[name]], before[name][keep[name]]), name
    assert {"accuracy", "eval_loss"} <= set(result.metrics)


def test_pruned_weights_are_exactly_zero_after_every_optimizer_step():
    from tickets.backends.torch_backend import TorchBackend

    task = get_task("sst2")
    data = load_task_data(task, load_tokenizer("tiny-random-bert"), str(GLUE_DIR), 32, 80, 16)
    model = build_model("tiny-random-bert", task.kind, task.num_labels, seed=0)
    params = prunable_parameters(model, prunable_patterns(model))
    keep = prune("magnitude", {n: p.detach() for n, p in params.items()}, 0.5)
    cfg = TrainConfig(learning_rate=5e-3, weight_decay=0.1, max_grad_norm=0.5)
    backend = TorchBackend(model, cfg, 10, masked_pairs(params, keep))
    for batch in train_loader(data, 8, seed=0):
        backend.backward(backend.forward(batch))
        backend.step()
        for name, param in params.items():
            assert torch.count_nonzero(param.detach()[~keep[name]]) == 0, name
            state = backend.optimizer.state[param]
            assert torch.count_nonzero(state["exp_avg_sq"][~keep[name]]) == 0, name
    assert int(backend.optimizer.state[params[next(iter(params))]]["step"]) == 10


def test_same_seed_same_result():
    task = get_task("sst2")
    data = load_task_data(task, load_tokenizer("tiny-random-bert"), str(GLUE_DIR), 32, 32, 16)
    outs = []
    for _ in range(2):
        model = build_model("tiny-random-bert", task.kind, task.num_labels, seed=5)
        fine_tune(model, data, TrainConfig(batch_size=8, learning_rate=1e-3), [], seed=5, progress=False)
        outs.append(base_model(model).encoder.layer[0].output.dense.weight.detach().clone())
    assert torch.equal(outs[0], outs[1])


def test_head_init_depends_on_seed_but_encoder_does_not():
    a = build_model("tiny-random-bert", "classification", 2, seed=0)
    b = build_model("tiny-random-bert", "classification", 2, seed=1)
    assert not torch.equal(a.classifier.weight, b.classifier.weight)
    assert torch.equal(a.bert.encoder.layer[1].intermediate.dense.weight, b.bert.encoder.layer[1].intermediate.dense.weight)
    assert a.classifier.weight.std().item() == pytest.approx(0.02, rel=0.3)


def test_every_seed_and_epoch_has_its_own_data_order():
    from tickets.data import training_batches

    task = get_task("sst2")
    data = load_task_data(task, load_tokenizer("tiny-random-bert"), str(GLUE_DIR), 32, 24, 8)
    per_epoch = 3  # 24 examples in batches of 8
    orders = {}
    for seed in range(3):
        batches = list(training_batches(data, 8, seed, steps=3 * per_epoch))
        for epoch in range(3):
            epoch_batches = batches[epoch * per_epoch:(epoch + 1) * per_epoch]
            orders[(seed, epoch)] = tuple(tuple(b["input_ids"][:, 1].tolist()) for b in epoch_batches)
    assert len(set(orders.values())) == len(orders), "two (seed, epoch) pairs share a data order"


def test_evaluation_does_not_change_the_training_randomness():
    """Two runs that differ only in eval_every end with bit-identical weights (dropout is on during training)."""
    task = get_task("sst2")
    data = load_task_data(task, load_tokenizer("tiny-random-bert"), str(GLUE_DIR), 32, 48, 16)
    weights = []
    for eval_every in (0, 2):
        model = build_model("tiny-random-bert", task.kind, task.num_labels, seed=2)
        assert model.config.hidden_dropout_prob > 0
        cfg = TrainConfig(batch_size=8, learning_rate=1e-3, eval_every=eval_every)
        result = fine_tune(model, data, cfg, [], seed=2, progress=False)
        assert len(result.eval_history) == (1 if eval_every == 0 else 3)
        weights.append({n: p.detach().clone() for n, p in model.named_parameters()})
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name
