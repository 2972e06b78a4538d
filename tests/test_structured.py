"""Structured tickets: gradient importance, the iterative search, good/random/bad subnetworks, compaction, errors."""

import copy
import json

import pytest
import torch

from tickets.errors import TicketsError
from tickets.masks import Mask
from tickets.models import build_model
from tickets.structured import STRUCTURED_STRATEGIES
from tickets.structured import search as search_module
from tickets.structured.compact import compact, export_compacted, load_compacted
from tickets.structured.gates import Gates
from tickets.structured.importance import Importance, gate_gradients, gradient_importance
from tickets.structured.search import check_threshold, prune_step, search
from tickets.structured.structure import Layout, Structure
from tickets.structured.subnetworks import SUBNETWORKS, subnetwork

# Layer 1 keeps no head at all: compaction must cope with an empty attention layer.
PARTIAL = Structure(torch.tensor([[True, False, True, True], [False, False, False, False]]), torch.tensor([False, True]))


def tiny(dtype=torch.float32, attention="sdpa", kind="classification"):
    model = build_model("tiny-random-bert", kind, 0 if kind == "mlm" else 2, seed=0).to(dtype).eval()
    model.config._attn_implementation = attention
    return model


def batch(seed=0, size=4, length=12):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (size, length), generator=generator)
    attention = torch.ones_like(ids)
    attention[1, length // 2 :] = 0
    return {"input_ids": ids, "attention_mask": attention, "token_type_ids": torch.zeros_like(ids),
            "labels": torch.randint(2, (size,), generator=generator)}


def loss_at(model, structure, data, index, value):
    """The loss with every gate at `structure`'s value except gate `index` (heads first, then MLPs) at `value`."""
    with torch.no_grad(), Gates(model, structure) as gates:
        flat = torch.cat([gates.heads.flatten(), gates.mlps])
        flat[index] = value
        gates.heads, gates.mlps = flat[: gates.heads.numel()].view_as(gates.heads), flat[gates.heads.numel() :]
        return float(model(**data).loss)


@pytest.mark.parametrize("structure", [None, PARTIAL], ids=["full", "partial"])
def test_importance_matches_central_differences(structure):
    model = tiny(torch.float64)
    structure = structure or Structure.full(Layout.of(model))
    batches = [batch(0), batch(1)]
    got = gate_gradients(model, batches, structure)
    gates = torch.cat([structure.heads.flatten(), structure.mlps]).double()
    eps = 1e-6
    expected = torch.zeros(len(gates), dtype=torch.float64)
    for data in batches:
        for index, value in enumerate(gates.tolist()):
            plus = loss_at(model, structure, data, index, value + eps)
            minus = loss_at(model, structure, data, index, value - eps)
            expected[index] += abs((plus - minus) / (2 * eps))
    flat = torch.cat([got.heads.flatten(), got.mlps])
    assert flat.abs().max() > 1e-4
    torch.testing.assert_close(flat, expected, rtol=1e-5, atol=1e-9)


def test_head_scores_are_normalised_per_layer_and_pruned_score_zero():
    model = tiny()
    structure = Structure(torch.tensor([[True, False, True, True], [True, True, True, True]]), torch.tensor([True, False]))
    scores = gradient_importance(model, [batch(0)], structure)
    torch.testing.assert_close(scores.heads.norm(dim=1), torch.ones(2, dtype=torch.float64))
    assert scores.heads[0, 1] == 0 and scores.mlps[1] == 0
    assert STRUCTURED_STRATEGIES["gradient-importance"].importance is gradient_importance


def masked_by_weights(model, structure):
    masked = copy.deepcopy(model)
    params = dict(masked.bert.named_parameters())
    with torch.no_grad():
        for name, keep in structure.weight_keep(Layout.of(model)).items():
            params[name].mul_(keep)
    return masked


@pytest.mark.parametrize("attention, kind", [("sdpa", "classification"), ("eager", "classification"), ("sdpa", "mlm")])
def test_gated_masked_and_compacted_models_agree(attention, kind):
    model = tiny(attention=attention, kind=kind)
    data = {k: v for k, v in batch(3).items() if k != "labels"}
    with torch.no_grad():
        with Gates(model, PARTIAL):
            gated = model(**data).logits
        masked = masked_by_weights(model, PARTIAL)(**data).logits
        smaller = compact(model, PARTIAL).eval()
        compacted = smaller(**data).logits
    torch.testing.assert_close(masked, gated, rtol=0, atol=1e-5)
    torch.testing.assert_close(compacted, gated, rtol=0, atol=1e-5)
    assert sum(p.numel() for p in smaller.parameters()) < sum(p.numel() for p in model.parameters())
    assert smaller.bert.encoder.layer[0].attention.self.query.weight.shape == (48, 64)
    assert smaller.bert.encoder.layer[0].intermediate.dense.weight.shape == (0, 64)


def test_compacted_model_round_trips_through_save_pretrained(tmp_path):
    from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

    model = tiny()
    smaller = compact(model, PARTIAL).eval()
    data = {k: v for k, v in batch(4).items() if k != "labels"}
    export_compacted(smaller, str(tmp_path))
    with torch.no_grad():
        expected = smaller(**data).logits
        loaded = load_compacted(str(tmp_path)).eval()(**data).logits
        remote = AutoModelForSequenceClassification.from_pretrained(str(tmp_path), trust_remote_code=True).eval()
        from_hub_code = remote(**data).logits
    torch.testing.assert_close(loaded, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(from_hub_code, expected, rtol=0, atol=1e-5)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["ticket_num_heads"] == [3, 0] and config["ticket_intermediate_sizes"] == [0, 128]
    with pytest.raises(Exception):
        BertForSequenceClassification.from_pretrained(str(tmp_path))


def test_mask_file_round_trip_and_expansion_counts(tmp_path):
    layout = Layout.of(tiny())
    path = str(tmp_path / "s.safetensors")
    PARTIAL.to_mask({"model_id": "tiny-random-bert"}).save(path)
    mask = Mask.load(path)
    assert mask.metadata["kind"] == "structured" and mask.metadata["heads_kept"] == "3"
    back = Structure.from_mask(mask, layout)
    assert back.same_as(PARTIAL)
    keep = PARTIAL.weight_keep(layout)
    assert int(keep["encoder.layer.0.attention.self.key.weight"].sum()) == 3 * 16 * 64
    assert int(keep["encoder.layer.0.attention.output.dense.weight"].sum()) == 64 * 3 * 16
    assert not keep["encoder.layer.0.output.dense.bias"].any() and keep["encoder.layer.1.output.dense.bias"].all()
    assert 0 < PARTIAL.weight_sparsity(layout) < 1


def test_structured_mask_on_another_architecture_names_the_tensor():
    layout = Layout.of(tiny())
    minilm_like = Structure(torch.ones(6, 12, dtype=torch.bool), torch.ones(6, dtype=torch.bool)).to_mask()
    with pytest.raises(TicketsError, match=r"'encoder\.layer\.0\.attention\.heads' has shape \(12,\)"):
        Structure.from_mask(minilm_like, layout)
    fewer_layers = Structure(torch.ones(1, 4, dtype=torch.bool), torch.ones(1, dtype=torch.bool)).to_mask()
    with pytest.raises(TicketsError, match=r"no tensor 'encoder\.layer\.1\.attention\.heads'"):
        Structure.from_mask(fewer_layers, layout)
    unstructured = Mask({"encoder.layer.0.attention.self.query.weight": torch.ones(64, 64, dtype=torch.bool)}, {})
    with pytest.raises(TicketsError, match="not a structured mask"):
        Structure.from_mask(unstructured, layout)


@pytest.mark.parametrize("threshold", [0.0, -0.5, 1.01, 2.0])
def test_threshold_outside_unit_interval_is_rejected(threshold):
    with pytest.raises(TicketsError, match=r"threshold must be in \(0, 1\]"):
        check_threshold(threshold)
    assert check_threshold(1.0) == 1.0


def importance_of(layout, generator_seed=0):
    generator = torch.Generator().manual_seed(generator_seed)
    return Importance(torch.rand(layout, generator=generator, dtype=torch.float64),
                      torch.rand(layout[0], generator=generator, dtype=torch.float64))


@pytest.mark.parametrize("kept_heads, kept_mlps", [(100, 10), (20, 3), (144, 12), (0, 0), (72, 6)])
def test_good_random_bad_have_equal_sizes(kept_heads, kept_mlps):
    importance = importance_of((12, 12))
    order = torch.argsort(importance.heads.flatten(), descending=True)
    heads = torch.zeros(144, dtype=torch.bool)
    heads[order[:kept_heads]] = True
    mlps = torch.zeros(12, dtype=torch.bool)
    mlps[torch.argsort(importance.mlps, descending=True)[:kept_mlps]] = True
    good = Structure(heads.view(12, 12), mlps)
    made = {kind: subnetwork(kind, good, importance, seed=3) for kind in SUBNETWORKS}
    for structure in made.values():
        assert (structure.heads_kept, structure.mlps_kept) == (kept_heads, kept_mlps)
    bad = made["bad"]
    if kept_heads <= 144 - kept_heads:  # enough pruned heads: bad keeps only pruned ones, the least important first
        assert not (bad.heads & good.heads).any()
        left_out = ~good.heads & ~bad.heads
        if bad.heads.any() and left_out.any():
            assert importance.heads[bad.heads].max() <= importance.heads[left_out].min()
    else:  # topped up: every pruned head is kept, the rest are random good ones
        assert (bad.heads | good.heads).all() and bad.heads[~good.heads].all()
    assert subnetwork("random", good, importance, seed=3).same_as(made["random"])


def test_random_subnetwork_depends_on_seed():
    importance = importance_of((12, 12))
    good = Structure(torch.rand(12, 12, generator=torch.Generator().manual_seed(1)) > 0.5, torch.ones(12, dtype=torch.bool))
    assert not subnetwork("random", good, importance, 0).same_as(subnetwork("random", good, importance, 1))
    with pytest.raises(TicketsError, match="unknown subnetwork"):
        subnetwork("medium", good, importance, 0)


def test_prune_step_removes_a_fraction_of_remaining_heads_and_the_weakest_mlp():
    importance = importance_of((6, 12))
    full = Structure.full(Layout(6, 12, 32, 384, 1536))
    step = prune_step(full, importance, 0.1)
    assert step.heads_kept == 72 - 7 and step.mlps_kept == 5
    assert not step.mlps[int(importance.mlps.argmin())]
    removed = importance.heads[~step.heads]
    assert removed.max() < importance.heads[step.heads].min()
    again = prune_step(step, importance, 0.1)
    assert again.heads_kept == 65 - 6 and again.mlps_kept == 4 and not (again.heads & ~step.heads).any()


def test_search_returns_last_structure_at_or_above_threshold(monkeypatch):
    model = tiny()
    monkeypatch.setattr(search_module, "evaluate", lambda model, data, bs: {"accuracy": 0.8})
    calls = []

    def fraction_kept(model, data, structure, bs):
        calls.append(structure.heads_kept)
        return {"accuracy": 0.8 * structure.heads_kept / structure.heads.numel()}

    monkeypatch.setattr(search_module, "evaluate_structure", fraction_kept)
    fixed = importance_of((2, 4))
    result = search(model, None, [batch(0)], lambda m, b, s: fixed, "accuracy", threshold=0.7, head_fraction=0.1)
    # 8 heads, one pruned per step: 7/8 = 0.875 >= 0.7, 6/8 = 0.75 >= 0.7, 5/8 = 0.625 < 0.7 -> stop, keep 6 heads
    assert calls == [7, 6, 5]
    assert result.structure.heads_kept == 6 and result.structure.mlps_kept == 0
    assert [s["above_threshold"] for s in result.history] == [True, True, True, False]
    assert result.full_metric == 0.8


def test_search_retrain_and_export_on_tiny_model(tmp_path, tiny_recipe):
    from tickets.evaluation import evaluate
    from tickets.session import TaskSession
    from tickets.structured.runs import SearchConfig, run_retrain, run_search

    cfg = SearchConfig(tiny_recipe, threshold=0.5, head_fraction=0.25, importance_samples=16)
    found = run_search(cfg, str(tmp_path / "search"), progress=False)
    assert found["history"][0]["heads_kept"] == 8 and not found["reused"]
    assert run_search(cfg, str(tmp_path / "search"), progress=False)["reused"]
    sizes = set()
    for kind in SUBNETWORKS:
        out = tmp_path / kind
        metrics = run_retrain(kind, tiny_recipe, str(tmp_path / "search"), str(out), export=kind == "bad", progress=False)
        sizes.add((metrics["structure"]["heads_kept"], metrics["structure"]["mlps_kept"]))
        assert Mask.load(str(out / "mask.safetensors")).metadata["subnetwork"] == kind
    assert sizes == {(found["structure"]["heads_kept"], found["structure"]["mlps_kept"])}
    session = TaskSession.open(tiny_recipe)
    exported = evaluate(load_compacted(str(tmp_path / "bad" / "compact")), session.data, 64)
    bad = json.loads((tmp_path / "bad" / "metrics.json").read_text())
    assert exported["accuracy"] == bad["metrics"]["accuracy"]
    assert exported["eval_loss"] == pytest.approx(bad["metrics"]["eval_loss"], abs=1e-5)


def test_mask_info_counts_the_structures_of_a_structured_mask(tmp_path, capsys):
    from tickets.cli import main

    path = tmp_path / "minilm.safetensors"
    Structure(torch.ones(6, 12, dtype=torch.bool), torch.ones(6, dtype=torch.bool)).to_mask(
        {"source_task": "sst2"}).save(str(path))
    assert main(["mask", "info", str(path)]) == 0
    assert "of 78 structures (attention heads, MLP blocks)" in capsys.readouterr().out
