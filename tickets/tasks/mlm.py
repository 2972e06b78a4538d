"""Masked language modelling on WikiText: fixed-length token blocks masked by BERT's rule, the checkpoint's own MLM
head where it has one, scored by masked-token accuracy and perplexity."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data import (TaskData, eval_indices, eval_loaders, existing_file, find_folder, hub_split, not_text,
                    train_indices)
from ..errors import TicketsError
from .kind import TaskKind, model_outputs
from .task import Task

EVAL_MASKING_SEED = 0  # evaluation masks are drawn once, so MLM metrics compare across levels and runs
FALLBACK_TRAIN_FILE = "test.txt"  # WikiText-2's train split is not available offline (see ../shared/README.md)


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


class MLMKind(TaskKind):
    """Masked language modelling: blocks of CLS + text + SEP; train batches masked afresh, eval masks drawn once."""

    head = "AutoModelForMaskedLM"
    pretrained_head = True

    def load(self, task: Task, tokenizer, data_dir: str | None, max_seq_length: int, max_train_samples: int | None,
             max_eval_samples: int | None) -> TaskData:
        """Train blocks (capped at random) and masked eval blocks (the first ones) from the text files or the Hub."""
        (eval_split,) = task.eval_splits
        if data_dir is None:
            train_lines = list(hub_split(*task.hub, task.train_split.hub)["text"])
            eval_lines = list(hub_split(*task.hub, eval_split.hub)["text"])
        else:
            folder = find_folder(data_dir, task)
            eval_path = existing_file(folder / eval_split.file)
            train_path = self.train_file(task, folder)
            if train_path.name != task.train_split.file:
                warnings.warn(f"no {task.train_split.file} in {folder}: training on {train_path.name} and evaluating on "
                              f"{eval_split.file}")
            train_lines, eval_lines = _text_lines(train_path), _text_lines(eval_path)
        masking = MLMMasking(tokenizer.mask_token_id, len(tokenizer), tuple(tokenizer.all_special_ids))
        train = _blocks(train_lines, tokenizer, max_seq_length)
        train = train[train_indices(len(train), max_train_samples)]
        evals = _blocks(eval_lines, tokenizer, max_seq_length)
        eval_ids, eval_labels = masking.apply(evals, evals, torch.Generator().manual_seed(EVAL_MASKING_SEED))
        keep = eval_indices(len(evals), max_eval_samples)
        return TaskData(
            task,
            TokenBlocks(train, train),
            {eval_split.name: TokenBlocks(eval_ids[keep], eval_labels[keep])},
            tokenizer.pad_token_id,
            masking,
        )

    def train_file(self, task: Task, folder: Path) -> Path:
        """The train split's file, or test.txt where it is absent."""
        train = folder / task.train_split.file
        return train if train.is_file() else existing_file(folder / FALLBACK_TRAIN_FILE)

    def evaluate(self, model, data: TaskData, batch_size: int) -> dict[str, float]:
        """Masked-token accuracy, perplexity and the mean loss per masked token."""
        loss_sum, correct, count = 0.0, 0, 0
        for loader in eval_loaders(data, batch_size).values():
            for batch in loader:
                masked = batch["labels"] != -100
                n = int(masked.sum())
                if n == 0:
                    continue
                out = model_outputs(model, batch)
                loss_sum += float(out.loss) * n
                correct += int((out.logits.argmax(-1).cpu()[masked] == batch["labels"][masked]).sum())
                count += n
        mean_loss = loss_sum / count if count else float("nan")
        return {
            "masked_accuracy": correct / count if count else float("nan"),
            "perplexity": float(np.exp(mean_loss)),
            "eval_loss": mean_loss,
        }

    def compute_metrics(self, task: Task, split: str, predictions, labels) -> dict[str, float]:
        """Not available: masked language modelling metrics come from token losses (see `evaluate`)."""
        raise ValueError("masked language modelling metrics come from token losses, not from compute_metrics")


KIND = MLMKind()


def _text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise not_text(path, exc) from None


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
