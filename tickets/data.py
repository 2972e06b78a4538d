"""Task data: GLUE TSVs or WikiText from a local folder or the Hugging Face Hub, tokenised, with deterministic loaders."""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from .errors import TicketsError
from .tasks import Task

SUBSET_SEED = 0  # the train subset under max_train_samples is the same for every run seed
EVAL_MASKING_SEED = 0  # evaluation masks are drawn once, so MLM metrics compare across levels and runs
MASKING_SEED_OFFSET = 2**32  # keeps a loader's masking stream apart from its shuffling stream
GLUE_HUB = "nyu-mll/glue"
WIKITEXT_HUB = ("Salesforce/wikitext", "wikitext-2-raw-v1")


@dataclass(frozen=True)
class GlueFormat:
    """Where a GLUE task keeps its texts and label, in GLUE's TSV files and on the Hub."""

    text_columns: tuple[str, ...]
    label_column: str
    hub_text_columns: tuple[str, ...]
    label_names: tuple[str, ...] = ()  # string labels in class-id order, as on the Hub
    header: tuple[str, ...] | None = None  # column names of files that have no header row


GLUE_FORMATS = {
    "cola": GlueFormat(("sentence",), "label", ("sentence",), header=("source", "label", "mark", "sentence")),
    "sst2": GlueFormat(("sentence",), "label", ("sentence",)),
    "mrpc": GlueFormat(("#1 String", "#2 String"), "Quality", ("sentence1", "sentence2")),
    "qqp": GlueFormat(("question1", "question2"), "is_duplicate", ("question1", "question2")),
    "stsb": GlueFormat(("sentence1", "sentence2"), "score", ("sentence1", "sentence2")),
    "mnli": GlueFormat(
        ("sentence1", "sentence2"), "gold_label", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction")
    ),
    "qnli": GlueFormat(("question", "sentence"), "label", ("question", "sentence"), ("entailment", "not_entailment")),
    "rte": GlueFormat(("sentence1", "sentence2"), "label", ("sentence1", "sentence2"), ("entailment", "not_entailment")),
    "wnli": GlueFormat(("sentence1", "sentence2"), "label", ("sentence1", "sentence2"), ("not_entailment", "entailment")),
}

# eval split name -> (local file, Hub split)
EVAL_SPLITS = {
    "mnli": {"matched": ("dev_matched.tsv", "validation_matched"), "mismatched": ("dev_mismatched.tsv", "validation_mismatched")},
    "mlm": {"dev": ("valid.txt", "validation")},
}
DEFAULT_EVAL_SPLITS = {"dev": ("dev.tsv", "validation")}


@dataclass
class TaskData:
    """A task's tokenised train set and eval sets (unpadded), and what batching them needs."""

    task: Task
    train: Dataset
    evals: dict[str, Dataset]
    pad_token_id: int
    masking: MLMMasking | None = None  # set for masked language modelling: how train batches are masked
    dropped_train_rows: int = 0  # malformed rows left out of the train file (see read_glue_tsv)


@dataclass
class Examples:
    """Raw examples: one list of strings per text column, and one label per example."""

    texts: tuple[list[str], ...]
    labels: list
    dropped: int = 0  # malformed rows of the file they were read from that were left out

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, indices: list[int]) -> Examples:
        """The examples at `indices`, in that order."""
        return Examples(tuple([column[i] for i in indices] for column in self.texts), [self.labels[i] for i in indices])


class EncodedExamples(Dataset):
    """Tokenised sentence (pair) examples, unpadded."""

    def __init__(self, input_ids: list[list[int]], token_type_ids: list[list[int]] | None, labels: list, label_dtype):
        self.input_ids, self.token_type_ids, self.labels, self.label_dtype = input_ids, token_type_ids, labels, label_dtype

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = torch.tensor(self.input_ids[i])
        types = torch.tensor(self.token_type_ids[i]) if self.token_type_ids is not None else torch.zeros_like(ids)
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "token_type_ids": types,
            "labels": torch.tensor(self.labels[i], dtype=self.label_dtype),
        }


