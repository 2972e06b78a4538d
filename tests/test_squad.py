"""SQuAD v1.1: the official EM/F1 on hand cases, windows and post-processing on real dev questions (a gold-span
oracle), the loader, and IMP and transfer on the tiny random BERT."""

import dataclasses
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from tickets.branches import BranchConfig, run_branch
from tickets.config import TrainConfig, TrajectoryConfig
from tickets.data import load_task_data
from tickets.errors import TicketsError
from tickets.imp import level_dir, run_trajectory
from tickets.masks import Mask
from tickets.metrics import compute_metrics
from tickets.models import build_model, load_tokenizer
from tickets.provenance import data_fingerprint
from tickets.session import TaskSession
from tickets.tasks import get_task
from tickets.tasks.extractive_qa import (MAX_ANSWER_TOKENS, dev_split_part, encode_windows, predict_answers,
                                         read_squad_json)
from tickets.training import TrainResult

DEV = SHARED_DATA / "squad" / "v1.1" / "dev-v1.1.json"
SQUAD = get_task("squad")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(None)


@pytest.fixture(scope="module")
def dev():
    return read_squad_json(DEV)


def write_squad_dir(root: Path) -> Path:
    """A SQuAD folder under `root` whose train file holds dev articles 1-2 and whose dev file holds article 0 (real
    questions); returns its data folder."""
    articles = json.loads(DEV.read_text(encoding="utf-8"))["data"]
    folder = root / "data" / "squad" / "v1.1"
    folder.mkdir(parents=True)
    (folder / "train-v1.1.json").write_text(json.dumps({"version": "1.1", "data": articles[1:3]}), encoding="utf-8")
    (folder / "dev-v1.1.json").write_text(json.dumps({"version": "1.1", "data": articles[:1]}), encoding="utf-8")
    return root / "data"


@pytest.fixture
def squad_dir(tmp_path):
    """The SQuAD folder of `write_squad_dir`, this test's own."""
    return write_squad_dir(tmp_path)


# --- metrics ----------------------------------------------------------------------------------------------------


def test_exact_match_and_f1_on_hand_cases():
    cases = [
        ("The Denver Broncos!", ["Denver Broncos"], 1, 1.0),  # article, punctuation and case removed
        ("  denver   broncos ", ["Denver Broncos"], 1, 1.0),  # extra whitespace
        ("Broncos", ["Denver Broncos", "Broncos"], 1, 1.0),  # the best of several gold answers
        ("Denver", ["Denver Broncos"], 0, 2 * (1 * 0.5) / (1 + 0.5)),  # precision 1, recall 1/2
        ("Carolina Panthers", ["Denver Broncos", "the Broncos"], 0, 0.0),
        # 3 common tokens (in, levis, stadium); precision 3/3, recall 3/11 once 'the' and the apostrophe are removed
        ("in Levi's Stadium", ["Levi's Stadium in the San Francisco Bay Area at Santa Clara, California"], 0, 6 / 14),
    ]
    for prediction, gold, em, f1 in cases:
        assert compute_metrics(SQUAD, "dev", [prediction], [gold]) == {
            "exact_match": pytest.approx(100 * em), "f1": pytest.approx(100 * f1, abs=1e-4)}, prediction
    predictions, golds = [c[0] for c in cases], [c[1] for c in cases]
    averaged = compute_metrics(SQUAD, "dev", predictions, golds)  # over questions
    assert averaged["exact_match"] == pytest.approx(100 * 3 / 6)
    assert averaged["f1"] == pytest.approx(100 * sum(c[3] for c in cases) / 6, abs=1e-4)


def test_metrics_need_one_prediction_per_question():
    with pytest.raises(ValueError, match="one prediction per question"):
        compute_metrics(SQUAD, "dev", ["a"], [["a"], ["b"]])


# --- windows and the gold-span oracle -------------------------------------------------------------------------


def _reachable(tokenizer, context: str, start: int, text: str) -> bool:
    """Whether a span of tokens can give the answer: it starts and ends at token boundaries of the context and is at
    most MAX_ANSWER_TOKENS tokens long."""
    spans = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    first = [i for i, (s, _) in enumerate(spans) if s == start]
    last = [i for i, (_, e) in enumerate(spans) if e == start + len(text)]
    return bool(first and last) and last[0] - first[0] < MAX_ANSWER_TOKENS


