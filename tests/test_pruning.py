"""Pruning schedules and strategies."""

import pytest
import torch

from tickets.errors import TicketsError
from tickets.pruning import levels_for_sparsity, prune, target_sparsity


def test_original_schedule():
    assert [target_sparsity(level, 0.1, "original") for level in range(10)] == pytest.approx(
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])


def test_remaining_schedule():
    values = [target_sparsity(level, 0.1, "remaining") for level in range(5)]
    assert values == pytest.approx([0.0, 0.1, 0.19, 0.271, 0.3439])


def test_levels_for_sparsity():
    assert levels_for_sparsity(0.4, 0.2, "original") == 2
    assert levels_for_sparsity(0.9, 0.1, "original") == 9
    assert levels_for_sparsity(0.27, 0.1, "remaining") == 3


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, 1.5])
def test_rate_out_of_range(rate):
    with pytest.raises(TicketsError, match="pruning rate"):
        target_sparsity(1, rate, "original")


def test_schedule_past_full_sparsity_and_unknown_schedule():
    with pytest.raises(TicketsError, match="100% sparsity"):
        target_sparsity(10, 0.1, "original")
    with pytest.raises(TicketsError, match="unknown schedule"):
        target_sparsity(1, 0.1, "cubic")


def test_global_magnitude_prunes_smallest_exactly():
    weights = {"a": torch.tensor([0.1, -5.0, 0.3]), "b": torch.tensor([[-0.2, 4.0], [0.05, 1.0]])}
    keep = prune("magnitude", weights, 3 / 7)
    assert keep["a"].tolist() == [False, True, True]
    assert keep["b"].tolist() == [[False, True], [False, True]]


def test_pruning_never_revives_pruned_weights():
    weights = {"a": torch.tensor([9.0, 8.0, 0.1, 0.2])}
    current = {"a": torch.tensor([False, True, True, True])}
    keep = prune("magnitude", weights, 0.5, current=current)
    assert keep["a"].tolist() == [False, True, False, True]


def test_layerwise_prunes_each_tensor_to_the_target():
    g = torch.Generator().manual_seed(0)
    weights = {"a": torch.randn(100, generator=g) * 10, "b": torch.randn(50, generator=g) * 0.01}
    keep = prune("layerwise-magnitude", weights, 0.3)
    assert int((~keep["a"]).sum()) == 30 and int((~keep["b"]).sum()) == 15
    global_keep = prune("magnitude", weights, 0.3)
    assert int((~global_keep["b"]).sum()) > 40  # global ranking prunes the small-magnitude tensor first


def test_random_pruning_exact_count_and_seeded():
    weights = {"a": torch.ones(1000), "b": torch.ones(10, 10)}
    keep = prune("random", weights, 0.37, seed=3)
    assert sum(int((~k).sum()) for k in keep.values()) == round(0.37 * 1100)
    again = prune("random", weights, 0.37, seed=3)
    assert all(torch.equal(keep[n], again[n]) for n in keep)
    other = prune("random", weights, 0.37, seed=4)
    assert not all(torch.equal(keep[n], other[n]) for n in keep)


def test_unknown_method_and_bad_sparsity():
    with pytest.raises(TicketsError, match="unknown pruning method 'snip'"):
        prune("snip", {"a": torch.ones(3)}, 0.5)
    with pytest.raises(TicketsError, match="sparsity"):
        prune("magnitude", {"a": torch.ones(3)}, 1.0)
