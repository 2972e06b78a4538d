"""IMP trajectories on a tiny random BERT and real SST-2: exact zeros, rewinding, resume, branches."""

import dataclasses
import json
import os
import shutil

import pytest
import torch

import tickets.session
from conftest import record_fine_tuning
from tickets.branches import BranchConfig, run_branch
from tickets.errors import TicketsError
from tickets.imp import finished_levels, level_dir, run_trajectory
from tickets.paths import REWIND_POINT_WEIGHTS as REWIND_POINT
from tickets.masks import Mask, overlap
from tickets.weights import load_weights


@pytest.fixture
def spy_fine_tune(monkeypatch):
    """The fine-tuning calls of this test (`record_fine_tuning`)."""
    return record_fine_tuning(monkeypatch)


@pytest.fixture(scope="module")
def trajectory(tiny_trajectory):
    """The folder of the session's tiny trajectory (tests only read it; what they train goes to their tmp_path)."""
    return tiny_trajectory[0]


def _masks(out):
    return [Mask.load(os.path.join(level_dir(out, lv), "mask.safetensors")) for lv in finished_levels(out)]


def test_trajectory_levels_sparsity_and_exact_zeros(tiny_trajectory):
    out, results, spy_fine_tune = tiny_trajectory
    assert [r.level for r in results] == [0, 1, 2]
    total = 2 * (4 * 64 * 64 + 2 * 64 * 128)
    assert [r.metrics["sparsity"] for r in results] == [round(s * total) / total for s in (0.0, 0.2, 0.4)]
    for result in results:
        metrics = json.load(open(os.path.join(result.directory, "metrics.json")))
        assert {"accuracy", "eval_loss"} <= set(metrics["metrics"])
        assert metrics["steps"] == 6 and metrics["level"] == result.level
    for call in spy_fine_tune:
        for param, keep in call["masked"]:
            assert torch.all(param[keep == 0] == 0)
    masks = _masks(out)
    assert masks[0].sparsity == 0.0
    assert all(torch.all(masks[2].tensors[n] <= masks[1].tensors[n]) for n in masks[1].tensors)
    assert masks[2].metadata["level"] == "2" and masks[2].metadata["source_task"] == "sst2"
    assert not any("pooler" in n for n in masks[1].tensors)
    assert len(masks[1].tensors) == 2 * 6


def test_surviving_weights_start_each_level_at_theta_i(tmp_path, tiny_recipe, spy_fine_tune):
    cfg = dataclasses.replace(tiny_recipe, rewind=2)
    out = str(tmp_path / "traj")
    run_trajectory(cfg, out, progress=False)
    theta_i = load_weights(os.path.join(out, REWIND_POINT))
    theta_0 = spy_fine_tune[0]["start"]
    assert any(not torch.equal(theta_i[n], theta_0[n]) for n in theta_i), "rewind point must differ from theta_0"
    masks = _masks(out)
    for level in (1, 2):
        start = spy_fine_tune[level]["start"]
        for name, value in theta_i.items():
            encoder_name = name.removeprefix("bert.")
            if encoder_name in masks[level].tensors:
                keep = masks[level].tensors[encoder_name]
                assert torch.equal(start[name][keep], value[keep])
            else:
                assert torch.equal(start[name], value), name


def test_no_rewind_head_keeps_the_trained_head(tmp_path, tiny_recipe, spy_fine_tune):
    cfg = dataclasses.replace(tiny_recipe, levels=1, rewind_head=False)
    run_trajectory(cfg, str(tmp_path / "traj"), progress=False)
    assert torch.equal(spy_fine_tune[1]["start"]["classifier.weight"], spy_fine_tune[0]["end"]["classifier.weight"])
    reset = dataclasses.replace(tiny_recipe, levels=1)
    spy_fine_tune.clear()
    run_trajectory(reset, str(tmp_path / "reset"), progress=False)
    assert torch.equal(spy_fine_tune[1]["start"]["classifier.weight"], spy_fine_tune[0]["start"]["classifier.weight"])