def test_gold_span_logits_through_windows_and_post_processing_give_em_and_f1_100(dev, tokenizer):
    long_contexts = [i for i, c in enumerate(dev.contexts) if len(c) > 1800]
    candidates = sorted(set(range(150)) | set(long_contexts))
    sample = dev.select([i for i in candidates if len(dev.questions[i]) < 200  # short enough never to be cut
                         and _reachable(tokenizer, dev.contexts[i], dev.answer_starts[i][0], dev.answers[i][0])])
    windows = encode_windows(sample, tokenizer, 384)
    # the defaults, independently: question first, only the context truncated, windows overlapping by 128 tokens
    encoded = tokenizer([q.lstrip() for q in sample.questions], sample.contexts, truncation="only_second",
                        max_length=384, stride=128, return_overflowing_tokens=True, return_offsets_mapping=True)
    assert [w.tolist() for w in windows.input_ids] == encoded["input_ids"]
    assert windows.example_of == list(encoded["overflow_to_sample_mapping"])
    starts, ends, held = [], [], []
    for w, example in enumerate(windows.example_of):
        first_char = sample.answer_starts[example][0]
        last_char = first_char + len(sample.answers[example][0]) - 1
        start = encoded.char_to_token(w, first_char, sequence_index=1)
        end = encoded.char_to_token(w, last_char, sequence_index=1)
        held.append(start is not None and end is not None)
        assert (windows.starts[w], windows.ends[w]) == ((start, end) if held[-1] else (0, 0))  # CLS where not held
        start_logits, end_logits = np.zeros(len(windows.input_ids[w])), np.zeros(len(windows.input_ids[w]))
        start_logits[start if held[-1] else 0] = end_logits[end if held[-1] else 0] = 10.0
        starts.append(start_logits)
        ends.append(end_logits)
    first_window = {example: windows.example_of.index(example) for example in set(windows.example_of)}
    only_later = {e for w, e in enumerate(windows.example_of) if held[w] and not held[first_window[e]]}
    assert len(sample) >= 150 and len(only_later) >= 5
    assert {e for w, e in enumerate(windows.example_of) if held[w]} == set(range(len(sample)))  # every answer is held
    predictions = predict_answers(windows, starts, ends)
    assert compute_metrics(SQUAD, "dev", predictions, sample.answers) == {"exact_match": 100.0, "f1": 100.0}


def test_long_questions_are_cut_and_short_lengths_shrink_the_stride(dev, tokenizer):
    sample = dev.select(range(40))
    sample.questions[0] = " ".join(["why"] * 300)
    windows = encode_windows(sample, tokenizer, 64)
    assert max(len(ids) for ids in windows.input_ids) == 64
    types = windows.token_type_ids[0]
    assert int((types == 0).sum()) == 2 + 16  # CLS, SEP and the question cut to a quarter of the length
    for w in range(1, len(windows)):
        if windows.example_of[w] == windows.example_of[w - 1]:  # consecutive windows overlap by 64 // 3 tokens
            previous, current = windows.offsets[w - 1], windows.offsets[w]
            previous, current = previous[previous[:, 0] >= 0], current[current[:, 0] >= 0]
            assert (previous[-21:] == current[:21]).all() and not (previous[-22:] == current[:22]).all()


# --- loading ----------------------------------------------------------------------------------------------------


def test_the_real_dev_file_parses_to_the_published_counts(dev):
    articles = json.loads(DEV.read_text(encoding="utf-8"))["data"]
    assert (len(dev), len(set(dev.titles)), len(articles)) == (10570, 48, 48)
    assert sum(len(a["paragraphs"]) for a in articles) == 2067
    assert len(set(dev.ids)) == 10570 and all(dev.answers) and min(map(len, dev.answers)) >= 1
    assert all(c[s:s + len(t)] == t for c, ss, ts in zip(dev.contexts, dev.answer_starts, dev.answers)
               for s, t in zip(ss, ts))