class TokenBlocks(Dataset):
    """Fixed-length text blocks for masked language modelling; labels hold the tokens to predict (-100: none)."""

    def __init__(self, input_ids: torch.Tensor, labels: torch.Tensor):
        self.input_ids, self.labels = input_ids, labels

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.input_ids[i]
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "token_type_ids": torch.zeros_like(ids),
            "labels": self.labels[i],
        }


@dataclass(frozen=True)
class MLMMasking:
    """BERT's masking rule: pick `probability` of the ordinary tokens; of those 80% [MASK], 10% random, 10% unchanged."""

    mask_token_id: int
    vocab_size: int
    special_ids: tuple[int, ...]
    probability: float = 0.15

    def apply(self, input_ids: torch.Tensor, targets: torch.Tensor, generator: torch.Generator):
        """(corrupted input ids, labels): labels are `targets` at picked positions and -100 elsewhere."""
        picked = torch.rand(input_ids.shape, generator=generator) < self.probability
        picked &= ~torch.isin(input_ids, torch.tensor(self.special_ids, dtype=input_ids.dtype))
        roll = torch.rand(input_ids.shape, generator=generator)
        random_ids = torch.randint(self.vocab_size, input_ids.shape, generator=generator, dtype=input_ids.dtype)
        corrupted = torch.where(picked & (roll < 0.8), self.mask_token_id, input_ids)
        corrupted = torch.where(picked & (roll >= 0.8) & (roll < 0.9), random_ids, corrupted)
        return corrupted, torch.where(picked, targets, -100)


class Collate:
    """Pads a list of examples to the longest one; with `masking`, masks the batch for masked language modelling."""

    def __init__(self, pad_token_id: int, masking: MLMMasking | None = None, generator: torch.Generator | None = None):
        self.padding = {"input_ids": pad_token_id, "labels": -100}
        self.masking, self.generator = masking, generator

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch = {key: self._stack([item[key] for item in items], self.padding.get(key, 0)) for key in items[0]}
        if self.masking is not None:
            batch["input_ids"], batch["labels"] = self.masking.apply(batch["input_ids"], batch["labels"], self.generator)
        return batch

    @staticmethod
    def _stack(values: list[torch.Tensor], padding: int) -> torch.Tensor:
        if values[0].dim() == 0:
            return torch.stack(values)
        return pad_sequence(values, batch_first=True, padding_value=padding)


def load_task_data(
    task: Task,
    tokenizer,
    data_dir: str | None,
    max_seq_length: int,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
) -> TaskData:
    """Load, cap and tokenise a task's train and eval splits from `data_dir` (GLUE layout) or, if None, the Hub."""
    if tokenizer.pad_token_id is None:
        raise TicketsError("the tokenizer has no padding token")
    if task.kind == "mlm":
        return _load_mlm(task, tokenizer, data_dir, max_seq_length, max_train_samples, max_eval_samples)
    splits = EVAL_SPLITS.get(task.name, DEFAULT_EVAL_SPLITS)
    if data_dir is None:
        train = _hub_glue(task, "train")
        evals = {name: _hub_glue(task, hub_split) for name, (_, hub_split) in splits.items()}
    else:
        folder = find_folder(data_dir, task)
        paths = {name: _existing(folder / file) for name, (file, _) in splits.items()}
        train = read_glue_tsv(_existing(folder / "train.tsv"), task, train=True)
        evals = {name: read_glue_tsv(path, task) for name, path in paths.items()}
    dropped_train_rows = train.dropped
    train = train.select(_train_indices(len(train), max_train_samples))
    evals = {name: examples.select(_eval_indices(len(examples), max_eval_samples)) for name, examples in evals.items()}
    return TaskData(
        task,
        _encode(train, task, tokenizer, max_seq_length),
        {name: _encode(examples, task, tokenizer, max_seq_length) for name, examples in evals.items()},
        tokenizer.pad_token_id,
        dropped_train_rows=dropped_train_rows,
    )


