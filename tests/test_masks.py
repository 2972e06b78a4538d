"""Mask files: bit-packed round trip, metadata, hashes, shape checks, overlap."""

import os

import pytest
import torch
from safetensors.numpy import load_file

from tickets.errors import TicketsError
from tickets.masks import Mask, overlap


def _mask(seed=0, p=0.5):
    g = torch.Generator().manual_seed(seed)
    return Mask(
        {"encoder.layer.0.attention.self.query.weight": torch.rand(64, 64, generator=g) > p,
         "encoder.layer.0.output.dense.weight": torch.rand(64, 129, generator=g) > p},
        {"model_id": "tiny", "level": "3", "seed": "0", "method": "magnitude", "source_task": "sst2"},
    )


def test_round_trip_is_exact_and_bit_packed(tmp_path):
    mask = _mask()
    path = tmp_path / "m.safetensors"
    mask.save(str(path))
    loaded = Mask.load(str(path))
    for name, tensor in mask.tensors.items():
        assert torch.equal(loaded.tensors[name], tensor)
        assert loaded.tensors[name].dtype == torch.bool
    assert loaded.metadata["level"] == "3" and loaded.metadata["source_task"] == "sst2"
    assert loaded.metadata["format_version"] == "2"
    assert loaded.content_hash() == mask.content_hash()
    stored = load_file(str(path))
    assert stored["encoder.layer.0.output.dense.weight"].nbytes == (64 * 129 + 7) // 8
    assert os.path.getsize(path) < mask.total / 8 + 4096


def test_sparsity_and_layer_sparsity():
    mask = Mask({"a": torch.tensor([True, False, False, False]), "b": torch.tensor([[True, True], [True, False]])})
    assert mask.sparsity == pytest.approx(4 / 8)
    assert mask.layer_sparsity() == {"a": 0.75, "b": 0.25}


def test_corrupted_file_is_rejected(tmp_path):
    path = tmp_path / "m.safetensors"
    _mask().save(str(path))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(TicketsError, match="content hash"):
        Mask.load(str(path))


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a mask at all")
    with pytest.raises(TicketsError, match="cannot read mask file"):
        Mask.load(str(bad))
    with pytest.raises(TicketsError, match="does not exist"):
        Mask.load(str(tmp_path / "missing.safetensors"))


def test_wrong_shape_names_the_tensor():
    mask = _mask()
    expected = {"encoder.layer.0.attention.self.query.weight": (64, 64), "encoder.layer.0.output.dense.weight": (64, 128)}
    with pytest.raises(TicketsError, match=r"encoder\.layer\.0\.output\.dense\.weight.*\(64, 129\).*\(64, 128\)"):
        mask.check_shapes(expected)
    with pytest.raises(TicketsError, match="query.weight' does not exist"):
        mask.check_shapes({"encoder.layer.0.output.dense.weight": (64, 129)})


def test_overlap_hand_computed():
    a = Mask({"w": torch.tensor([True, True, False, False, True])})
    b = Mask({"w": torch.tensor([True, False, False, True, True])})
    result = overlap(a, b)
    assert result["jaccard"] == pytest.approx(2 / 4)
    assert result["hamming"] == pytest.approx(2 / 5)
    assert overlap(a, a) == {"jaccard": 1.0, "hamming": 0.0}