def test_without_a_train_file_squad_refuses_with_a_clear_message(tokenizer):
    with pytest.raises(TicketsError, match=re.escape(f"no SQuAD train file {DEV.parent / 'train-v1.1.json'}")):
        load_task_data(SQUAD, tokenizer, str(SHARED_DATA), 384)


def test_a_squad_file_that_is_not_squad_json_is_an_error(tmp_path, tokenizer, squad_dir):
    (squad_dir / "squad" / "v1.1" / "train-v1.1.json").write_text('{"data": [{"title": "x"}]}')
    with pytest.raises(TicketsError, match=r"train-v1\.1\.json' is not a SQuAD JSON file \(KeyError"):
        load_task_data(SQUAD, tokenizer, str(squad_dir), 384)


def test_caps_count_questions_and_eval_batches_carry_positions(squad_dir, tokenizer):
    data = load_task_data(SQUAD, tokenizer, str(squad_dir), 128, max_train_samples=30, max_eval_samples=20)
    train_questions = {data.train.questions.ids[e] for e in data.train.example_of}
    assert len(data.train.questions) == 30 and len(train_questions) == 30 and len(data.train) >= 30
    dev = data.evals["dev"]
    assert list(data.evals) == ["dev"] and len(dev.questions) == 20
    assert dev.questions.ids == read_squad_json(squad_dir / "squad" / "v1.1" / "dev-v1.1.json").ids[:20]
    assert set(dev[0]) == {"input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions"}


# --- models, IMP and transfer -----------------------------------------------------------------------------------


def test_the_span_head_is_fresh_and_seeded():
    a, b = (build_model("tiny-random-bert", SQUAD.kind, SQUAD.num_labels, seed) for seed in (3, 4))
    assert type(a).__name__ == "BertForQuestionAnswering" and a.ticket_head_init == "fresh"
    assert a.qa_outputs.out_features == 2
    assert not torch.equal(a.qa_outputs.weight, b.qa_outputs.weight)


def squad_config(data_dir: Path) -> TrajectoryConfig:
    """A tiny SQuAD trajectory recipe (levels 0-1) on the folder `data_dir`."""
    train = TrainConfig(epochs=1, batch_size=8, learning_rate=1e-3, max_seq_length=96, max_train_samples=32,
                        max_eval_samples=24)
    return TrajectoryConfig(task="squad", model="tiny-random-bert", data_dir=str(data_dir), rate=0.2, levels=1,
                            train=train)


@pytest.fixture
def squad_recipe(squad_dir):
    return squad_config(squad_dir)


@pytest.fixture(scope="module")
def squad_trajectory(tmp_path_factory):
    """The tiny SQuAD trajectory, trained once for the module: (its recipe, its folder, its level results)."""
    root = tmp_path_factory.mktemp("squad")
    recipe = squad_config(write_squad_dir(root))
    out = str(root / "trajectory")
    return recipe, out, run_trajectory(recipe, out, progress=False)


def test_imp_on_squad_prunes_and_reports_em_and_f1(squad_trajectory):
    squad_recipe, out, results = squad_trajectory
    assert [r.level for r in results] == [0, 1]
    for result in results:
        metrics = result.metrics
        assert set(metrics["metrics"]) == {"exact_match", "f1", "eval_loss"} and metrics["main_metric"] == "f1"
        assert 0 <= metrics["metrics"]["exact_match"] <= metrics["metrics"]["f1"] <= 100
    assert results[1].metrics["sparsity"] == pytest.approx(0.2, abs=1e-3)
    assert run_trajectory(squad_recipe, out, progress=False)[1].reused


def test_transfer_between_glue_and_squad_uses_a_fresh_head(tmp_path, tiny_recipe, squad_recipe, squad_trajectory,
                                                          tiny_trajectory):
    sst2, squad = tiny_trajectory[0], squad_trajectory[1]
    to_squad = run_branch(BranchConfig("transfer", squad_recipe, os.path.join(level_dir(sst2, 1), "mask.safetensors")),
                          str(tmp_path / "to_squad"), progress=False)
    to_sst2 = run_branch(BranchConfig("transfer", tiny_recipe, os.path.join(level_dir(squad, 1), "mask.safetensors")),
                         str(tmp_path / "to_sst2"), progress=False)
    assert set(to_squad["metrics"]) == {"exact_match", "f1", "eval_loss"} and to_squad["head_init"] == "fresh"
    assert set(to_sst2["metrics"]) == {"accuracy", "eval_loss"} and to_sst2["head_init"] == "fresh"
    assert to_squad["sparsity"] == pytest.approx(0.2, abs=1e-3) and to_sst2["sparsity"] == pytest.approx(0.2, abs=1e-3)


