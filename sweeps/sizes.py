"""How big a sweep's inputs are, before anything runs: the rows a task's training and evaluation read, and the
parameters of the model with its task head.

Rows are what one training run iterates over (`len(data.train)`: GLUE examples, SQuAD windows, MLM token blocks),
after `max_train_samples`/`max_eval_samples`. From local files they are counted by the engine's own loader (which
tokenises: SQuAD windows and MLM blocks depend on the tokenizer). A Hub dataset is not downloaded: its rows come from
its metadata where the Hub is reachable, else from the documented sizes below (`DOCUMENTED_ROWS`), and say so.

Parameters are counted on a model built from its config on PyTorch's meta device (no weights, no memory): the config
of a local model, a Hub model's config.json where the Hub (or its cache) has it, else the documented config of a
few well-known models (`DOCUMENTED_CONFIGS`).
"""

from __future__ import annotations

import copy

import warnings
from dataclasses import dataclass
from functools import lru_cache

from tickets.errors import TicketsError
from tickets.models import TINY_CONFIG, load_tokenizer, resolve_model
from tickets.tasks import get_kind, get_task

LOCAL, METADATA, DOCUMENTED = "local files", "Hub metadata", "documented count"

# Rows of each Hub dataset split the engine reads (train, then its eval splits), from the datasets' cards: GLUE
# (nyu-mll/glue), SQuAD v1.1 questions (rajpurkar/squad; a context longer than one window adds windows, about 1% more
# at 384 tokens), the dev-split task's parts by article (tickets/tasks/extractive_qa.py).
DOCUMENTED_ROWS = {
    "cola": (8_551, (1_043,)), "sst2": (67_349, (872,)), "mrpc": (3_668, (408,)), "qqp": (363_846, (40_430,)),
    "stsb": (5_749, (1_500,)), "mnli": (392_702, (9_815, 9_832)), "qnli": (104_743, (5_463,)),
    "rte": (2_490, (277,)), "wnli": (635, (71,)), "squad": (87_599, (10_570,)), "squad-dev-split": (7_649, (2_921,)),
}
ROW_NOTES = dict.fromkeys(("squad", "squad-dev-split"), "counted as questions; windows about 1% more")
# MLM rows are token blocks of max_seq_length - 2 WordPiece tokens: WikiText-2's documented word counts (Merity et al.
# 2016: 2,088,628 train, 217,646 validation) x WordPiece tokens per word with BERT's uncased vocabulary (260,172 for
# the 213,886 words of the offline valid.txt: 1.22).
DOCUMENTED_WORDS = {"mlm": (2_088_628, (217_646,))}
WORDPIECES_PER_WORD = 1.22
# Configs of well-known Hub models, for when their config.json is not reachable (their model cards' config.json).
BERT_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
CASED_VOCAB = dict(vocab_size=28_996)
DOCUMENTED_CONFIGS = {
    f"{owner}{name}": config
    for name, config in {"bert-base-uncased": {}, "bert-base-cased": CASED_VOCAB, "bert-large-uncased": BERT_LARGE,
                         "bert-large-cased": {**BERT_LARGE, **CASED_VOCAB}}.items()
    for owner in ("", "google-bert/")
}


@dataclass(frozen=True)
class DataSize:
    """Rows of one task's training set and of all its eval splits together, as one run reads them, and where the
    counts come from (LOCAL, METADATA or DOCUMENTED, with a note)."""

    train_rows: int
    eval_rows: int
    source: str
    note: str = ""


@dataclass(frozen=True)
class ModelSize:
    """A model's parameter count with a task head, its architecture (layers, hidden, intermediate) and the source of
    its config ('config.json', or its documented config and why)."""

    parameters: int
    architecture: tuple[int, int, int]
    source: str


