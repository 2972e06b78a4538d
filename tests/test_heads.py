"""The task head gamma_0: the checkpoint's pre-trained MLM head where it has one, else fresh from the run seed."""

import time

import torch

from tickets import models
from tickets.session import TaskSession
from tickets.training import TrainResult

MLM_HEAD = {
    "cls.predictions.transform.dense.weight": 0.5,
    "cls.predictions.transform.dense.bias": 0.25,
    "cls.predictions.transform.LayerNorm.weight": 0.75,
    "cls.predictions.transform.LayerNorm.bias": -0.125,
    "cls.predictions.bias": 0.375,
}


def _tiny_mlm_checkpoint(folder):
    """A tiny BertForMaskedLM whose head holds values no initializer gives, saved with the embedded tokenizer."""
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = models.load_tokenizer(None)
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), **models.TINY_CONFIG))
    with torch.no_grad():
        for name, value in MLM_HEAD.items():
            model.get_parameter(name).fill_(value)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def test_a_checkpoint_mlm_head_is_loaded_and_kept(tmp_path):
    saved = _tiny_mlm_checkpoint(tmp_path)
    model = models.build_model(str(tmp_path), "mlm", 0, seed=3)
    assert model.ticket_head_init == "pretrained"
    head = models.head_state(model)
    assert set(head) == set(MLM_HEAD)
    for name, value in MLM_HEAD.items():
        assert torch.equal(head[name], torch.full_like(head[name], value)), name
    words = models.base_model(model).embeddings.word_embeddings.weight
    assert torch.equal(words, saved.bert.embeddings.word_embeddings.weight)
    decoder = model.cls.predictions.decoder
    assert decoder.weight is words and decoder.bias is model.cls.predictions.bias  # the ties are kept
    assert torch.equal(models.head_state(models.build_model(str(tmp_path), "mlm", 0, seed=4))["cls.predictions.bias"],
                       head["cls.predictions.bias"])  # no seed enters a pre-trained head


def test_a_checkpoint_without_mlm_head_gets_a_fresh_seeded_one():
    a = models.build_model(None, "mlm", 0, seed=3)
    assert a.ticket_head_init == "fresh"
    transform = "cls.predictions.transform.dense.weight"
    head = models.head_state(a)
    assert torch.equal(head["cls.predictions.bias"], torch.zeros_like(head["cls.predictions.bias"]))
    assert torch.equal(head["cls.predictions.transform.LayerNorm.weight"],
                       torch.ones_like(head["cls.predictions.transform.LayerNorm.weight"]))
    assert not torch.equal(head[transform], models.head_state(models.build_model(None, "mlm", 0, seed=4))[transform])
    assert a.cls.predictions.decoder.weight is models.base_model(a).embeddings.word_embeddings.weight
    assert models.build_model("tiny-random-bert", "mlm", 0, seed=3).ticket_head_init == "fresh"


def test_classification_heads_stay_fresh_and_seed_dependent(tmp_path):
    _tiny_mlm_checkpoint(tmp_path)
    a = models.build_model(str(tmp_path), "classification", 2, seed=3)
    b = models.build_model(str(tmp_path), "classification", 2, seed=4)
    again = models.build_model(str(tmp_path), "classification", 2, seed=3)
    assert a.ticket_head_init == b.ticket_head_init == "fresh"
    weight = "classifier.weight"
    assert torch.equal(models.head_state(a)[weight], models.head_state(again)[weight])
    assert not torch.equal(models.head_state(a)[weight], models.head_state(b)[weight])


def test_run_records_say_how_the_head_was_initialised(tiny_recipe):
    session = TaskSession.open(tiny_recipe)
    record = session.record(session.full_mask(), TrainResult(1, 0.5, 0.1, {"accuracy": 0.5}), 0, time.time())
    assert record["head_init"] == "fresh"
    assert record["dropped_train_rows"] == 0