def train_loader(data: TaskData, batch_size: int, seed: int) -> DataLoader:
    """Shuffled training batches with a new order (and MLM masking) each time it is iterated, one epoch per pass.

    The orders of one seed's epochs are successive draws of that seed's own stream, so every (seed, epoch) pair has its
    own order and the same seed gives the same sequence of epochs.
    """
    masking_generator = torch.Generator().manual_seed(seed + MASKING_SEED_OFFSET)
    return DataLoader(
        data.train,
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=Collate(data.pad_token_id, data.masking, masking_generator),
    )


def training_batches(data: TaskData, batch_size: int, seed: int, steps: int) -> Iterator[dict[str, torch.Tensor]]:
    """`steps` training batches of `train_loader`, epoch after epoch."""
    loader = train_loader(data, batch_size, seed)
    done = 0
    while done < steps:
        for batch in loader:
            yield batch
            done += 1
            if done == steps:
                return


def eval_loaders(data: TaskData, batch_size: int) -> dict[str, DataLoader]:
    """One loader per eval split, in file order; iterating them draws nothing from the global (training) generator."""
    return {
        name: DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=Collate(data.pad_token_id),
                         generator=torch.Generator())
        for name, dataset in data.evals.items()
    }


def find_folder(data_dir: str, task: Task) -> Path:
    """The task's folder under `data_dir`: DIR/<folder>, DIR/glue/<folder> or DIR/text/<folder>."""
    root = Path(data_dir)
    if not root.is_dir():
        raise TicketsError(f"data directory '{data_dir}' does not exist")
    candidates = [root / task.folder, root / "glue" / task.folder, root / "text" / task.folder]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise TicketsError(f"no data for task '{task.name}': none of {', '.join(map(str, candidates))} exists")


def read_glue_tsv(path: Path, task: Task, train: bool = False) -> Examples:
    """The examples of one GLUE TSV file (read unquoted, as GLUE writes them).

    A malformed row (wrong number of columns, unparsable or out-of-range label) of an eval file (`train` False) is an
    error naming the file and line, so the eval set is never silently changed; in a train file such rows are dropped
    with a warning, and their count is `Examples.dropped`.
    """
    fmt = GLUE_FORMATS[task.name]
    texts: tuple[list[str], ...] = tuple([] for _ in fmt.text_columns)
    labels: list = []
    skipped = 0
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = list(fmt.header or next(rows, []))
        missing = [c for c in (*fmt.text_columns, fmt.label_column) if c not in header]
        if missing:
            raise TicketsError(f"'{path}' has no column {', '.join(repr(c) for c in missing)}")
        text_at = [header.index(c) for c in fmt.text_columns]
        label_at = header.index(fmt.label_column)
        for row in rows:
            if len(row) != len(header):
                problem = f"expected {len(header)} tab-separated columns, found {len(row)}"
            else:
                label, problem = _parse_label(row[label_at], task, fmt)
            if problem is not None:
                if not train:
                    raise TicketsError(f"malformed row in eval file '{path}', line {rows.line_num}: {problem}")
                skipped += 1
                continue
            for column, at in zip(texts, text_at):
                column.append(row[at])
            labels.append(label)
    if skipped:
        warnings.warn(f"dropped {skipped} malformed rows of train file {path}")
    if not labels:
        raise TicketsError(f"'{path}' has no usable rows")
    return Examples(texts, labels, skipped)


def _parse_label(value: str, task: Task, fmt: GlueFormat) -> tuple[float | int | None, str | None]:
    """(label, None), or (None, what is wrong with `value`)."""
    value = value.strip()
    try:
        if task.kind == "regression":
            score = float(value)
            return (score, None) if math.isfinite(score) else (None, f"label {value!r} is not a finite number")
        label = fmt.label_names.index(value) if value in fmt.label_names else int(value)
    except ValueError:
        names = f" (expected one of {', '.join(fmt.label_names)} or a class id)" if fmt.label_names else ""
        return None, f"label {value!r} cannot be parsed{names}"
    if 0 <= label < task.num_labels:
        return label, None
    return None, f"label {value!r} is out of range (0..{task.num_labels - 1})"


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise TicketsError(f"data file not found: {path}")
    return path