def test_a_glue_mask_with_the_pooler_transfers_to_a_span_model_without_one(tmp_path, tiny_recipe, squad_recipe):
    """BERT-base's GLUE masks include the pooler, which a question-answering model does not have."""
    sst2 = str(tmp_path / "sst2")
    run_trajectory(dataclasses.replace(tiny_recipe, levels=1, include_pooler=True), sst2, progress=False)
    mask_path = os.path.join(level_dir(sst2, 1), "mask.safetensors")
    assert "pooler.dense.weight" in Mask.load(mask_path).tensors
    to_squad = run_branch(BranchConfig("transfer", squad_recipe, mask_path), str(tmp_path / "to_squad"), progress=False)
    assert "pooler.dense.weight" not in Mask.load(str(tmp_path / "to_squad" / "mask.safetensors")).tensors
    assert set(to_squad["metrics"]) == {"exact_match", "f1", "eval_loss"}


# --- the documented split of dev by article ---------------------------------------------------------------------


def test_the_dev_split_is_by_article_into_disjoint_parts(dev):
    trained, evaluated = dev_split_part(dev, evaluated=False), dev_split_part(dev, evaluated=True)
    assert (len(trained), len(evaluated)) == (7649, 2921) and sorted(trained + evaluated) == list(range(10570))
    titles = list(dict.fromkeys(dev.titles))
    assert {dev.titles[i] for i in evaluated} == set(titles[::4]) and len(set(titles[::4])) == 12
    assert not {dev.titles[i] for i in trained} & {dev.titles[i] for i in evaluated}


def test_squad_dev_split_loads_from_the_dev_file_alone_and_is_flagged(tokenizer):
    task = get_task("squad-dev-split")
    assert task.dev_split and not SQUAD.dev_split and get_task("SQuAD_dev_split") is task
    data = load_task_data(task, tokenizer, str(SHARED_DATA), 128, max_train_samples=40, max_eval_samples=30)
    dev = read_squad_json(DEV)
    evaluated_titles = set(list(dict.fromkeys(dev.titles))[::4])
    assert len(data.train.questions) == 40 and not set(data.train.questions.titles) & evaluated_titles
    assert data.evals["dev"].questions.ids == [dev.ids[i] for i in dev_split_part(dev, evaluated=True)][:30]
    assert data_fingerprint(task, str(SHARED_DATA)) != data_fingerprint(get_task("sst2"), str(SHARED_DATA))
    with pytest.raises(TicketsError, match="use the task 'squad-dev-split'"):
        data_fingerprint(SQUAD, str(SHARED_DATA))


def test_records_say_whether_results_compare_to_published_numbers(tiny_recipe):
    split = TrajectoryConfig(task="squad-dev-split", model="tiny-random-bert", data_dir=str(SHARED_DATA),
                             train=TrainConfig(max_seq_length=64, max_train_samples=8, max_eval_samples=8))
    assert split.identity()["settings"]["task"] == "squad-dev-split"  # so its results never pass for squad's
    for cfg, flagged in ((split, True), (tiny_recipe, False)):
        session = TaskSession.open(cfg)
        record = session.record(session.full_mask(), TrainResult(1, 0.5, 0.1, {}), 0, time.time())
        assert record["not_comparable_to_published"] is flagged


def test_a_kind_that_cannot_split_dev_refuses_a_dev_split_task(tokenizer):
    task = dataclasses.replace(get_task("sst2"), name="sst2-dev-split", dev_split=True)
    with pytest.raises(TicketsError, match="trains on a split of dev, which kind 'classification' cannot make"):
        load_task_data(task, tokenizer, str(SHARED_DATA), 32)