def test_resume_after_crash_equals_uninterrupted(tmp_path, tiny_recipe, trajectory):
    straight = trajectory  # the same recipe, trained without interruption
    class Crash(Exception):
        pass

    def crash_after_level_0(result):
        if result.level == 0:
            raise Crash

    resumed = str(tmp_path / "resumed")
    with pytest.raises(Crash):
        run_trajectory(tiny_recipe, resumed, on_level=crash_after_level_0, progress=False)
    assert finished_levels(resumed) == [0]
    first_start = json.load(open(os.path.join(level_dir(resumed, 0), "metrics.json")))["started_at"]
    results = run_trajectory(tiny_recipe, resumed, progress=False)
    assert [r.reused for r in results] == [True, False, False]
    assert json.load(open(os.path.join(level_dir(resumed, 0), "metrics.json")))["started_at"] == first_start
    for a, b in zip(_masks(straight), _masks(resumed)):
        assert a.content_hash() == b.content_hash()
    again = run_trajectory(tiny_recipe, resumed, progress=False)
    assert all(r.reused for r in again)


def test_other_settings_in_same_folder_are_refused(tmp_path, tiny_recipe, trajectory):
    out = str(tmp_path / "traj")
    shutil.copytree(trajectory, out)
    with pytest.raises(TicketsError, match="seed differ"):
        run_trajectory(dataclasses.replace(tiny_recipe, seed=1), out, progress=False)


def test_rewind_past_end_of_training_is_refused(tmp_path, tiny_recipe):
    with pytest.raises(TicketsError, match="rewind 500 is past the end"):
        run_trajectory(dataclasses.replace(tiny_recipe, rewind=500, levels=0), str(tmp_path / "t"), progress=False)


@pytest.mark.parametrize("kind", ["random-prune", "random-reinit", "oneshot", "oneshot-finetuned"])
def test_branches_match_level_sparsity(tmp_path, tiny_recipe, trajectory, kind, spy_fine_tune):
    imp_mask_path = os.path.join(level_dir(trajectory, 2), "mask.safetensors")
    imp_mask = Mask.load(imp_mask_path)
    cfg = BranchConfig(kind, tiny_recipe, imp_mask_path, trajectory)
    out = str(tmp_path / kind)
    metrics = run_branch(cfg, out, progress=False)
    mask = Mask.load(os.path.join(out, "mask.safetensors"))
    assert mask.sparsity == pytest.approx(imp_mask.sparsity, abs=1e-12)
    assert metrics["branch"] == kind and metrics["level"] == 2 and "accuracy" in metrics["metrics"]
    same_mask = overlap(mask, imp_mask)["jaccard"] == 1.0
    assert same_mask == (kind == "random-reinit")
    start = spy_fine_tune[-1]["start"]
    weight = "bert.encoder.layer.0.attention.self.query.weight"
    theta_0 = tickets.models.build_model("tiny-random-bert", "classification", 2, 0).state_dict()[weight]
    if kind in ("random-prune", "oneshot"):
        assert torch.equal(start[weight], theta_0)
    else:
        assert not torch.equal(start[weight], theta_0)
    assert run_branch(cfg, out, progress=False)["reused"] is True


def test_transfer_applies_source_mask_with_fresh_head(tmp_path, tiny_recipe, trajectory):
    mask_path = os.path.join(level_dir(trajectory, 2), "mask.safetensors")
    target = dataclasses.replace(tiny_recipe, task="cola")
    metrics = run_branch(BranchConfig("transfer", target, mask_path), str(tmp_path / "t"), progress=False)
    assert metrics["task"] == "cola" and metrics["source_task"] == "sst2" and "mcc" in metrics["metrics"]
    mask = Mask.load(os.path.join(tmp_path / "t", "mask.safetensors"))
    assert overlap(mask, Mask.load(mask_path))["jaccard"] == 1.0


def test_transfer_of_mask_from_another_architecture_names_tensor(tmp_path, tiny_recipe):
    foreign = Mask({"encoder.layer.0.attention.self.query.weight": torch.ones(384, 384, dtype=torch.bool)},
                   {"level": "1"})
    path = str(tmp_path / "foreign.safetensors")
    foreign.save(path)
    with pytest.raises(TicketsError, match=r"encoder\.layer\.0\.attention\.self\.query\.weight' has shape"):
        run_branch(BranchConfig("transfer", tiny_recipe, path), str(tmp_path / "t"), progress=False)


def test_oneshot_finetuned_branch_without_trajectory_is_refused(tmp_path, tiny_recipe, trajectory):
    mask_path = os.path.join(level_dir(trajectory, 1), "mask.safetensors")
    with pytest.raises(TicketsError, match="needs --trajectory"):
        BranchConfig("oneshot-finetuned", tiny_recipe, mask_path).validate()