def _hub_split(path: str, name: str, split: str):
    try:
        from datasets import load_dataset

        return load_dataset(path, name, split=split)
    except Exception as exc:  # any failure here means the Hub copy is unusable; the user's fix is the same
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise TicketsError(
            f"could not load {path} ({name}, {split}) from the Hugging Face Hub ({reason}); pass --data-dir with a local copy"
        ) from exc


def _hub_glue(task: Task, split: str) -> Examples:
    dataset = _hub_split(GLUE_HUB, task.name, split)
    return Examples(tuple(list(dataset[c]) for c in GLUE_FORMATS[task.name].hub_text_columns), list(dataset["label"]))


def _train_indices(n: int, cap: int | None) -> list[int]:
    if cap is None or cap >= n:
        return list(range(n))
    chosen = torch.randperm(n, generator=torch.Generator().manual_seed(SUBSET_SEED))[:cap]
    return sorted(chosen.tolist())


def _eval_indices(n: int, cap: int | None) -> list[int]:
    return list(range(n if cap is None else min(cap, n)))


def _encode(examples: Examples, task: Task, tokenizer, max_seq_length: int) -> EncodedExamples:
    if len(examples) == 0:
        return EncodedExamples([], None, [], torch.long)
    encoded = tokenizer(*examples.texts, truncation=True, max_length=max_seq_length)
    dtype = torch.float32 if task.kind == "regression" else torch.long
    return EncodedExamples(encoded["input_ids"], encoded.get("token_type_ids"), examples.labels, dtype)


def _load_mlm(
    task: Task, tokenizer, data_dir: str | None, max_seq_length: int, max_train: int | None, max_eval: int | None
) -> TaskData:
    eval_file, eval_split = EVAL_SPLITS["mlm"]["dev"]
    if data_dir is None:
        train_lines = list(_hub_split(*WIKITEXT_HUB, "train")["text"])
        eval_lines = list(_hub_split(*WIKITEXT_HUB, eval_split)["text"])
    else:
        folder = find_folder(data_dir, task)
        eval_path = _existing(folder / eval_file)
        train_path = folder / "train.txt"
        if not train_path.is_file():
            train_path = _existing(folder / "test.txt")
            warnings.warn(f"no train.txt in {folder}: training on test.txt and evaluating on {eval_file}")
        train_lines = train_path.read_text(encoding="utf-8").splitlines()
        eval_lines = eval_path.read_text(encoding="utf-8").splitlines()
    masking = MLMMasking(tokenizer.mask_token_id, len(tokenizer), tuple(tokenizer.all_special_ids))
    train = _blocks(train_lines, tokenizer, max_seq_length)
    train = train[_train_indices(len(train), max_train)]
    evals = _blocks(eval_lines, tokenizer, max_seq_length)
    eval_ids, eval_labels = masking.apply(evals, evals, torch.Generator().manual_seed(EVAL_MASKING_SEED))
    keep = _eval_indices(len(evals), max_eval)
    return TaskData(
        task,
        TokenBlocks(train, train),
        {"dev": TokenBlocks(eval_ids[keep], eval_labels[keep])},
        tokenizer.pad_token_id,
        masking,
    )


def _blocks(lines: list[str], tokenizer, max_seq_length: int) -> torch.Tensor:
    if max_seq_length < 3 or tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise TicketsError("masked language modelling needs max_seq_length >= 3 and a tokenizer with CLS/SEP tokens")
    ids = [token for line in tokenizer(lines, add_special_tokens=False, verbose=False)["input_ids"] for token in line]
    width = max_seq_length - 2
    count = len(ids) // width
    if count == 0:
        raise TicketsError(f"the text has {len(ids)} tokens, fewer than one block of {width}")
    body = torch.tensor(ids[: count * width], dtype=torch.long).view(count, width)
    cls = torch.full((count, 1), tokenizer.cls_token_id, dtype=torch.long)
    sep = torch.full((count, 1), tokenizer.sep_token_id, dtype=torch.long)
    return torch.cat([cls, body, sep], dim=1)
