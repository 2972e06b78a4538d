"""Loaders on the real shared files of QNLI, WNLI and WikiText-2 (row counts and label sets), and the kind registry."""

import re
import warnings

import pytest
import torch

from conftest import GLUE_DIR, SHARED_DATA
from tickets.data import load_task_data
from tickets.errors import TicketsError
from tickets.models import load_tokenizer
from tickets.provenance import data_fingerprint, provisional
from tickets.tasks import LOWER_IS_BETTER, TASKS, get_kind, get_task
from tickets.tasks.glue import read_glue_tsv

WIKITEXT = SHARED_DATA / "text" / "WikiText-2"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(None)


def _counts(labels: list) -> dict:
    return {label: labels.count(label) for label in sorted(set(labels))}


def test_qnli_dev_has_the_glue_rows_and_labels_and_no_train_file(tokenizer):
    task = get_task("qnli")
    dev = read_glue_tsv(GLUE_DIR / "QNLI" / "dev.tsv", task)
    assert len(dev) == 5463 and _counts(dev.labels) == {0: 2702, 1: 2761}  # entailment, not_entailment
    assert len(dev.texts) == 2 and dev.texts[0][0].endswith("?")  # question, then sentence
    with pytest.raises(TicketsError, match=re.escape(f"data file not found: {GLUE_DIR / 'QNLI' / 'train.tsv'}")):
        load_task_data(task, tokenizer, str(SHARED_DATA), 64)


def test_wnli_train_and_dev_rows_and_labels(tokenizer):
    task = get_task("wnli")
    train = read_glue_tsv(GLUE_DIR / "WNLI" / "train.tsv", task, train=True)
    dev = read_glue_tsv(GLUE_DIR / "WNLI" / "dev.tsv", task)
    assert (len(train), train.dropped, _counts(train.labels)) == (635, 0, {0: 323, 1: 312})
    assert (len(dev), _counts(dev.labels)) == (71, {0: 40, 1: 31})
    data = load_task_data(task, tokenizer, str(SHARED_DATA), 64)
    assert (len(data.train), len(data.evals["dev"])) == (635, 71)
    assert sorted({int(data.evals["dev"][i]["labels"]) for i in range(71)}) == [0, 1]


def test_wikitext_files_have_the_published_token_counts():
    for name, lines, tokens in (("valid.txt", 3760, 217646), ("test.txt", 4358, 245569)):
        text = (WIKITEXT / name).read_text(encoding="utf-8").splitlines()
        assert (len(text), sum(len(line.split()) + 1 for line in text)) == (lines, tokens)  # words + end of line


def test_the_mlm_eval_blocks_cover_valid_txt_and_mask_only_ordinary_tokens(tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_task_data(get_task("mlm"), tokenizer, str(SHARED_DATA), 130, max_train_samples=4)
    lines = (WIKITEXT / "valid.txt").read_text(encoding="utf-8").splitlines()
    tokens = sum(map(len, tokenizer(lines, add_special_tokens=False, verbose=False)["input_ids"]))
    dev = data.evals["dev"]
    assert len(dev) == tokens // 128 and len(data.train) == 4
    labels = dev.labels
    masked = labels != -100
    assert set(torch.unique(labels[~masked]).tolist()) == {-100}
    assert not torch.isin(labels[masked], torch.tensor(tokenizer.all_special_ids)).any()
    assert 0.14 < masked.float().mean() < 0.16


def test_every_registered_task_has_a_kind_with_its_head():
    heads = {"classification": "AutoModelForSequenceClassification", "regression": "AutoModelForSequenceClassification",
             "mlm": "AutoModelForMaskedLM", "extractive_qa": "AutoModelForQuestionAnswering"}
    assert {task.kind for task in TASKS.values()} == set(heads)
    for task in TASKS.values():
        assert get_kind(task.kind).head_class().__name__ == heads[task.kind], task.name
        assert task.main_metric in task.metric_names and task.train_split.name == "train" and task.eval_splits
    assert LOWER_IS_BETTER == {"eval_loss", "perplexity"}


def test_every_task_has_a_hub_fingerprint():
    with provisional():  # offline: the revision is named 'unresolved'
        prints = {name: data_fingerprint(task, None) for name, task in TASKS.items()}
    assert all(re.fullmatch(r"[0-9a-f]{16}", p) for p in prints.values()) and len(set(prints.values())) == len(prints)


@pytest.mark.parametrize("kind", ["ranking", "glue", "task", "kind", "../tasks", "MLM"])
def test_an_unknown_kind_is_a_clear_error(kind):
    with pytest.raises(TicketsError, match=re.escape(f"unknown task kind '{kind}'")):
        get_kind(kind)


def test_analysis_takes_metric_names_and_directions_from_the_registry():
    from analysis.tasks import TASK_METRICS, higher_is_better, task_metrics

    assert TASK_METRICS == {name: task.metric_names for name, task in TASKS.items()}
    assert task_metrics("squad") == ("f1", "exact_match") and task_metrics("squad", "exact_match")[0] == "exact_match"
    assert task_metrics("mnli") == ("matched_accuracy", "mismatched_accuracy") and task_metrics("unknown") == ()
    assert not higher_is_better("perplexity") and not higher_is_better("eval_loss") and higher_is_better("f1")