@pytest.mark.parametrize("scope", ["prunable", "encoder"])
def test_random_reinit_redraws_with_the_models_own_initializer(tmp_path, tiny_recipe, trajectory, scope, spy_fine_tune):
    """Default scope: only the prunable weights are redrawn (by the model class's initializer); embeddings, biases,
    LayerNorms and the head stay as in theta_i. Scope 'encoder' redraws every encoder weight."""
    from tickets.branches import REINIT_SEED_OFFSET
    from tickets.models import build_model, initializer_weights

    mask_path = os.path.join(level_dir(trajectory, 2), "mask.safetensors")
    metrics = run_branch(BranchConfig("random-reinit", tiny_recipe, mask_path, trajectory, scope),
                         str(tmp_path / scope), progress=False)
    assert metrics["reinit_scope"] == scope
    start = spy_fine_tune[-1]["start"]
    theta_0 = build_model("tiny-random-bert", "classification", 2, 0)
    drawn = initializer_weights(theta_0, tiny_recipe.seed + REINIT_SEED_OFFSET)
    theta_0 = dict(theta_0.named_parameters())
    prunable = "bert.encoder.layer.1.intermediate.dense.weight"
    assert torch.equal(start[prunable], drawn["encoder.layer.1.intermediate.dense.weight"])
    assert not torch.equal(start[prunable], theta_0[prunable])
    embeddings = "bert.embeddings.word_embeddings.weight"
    assert not torch.equal(drawn[embeddings.removeprefix("bert.")], theta_0[embeddings])
    prunable_names = set(Mask.load(mask_path).tensors)
    for name, value in drawn.items():
        if name not in prunable_names:
            expected = theta_0["bert." + name] if scope == "prunable" else value
            assert torch.equal(start["bert." + name], expected), name
    assert torch.equal(start["classifier.weight"], theta_0["classifier.weight"])


def test_standard_pruning_is_a_chain_of_its_own_levels(tmp_path, tiny_recipe, trajectory, spy_fine_tune):
    """Level 1 prunes the dense fine-tuned weights; level 2 prunes the chain's own trained level 1, never rewinding."""
    from tickets.standard import run_standard

    out = str(tmp_path / "standard")
    results = run_standard(tiny_recipe, trajectory, out, progress=False)
    assert [r.level for r in results] == [1, 2] and len(spy_fine_tune) == 2
    masks = [Mask.load(os.path.join(r.directory, "mask.safetensors")) for r in results]
    imp = Mask.load(os.path.join(level_dir(trajectory, 2), "mask.safetensors"))
    assert masks[1].sparsity == pytest.approx(imp.sparsity, abs=1e-12)
    assert all(torch.all(masks[1].tensors[n] <= masks[0].tensors[n]) for n in masks[0].tensors)
    dense = load_weights(os.path.join(level_dir(trajectory, 0), "trained.safetensors"))
    level_1 = load_weights(os.path.join(results[0].directory, "trained.safetensors"))
    for call, expected in zip(spy_fine_tune, (dense, level_1)):
        for name, value in expected.items():
            assert torch.equal(call["start"][name], value), name
    for name, value in level_1.items():
        if name.startswith("bert.") and name.removeprefix("bert.") in masks[0].tensors:
            assert torch.count_nonzero(value[~masks[0].tensors[name.removeprefix("bert.")]]) == 0
    again = run_standard(tiny_recipe, trajectory, out, progress=False)
    assert all(r.reused for r in again) and len(spy_fine_tune) == 2
    assert results[1].metrics["run_key"] == again[0].metrics["run_key"]


@pytest.mark.parametrize(("samples", "steps"), [(48, 3), (32, 2)])
def test_a_percentage_rewind_resolves_from_the_training_set_actually_loaded(tmp_path, tiny_recipe, samples, steps):
    train = dataclasses.replace(tiny_recipe.train, max_train_samples=samples)
    cfg = dataclasses.replace(tiny_recipe, levels=0, rewind_percent=50.0, train=train)
    result = run_trajectory(cfg, str(tmp_path / "t"), progress=False)[0]
    assert result.metrics["rewind_steps"] == steps and result.metrics["steps"] == 2 * steps
    with pytest.raises(TicketsError, match="not both"):
        dataclasses.replace(cfg, rewind=2).validate()
