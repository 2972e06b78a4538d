"""Data fingerprints and model identities: real files in tmp folders, the real SST-2 and the embedded model."""

import json
import re
import shutil
from pathlib import Path

import pytest

from tickets.errors import TicketsError
from tickets.provenance import data_fingerprint, model_identity
from tickets.tasks import get_task

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
SST2 = get_task("sst2")
HEX16 = re.compile(r"[0-9a-f]{16}")


@pytest.fixture
def sst2_dir(tmp_path):
    """A GLUE-layout data folder (DIR/glue/SST-2) with a few SST-2 rows."""
    folder = tmp_path / "data" / "glue" / "SST-2"
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_text("sentence\tlabel\na fine film \t1\na dull film \t0\nwarm and funny \t1\n")
    (folder / "dev.tsv").write_text("sentence\tlabel\nit 's a charming journey . \t1\nunfunny and flat . \t0\n")
    return tmp_path / "data"


@pytest.fixture
def model_dir(tmp_path):
    """A local model folder: a config, stand-in weights bytes and a vocabulary."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 64}))
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 8)
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nfilm\n")
    return folder


# --- data -------------------------------------------------------------------------------------------------------


def test_fingerprint_is_short_hex_and_survives_moving_and_copying(sst2_dir, tmp_path):
    first = data_fingerprint(SST2, str(sst2_dir))
    assert HEX16.fullmatch(first)
    assert data_fingerprint(SST2, str(sst2_dir / "glue")) == first  # the other layout finds the same folder
    copy = shutil.copytree(sst2_dir, tmp_path / "elsewhere" / "copy")
    assert data_fingerprint(SST2, str(copy)) == first
    moved = sst2_dir.rename(tmp_path / "moved")
    assert data_fingerprint(SST2, str(moved)) == first


def test_changing_one_train_row_changes_the_fingerprint(sst2_dir):
    before = data_fingerprint(SST2, str(sst2_dir))
    train = sst2_dir / "glue" / "SST-2" / "train.tsv"
    train.write_text(train.read_text().replace("a dull film \t0", "a dull film \t1"))  # same size, one byte
    assert data_fingerprint(SST2, str(sst2_dir)) != before


def test_changing_or_swapping_the_dev_file_changes_the_fingerprint(sst2_dir):
    folder = sst2_dir / "glue" / "SST-2"
    before = data_fingerprint(SST2, str(sst2_dir))
    with open(folder / "dev.tsv", "a") as handle:
        handle.write("a new row . \t1\n")
    changed = data_fingerprint(SST2, str(sst2_dir))
    assert changed != before
    train, dev = (folder / "train.tsv").read_text(), (folder / "dev.tsv").read_text()
    (folder / "train.tsv").write_text(dev)
    (folder / "dev.tsv").write_text(train)
    assert data_fingerprint(SST2, str(sst2_dir)) not in (before, changed)


def test_missing_data_raises_the_loaders_errors(sst2_dir, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(TicketsError, match=f"data directory '{missing}' does not exist"):
        data_fingerprint(SST2, str(missing))
    with pytest.raises(TicketsError, match="no data for task 'cola': none of"):
        data_fingerprint(get_task("cola"), str(sst2_dir))
    (sst2_dir / "glue" / "SST-2" / "dev.tsv").unlink()
    with pytest.raises(TicketsError, match=re.escape(f"data file not found: {sst2_dir / 'glue' / 'SST-2' / 'dev.tsv'}")):
        data_fingerprint(SST2, str(sst2_dir))


def test_mnli_fingerprints_both_dev_files(tmp_path):
    folder = tmp_path / "MNLI"
    folder.mkdir()
    for name in ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"):
        (folder / name).write_text(f"rows of {name}\n")
    before = data_fingerprint(get_task("mnli"), str(tmp_path))
    (folder / "dev_mismatched.tsv").write_text("other rows\n")
    assert data_fingerprint(get_task("mnli"), str(tmp_path)) != before


def test_mlm_trains_on_test_txt_when_train_txt_is_absent(tmp_path):
    task = get_task("wikitext2")
    folder = tmp_path / "text" / "WikiText-2"
    folder.mkdir(parents=True)
    with pytest.raises(TicketsError, match=re.escape(f"data file not found: {folder / 'valid.txt'}")):
        data_fingerprint(task, str(tmp_path))
    (folder / "valid.txt").write_text(" = Valid = \n")
    with pytest.raises(TicketsError, match=re.escape(f"data file not found: {folder / 'test.txt'}")):
        data_fingerprint(task, str(tmp_path))
    (folder / "test.txt").write_text(" = Test = \n")
    on_test = data_fingerprint(task, str(tmp_path))
    (folder / "test.txt").rename(folder / "train.txt")  # same bytes, now read as the train file
    assert data_fingerprint(task, str(tmp_path)) != on_test


def test_real_sst2_fingerprint_is_the_same_from_both_layouts():
    assert data_fingerprint(SST2, str(DATA)) == data_fingerprint(SST2, str(DATA / "glue"))


def test_hub_data_without_a_cache_cannot_be_resolved_offline():
    # offline (conftest): the dataset's revision can only be resolved from a cache
    try:
        fingerprint = data_fingerprint(SST2, None)
    except TicketsError as exc:
        assert "cannot resolve the revision of dataset 'nyu-mll/glue'" in str(exc) and "--data-dir" in str(exc)
    else:  # a cached copy of GLUE was found after all
        assert HEX16.fullmatch(fingerprint) and data_fingerprint(SST2, None) == fingerprint


def test_provisional_plans_name_unresolvable_hub_sources():
    from tickets.provenance import provisional

    with provisional() as unresolved:
        model = model_identity("tickets-test/not-cached-either")
    assert model == "hub:tickets-test/not-cached-either@unresolved" and unresolved == ["tickets-test/not-cached-either"]
    with pytest.raises(TicketsError):
        model_identity("tickets-test/not-cached-either")


# --- models -----------------------------------------------------------------------------------------------------


def test_embedded_model_identity_is_stable_and_differs_from_the_tiny_model():
    embedded = model_identity(None)
    assert re.fullmatch(r"sha256:[0-9a-f]{16}", embedded)
    assert model_identity("all-MiniLM-L6-v2") == embedded == model_identity(None)
    tiny = model_identity("tiny-random-bert")
    assert re.fullmatch(r"sha256:[0-9a-f]{16}", tiny) and tiny != embedded
    assert model_identity("tiny-random-bert") == tiny


def test_local_model_copy_keeps_its_identity_and_a_changed_config_does_not(model_dir, tmp_path):
    original = model_identity(str(model_dir))
    copy = shutil.copytree(model_dir, tmp_path / "somewhere" / "model-copy")
    assert model_identity(str(copy)) == original
    (copy / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 128}))
    assert model_identity(str(copy)) != original


def test_local_model_identity_follows_the_weights_transformers_would_load(model_dir):
    original = model_identity(str(model_dir))
    (model_dir / "model.safetensors").write_bytes(bytes(range(256)) * 7 + bytes(256))
    changed = model_identity(str(model_dir))
    assert changed != original
    (model_dir / "pytorch_model.bin").write_bytes(b"ignored while model.safetensors exists")
    assert model_identity(str(model_dir)) == changed
    (model_dir / "model.safetensors").unlink()
    assert model_identity(str(model_dir)) not in (original, changed)  # now the .bin file
    (model_dir / "pytorch_model.bin").unlink()
    with pytest.raises(TicketsError, match="has no weights file"):
        model_identity(str(model_dir))


def test_sharded_weights_are_named_by_every_shard(model_dir):
    (model_dir / "model.safetensors").unlink()
    shards = {"a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": shards}))
    for i, shard in enumerate(sorted(set(shards.values()))):
        (model_dir / shard).write_bytes(bytes([i]) * 64)
    before = model_identity(str(model_dir))
    (model_dir / "model-00002-of-00002.safetensors").write_bytes(bytes([9]) * 64)
    assert model_identity(str(model_dir)) != before


def test_uncached_hub_model_cannot_be_resolved_offline():
    with pytest.raises(TicketsError, match="cannot resolve the revision of model 'tickets-test/not-cached' on the Hugging Face Hub: .*; pass a local folder"):
        model_identity("tickets-test/not-cached")


def test_cached_hub_model_is_named_by_its_commit(tmp_path_factory):
    from huggingface_hub import constants

    cache = Path(constants.HF_HUB_CACHE)
    if not cache.resolve().is_relative_to(tmp_path_factory.getbasetemp().resolve()):
        pytest.skip("the Hub cache is not the test's isolated one; not writing into a real cache")
    commit = "0123456789abcdef0123456789abcdef01234567"
    refs = cache / "models--tickets-test--cached" / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / "main").write_text(commit)
    assert model_identity("tickets-test/cached") == f"hub:tickets-test/cached@{commit}"
