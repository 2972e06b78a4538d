"""Task data whatever its kind: the loaded splits, batching, deterministic loaders, and where the files lie."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from .errors import TicketsError
from .tasks import Task, get_kind

if TYPE_CHECKING:
    from .tasks.mlm import MLMMasking

SUBSET_SEED = 0  # the train subset under max_train_samples is the same for every run seed
MASKING_SEED_OFFSET = 2**32  # keeps a loader's masking stream apart from its shuffling stream


@dataclass
class TaskData:
    """A task's tokenised train set and eval sets (unpadded), and what batching them needs."""

    task: Task
    train: Dataset
    evals: dict[str, Dataset]
    pad_token_id: int
    masking: MLMMasking | None = None  # set for masked language modelling: how train batches are masked
    dropped_train_rows: int = 0  # malformed rows left out of the train file


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
    """Load, cap and tokenise a task's train and eval splits from `data_dir` (the task's local layout) or, if None,
    the Hub, as the task's kind reads them."""
    if tokenizer.pad_token_id is None:
        raise TicketsError("the tokenizer has no padding token")
    kind = get_kind(task.kind)
    if task.dev_split and not kind.splits_dev:
        raise TicketsError(f"task '{task.name}' trains on a split of dev, which kind '{task.kind}' cannot make")
    return kind.load(task, tokenizer, data_dir, max_seq_length, max_train_samples, max_eval_samples)


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
        problem = "is a file, not a folder" if root.exists() else "does not exist"
        raise TicketsError(f"data directory '{data_dir}' {problem}")
    candidates = [root / task.folder, root / "glue" / task.folder, root / "text" / task.folder]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise TicketsError(f"no data for task '{task.name}': none of {', '.join(map(str, candidates))} exists")


def existing_file(path: Path) -> Path:
    """`path`, or a TicketsError when no such file exists."""
    if not path.is_file():
        raise TicketsError(f"data file not found: {path}")
    return path


def not_text(path: Path, exc: UnicodeDecodeError) -> TicketsError:
    """The error for a data file that is not UTF-8 text (a binary file, or text in another encoding)."""
    return TicketsError(f"data file '{path}' is not UTF-8 text (byte {exc.object[exc.start]:#04x} cannot be decoded); "
                        "give a UTF-8 text file")


def hub_split(path: str, name: str | None, split: str):
    """One split of a Hugging Face Hub dataset, or a TicketsError saying why it cannot be loaded."""
    try:
        from datasets import load_dataset

        return load_dataset(path, name, split=split)
    except Exception as exc:  # any failure here means the Hub copy is unusable; the user's fix is the same
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise TicketsError(
            f"could not load {path} ({name}, {split}) from the Hugging Face Hub ({reason}); pass --data-dir with a local copy"
        ) from exc


def train_indices(n: int, cap: int | None) -> list[int]:
    """The train examples kept under `cap`: all of them, or a random subset (the same for every run seed), in order."""
    if cap is None or cap >= n:
        return list(range(n))
    chosen = torch.randperm(n, generator=torch.Generator().manual_seed(SUBSET_SEED))[:cap]
    return sorted(chosen.tolist())


def eval_indices(n: int, cap: int | None) -> list[int]:
    """The eval examples kept under `cap`: the first ones."""
    return list(range(n if cap is None else min(cap, n)))
