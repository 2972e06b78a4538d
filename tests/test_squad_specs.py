"""The SQuAD sweep specs: the paper's Table 2 SQuAD row and SQuAD in the transfer matrix."""

from pathlib import Path

import pytest

from sweeps.plan import build_plan
from sweeps.spec import load_spec
from tickets.provenance import provisional

SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"


def _plan(name: str):
    spec = load_spec(str(SWEEPS / f"{name}.yaml"))
    with provisional():  # offline: the Hub data and bert-base-uncased cannot be resolved
        return spec, build_plan(spec)


def test_the_squad_spec_is_the_standard_bert_base_recipe_with_the_three_baselines():
    spec, pieces = _plan("chen2020_squad")
    recipe = spec.training.config()
    assert spec.tasks == ["squad"] and spec.model == "bert-base-uncased" and spec.data_dir is None
    assert (recipe.epochs, recipe.batch_size, recipe.learning_rate, recipe.max_seq_length) == (2, 16, 3e-5, 384)
    assert spec.level_sparsity(spec.last_level) == pytest.approx(0.9) and len(spec.seeds) == 3
    assert sorted({p.kind for p in pieces}) == ["oneshot", "random-prune", "random-reinit", "standard", "trajectory"]


def test_the_transfer_spec_has_squad_as_source_and_target_with_its_own_recipe():
    spec, pieces = _plan("chen2020_transfer")
    squad_spec, _ = _plan("chen2020_squad")
    assert all(p.recipe.train == squad_spec.training_for("squad") for p in pieces if p.recipe.task == "squad")
    transfers = [p for p in pieces if p.kind == "transfer"]
    assert "squad" in spec.tasks
    assert {p.recipe.task for p in transfers if p.source_task == "squad"} == set(spec.tasks) - {"squad", "mlm"}
    assert {p.source_task for p in transfers if p.recipe.task == "squad"} == set(spec.tasks) - {"squad"}
    assert any(t.sources == ["squad"] and t.sparsity == pytest.approx(0.4) for t in spec.transfer)