@lru_cache(maxsize=None)
def data_size(task: str, data_dir: str | None, model: str | None, max_seq_length: int, max_train_samples: int | None,
              max_eval_samples: int | None, hub_reachable: bool) -> DataSize:
    """The rows a run of `task` reads: counted by the engine's loader from `data_dir`, or for the Hub (no data_dir)
    from its metadata (`hub_reachable`) or the documented sizes."""
    spec = get_task(task)
    if data_dir is not None:
        return _local_size(spec, data_dir, model, max_seq_length, max_train_samples, max_eval_samples)
    counted = _hub_rows(spec) if hub_reachable else None
    note = ROW_NOTES.get(spec.name, "")
    if counted is not None:
        (train, evals), source = counted, METADATA
    elif spec.name in DOCUMENTED_WORDS:
        words, eval_words = DOCUMENTED_WORDS[spec.name]
        train, *evals = (round(n * WORDPIECES_PER_WORD) // (max_seq_length - 2) for n in (words, *eval_words))
        source, note = DOCUMENTED, f"blocks of {max_seq_length - 2} WordPiece tokens from the documented word count"
    elif spec.name in DOCUMENTED_ROWS:
        (train, evals), source = DOCUMENTED_ROWS[spec.name], DOCUMENTED
    else:
        raise TicketsError(f"no documented size of task '{spec.name}', and the Hub is not reachable: give a data_dir")
    return DataSize(_capped(train, max_train_samples), sum(_capped(n, max_eval_samples) for n in evals), source, note)


def _capped(rows: int, cap: int | None) -> int:
    return rows if cap is None else min(rows, cap)


def _local_size(task, data_dir: str, model: str | None, max_seq_length: int, max_train_samples: int | None,
                max_eval_samples: int | None) -> DataSize:
    note = ""
    try:
        tokenizer = load_tokenizer(model)
    except TicketsError:
        tokenizer = load_tokenizer(None)
        note = f"windows/blocks counted with the embedded model's tokenizer ({model}'s is not reachable)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = get_kind(task.kind).load(task, tokenizer, data_dir, max_seq_length, max_train_samples, max_eval_samples)
    return DataSize(len(data.train), sum(len(split) for split in data.evals.values()), LOCAL, note)


def _hub_rows(task) -> tuple[int, tuple[int, ...]] | None:
    """(train rows, eval rows per split) from the Hub dataset's metadata; None where it has none or cannot be read
    (MLM's rows are token blocks, which no metadata counts)."""
    if task.name in DOCUMENTED_WORDS:
        return None
    try:
        from datasets import load_dataset_builder

        splits = load_dataset_builder(*task.hub).info.splits
        rows = [splits[split.hub].num_examples for split in task.splits]
    except Exception:  # noqa: BLE001 - unreachable, gated or without metadata: the documented size stands in
        return None
    if task.dev_split or any(not n for n in rows):
        return None
    return rows[0], tuple(rows[1:])


@lru_cache(maxsize=None)
def _config(path: str, model_id: str):
    """(the model's config, where it came from), read once per model; None when neither it nor a documented config
    is available."""
    from transformers import AutoConfig, BertConfig

    try:
        return AutoConfig.from_pretrained(path), "config.json"
    except (OSError, ValueError):
        if model_id not in DOCUMENTED_CONFIGS:
            return None
        origin = f"documented config; {model_id}'s config.json is not reachable here"
        return BertConfig(**DOCUMENTED_CONFIGS[model_id]), origin


@lru_cache(maxsize=None)
def model_size(model: str | None, task: str) -> ModelSize | None:
    """The parameters of `model` with `task`'s head, counted from its config; None when no config is available."""
    import torch
    from transformers import logging as hf_logging

    hf_logging.set_verbosity_error()
    source = resolve_model(model)
    found = _config(source.path, source.model_id)
    if found is None:
        return None
    config, origin = found
    config = copy.deepcopy(config)
    if source.random_init:
        config.update(TINY_CONFIG)
    spec = get_task(task)
    kind = get_kind(spec.kind)
    kind.configure(config, spec.num_labels)
    with torch.device("meta"):
        built = kind.head_class().from_config(config)
    architecture = (config.num_hidden_layers, config.hidden_size, config.intermediate_size)
    return ModelSize(sum(p.numel() for p in built.parameters()), architecture, origin)
