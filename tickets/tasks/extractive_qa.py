"""Extractive question answering (SQuAD v1.1): a span head over overlapping windows of each context, scored by
SQuAD's official exact match and F1 over questions.

Windows: the question first, then as much of the context as fits in `max_seq_length` (only the context is truncated),
successive windows overlapping by DOC_STRIDE tokens (a third of `max_seq_length` when that is less; 128 at BERT's
384), built with the fast tokenizer's offset mapping. A training window's target is the answer's first and last token,
or the CLS token where the window does not hold the whole answer. At evaluation the N_BEST start and end positions of
every window of a question give candidate spans (inside the context, at most MAX_ANSWER_TOKENS long); the best-scoring
span over all its windows is the predicted text. `max_train_samples` and `max_eval_samples` count questions, not windows.

A task with `dev_split` (squad-dev-split, for when SQuAD's train file is unavailable) reads the dev file for both
parts and splits it by article: the articles at positions 0, 4, 8, ... of the file (every DEV_SPLIT_EVAL_EVERY-th;
12 of 48, 2,921 questions) are evaluated on, the other 36 (7,649 questions) trained on. Its results are not comparable
to published SQuAD numbers, and its records say so.
"""

from __future__ import annotations

import json
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

DOC_STRIDE = 128
MAX_QUESTION_TOKENS = 64  # longer questions are cut (BERT's max_query_length), so every window holds some context
N_BEST = 20
MAX_ANSWER_TOKENS = 30
DEV_SPLIT_EVAL_EVERY = 4
TOKENIZE_CHUNK = 1000  # questions tokenised at a time, so the tokenizer's Python lists stay small


@dataclass
class Questions:
    """SQuAD examples: per question its id, article title, context, text, and the gold answers with their offsets."""

    ids: list[str]
    titles: list[str]
    contexts: list[str]
    questions: list[str]
    answers: list[list[str]]
    answer_starts: list[list[int]]

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, indices: list[int]) -> Questions:
        """The questions at `indices`, in that order."""
        return Questions(*([column[i] for i in indices] for column in (
            self.ids, self.titles, self.contexts, self.questions, self.answers, self.answer_starts)))


class Windows(Dataset):
    """Tokenised (question, context) windows, unpadded, with the token positions of the answer; for evaluation, each
    window's question (`example_of`) and the character span of each token in the context (-1 outside it)."""

    def __init__(self, questions: Questions, input_ids: list[np.ndarray], token_type_ids: list[np.ndarray],
                 starts: list[int], ends: list[int], example_of: list[int], offsets: list[np.ndarray]):
        self.questions, self.input_ids, self.token_type_ids = questions, input_ids, token_type_ids
        self.starts, self.ends, self.example_of, self.offsets = starts, ends, example_of, offsets

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = torch.tensor(self.input_ids[i], dtype=torch.long)
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "token_type_ids": torch.tensor(self.token_type_ids[i], dtype=torch.long),
            "start_positions": torch.tensor(self.starts[i]),
            "end_positions": torch.tensor(self.ends[i]),
        }


class ExtractiveQAKind(TaskKind):
    """A span head (start and end logits per token) trained on the answer's positions in each window."""

    head = "AutoModelForQuestionAnswering"
    splits_dev = True

    def configure(self, config, num_labels: int) -> None:
        """Two outputs per token: start and end logits."""
        config.num_labels = 2

    def load(self, task: Task, tokenizer, data_dir: str | None, max_seq_length: int, max_train_samples: int | None,
             max_eval_samples: int | None) -> TaskData:
        """Windows of the train questions (capped at random) and of the first eval questions, from SQuAD's JSON files
        under `data_dir` or, if None, the Hub."""
        if not tokenizer.is_fast:
            raise TicketsError("extractive question answering needs a fast tokenizer (for its offset mapping)")
        if data_dir is None:
            train = _hub_questions(task, task.train_split.hub)
            evals = {split.name: _hub_questions(task, split.hub) for split in task.eval_splits}
        else:
            folder = find_folder(data_dir, task)
            paths = {split.name: existing_file(folder / split.file) for split in task.eval_splits}
            train = read_squad_json(self.train_file(task, folder))
            evals = {name: read_squad_json(path) for name, path in paths.items()}
        if task.dev_split:
            train = train.select(dev_split_part(train, evaluated=False))
            evals = {name: questions.select(dev_split_part(questions, evaluated=True))
                     for name, questions in evals.items()}
        train = train.select(train_indices(len(train), max_train_samples))
        evals = {name: questions.select(eval_indices(len(questions), max_eval_samples))
                 for name, questions in evals.items()}
        return TaskData(
            task,
            encode_windows(train, tokenizer, max_seq_length, with_offsets=False),
            {name: encode_windows(questions, tokenizer, max_seq_length) for name, questions in evals.items()},
            tokenizer.pad_token_id,
        )

    def train_file(self, task: Task, folder: Path) -> Path:
        """SQuAD's train file, or a TicketsError saying that it is absent."""
        path = folder / task.train_split.file
        if not path.is_file():
            raise TicketsError(f"no SQuAD train file {path} (offline copies may hold the dev file only); to train on a "
                               "split of dev by article instead, use the task 'squad-dev-split' (its results are not "
                               "comparable to published numbers)")
        return path

    def evaluate(self, model, data: TaskData, batch_size: int) -> dict[str, float]:
        """Exact match and F1 over the questions of each eval split, and the mean loss per window."""
        metrics: dict[str, float] = {}
        loss_sum, count = 0.0, 0
        for split, loader in eval_loaders(data, batch_size).items():
            starts, ends = [], []
            for batch in loader:
                out = model_outputs(model, batch)
                n = len(batch["input_ids"])
                loss_sum += float(out.loss) * n
                count += n
                starts.extend(out.start_logits.float().cpu().numpy())
                ends.extend(out.end_logits.float().cpu().numpy())
            windows = data.evals[split]
            predictions = predict_answers(windows, starts, ends)
            metrics.update(self.compute_metrics(data.task, split, predictions, windows.questions.answers))
        metrics["eval_loss"] = loss_sum / count
        return metrics

    def compute_metrics(self, task: Task, split: str, predictions: list[str], labels: list[list[str]]) -> dict[str, float]:
        """SQuAD's official exact match and F1 (0-100; answers normalised; best over each question's gold answers;
        averaged over questions), from one predicted text and the gold texts per question."""
        from torchmetrics.functional.text import squad

        if len(predictions) != len(labels) or not predictions:
            raise ValueError(f"need one prediction per question, got {len(predictions)} and {len(labels)}")
        preds = [{"prediction_text": text, "id": str(i)} for i, text in enumerate(predictions)]
        target = [{"answers": {"text": list(gold)}, "id": str(i)} for i, gold in enumerate(labels)]
        scores = squad(preds, target)
        return {name: float(scores[name]) for name in task.metric_names}


def read_squad_json(path: Path) -> Questions:
    """The questions of one file in SQuAD's JSON format, in file order."""
    try:
        articles = json.loads(path.read_text(encoding="utf-8"))["data"]
        rows = [(qa["id"], article["title"], paragraph["context"], qa["question"],
                 [answer["text"] for answer in qa["answers"]], [int(answer["answer_start"]) for answer in qa["answers"]])
                for article in articles for paragraph in article["paragraphs"] for qa in paragraph["qas"]]
    except UnicodeDecodeError as exc:
        raise not_text(path, exc) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TicketsError(f"'{path}' is not a SQuAD JSON file ({type(exc).__name__}: {exc})") from exc
    unanswered = next((row[0] for row in rows if not row[4]), None)
    if unanswered is not None:
        raise TicketsError(f"question '{unanswered}' of '{path}' has no answer (SQuAD v1.1 questions all have one)")
    if not rows:
        raise TicketsError(f"'{path}' has no questions")
    return Questions(*(list(column) for column in zip(*rows)))


def dev_split_part(questions: Questions, evaluated: bool) -> list[int]:
    """The indices of the questions in the evaluated part of a dev split by article (`evaluated`), or in its
    trained-on part: articles numbered in file order, every DEV_SPLIT_EVAL_EVERY-th from the first evaluated."""
    article = {title: number for number, title in enumerate(dict.fromkeys(questions.titles))}
    return [i for i, title in enumerate(questions.titles) if (article[title] % DEV_SPLIT_EVAL_EVERY == 0) == evaluated]


def encode_windows(questions: Questions, tokenizer, max_seq_length: int, with_offsets: bool = True) -> Windows:
    """The overlapping windows of every question, with the answer positions of its first gold answer; context offsets
    only `with_offsets` (evaluation needs them, training does not)."""
    stride = min(DOC_STRIDE, max_seq_length // 3)
    question_tokens = min(MAX_QUESTION_TOKENS, max_seq_length // 4)
    texts = _capped_questions([q.lstrip() for q in questions.questions], tokenizer, question_tokens)
    input_ids, token_type_ids, starts, ends, example_of, offsets = [], [], [], [], [], []
    for first in range(0, len(questions), TOKENIZE_CHUNK):
        chunk = slice(first, first + TOKENIZE_CHUNK)
        encoded = tokenizer(texts[chunk], questions.contexts[chunk], truncation="only_second", max_length=max_seq_length,
                            stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True)
        for window, ids in enumerate(encoded["input_ids"]):
            example = first + encoded["overflow_to_sample_mapping"][window]
            in_context = np.array([s == 1 for s in encoded.sequence_ids(window)])
            spans = np.where(in_context[:, None], np.array(encoded["offset_mapping"][window]), -1)
            answer_start = questions.answer_starts[example][0]
            start, end = _answer_tokens(spans, answer_start, answer_start + len(questions.answers[example][0]))
            cls = ids.index(tokenizer.cls_token_id)
            types = encoded["token_type_ids"][window] if "token_type_ids" in encoded else [0] * len(ids)
            input_ids.append(np.array(ids, dtype=np.int32))
            token_type_ids.append(np.array(types, dtype=np.int8))
            starts.append(cls if start is None else start)
            ends.append(cls if end is None else end)
            example_of.append(example)
            if with_offsets:
                offsets.append(spans.astype(np.int32))
    return Windows(questions, input_ids, token_type_ids, starts, ends, example_of, offsets)


def predict_answers(windows: Windows, start_logits: list[np.ndarray], end_logits: list[np.ndarray]) -> list[str]:
    """The predicted answer text of every question: the span with the highest start + end logit among the N_BEST
    starts and ends of each of its windows, inside the context and at most MAX_ANSWER_TOKENS long ('' if none)."""
    best_score = np.full(len(windows.questions), -np.inf)
    best_text = [""] * len(windows.questions)
    for window, example in enumerate(windows.example_of):
        spans = windows.offsets[window]
        start_scores, end_scores = start_logits[window][: len(spans)], end_logits[window][: len(spans)]
        first = np.argsort(start_scores)[::-1][:N_BEST]
        last = np.argsort(end_scores)[::-1][:N_BEST]
        length = last[None, :] - first[:, None] + 1
        valid = (spans[first, 0] >= 0)[:, None] & (spans[last, 0] >= 0)[None, :] & (length >= 1)
        valid &= length <= MAX_ANSWER_TOKENS
        if not valid.any():
            continue
        scores = np.where(valid, start_scores[first][:, None] + end_scores[last][None, :], -np.inf)
        i, j = np.unravel_index(np.argmax(scores), scores.shape)
        if scores[i, j] > best_score[example]:
            best_score[example] = scores[i, j]
            best_text[example] = windows.questions.contexts[example][spans[first[i], 0]: spans[last[j], 1]]
    return best_text


def _answer_tokens(spans: np.ndarray, start_char: int, end_char: int) -> tuple[int | None, int | None]:
    """The first and last token of the answer's characters [start_char, end_char), or (None, None) where the window's
    context does not hold all of them."""
    context = np.flatnonzero(spans[:, 0] >= 0)
    if len(context) == 0 or spans[context[0], 0] > start_char or spans[context[-1], 1] < end_char:
        return None, None
    start = context[np.flatnonzero(spans[context, 0] <= start_char)[-1]]
    end = context[np.flatnonzero(spans[context, 1] >= end_char)[0]]
    return int(start), int(end)


def _capped_questions(texts: list[str], tokenizer, max_tokens: int) -> list[str]:
    """The questions, each cut after its first `max_tokens` tokens."""
    spans = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return [text if len(offsets) <= max_tokens else text[: offsets[max_tokens - 1][1]]
            for text, offsets in zip(texts, spans)]


def _hub_questions(task: Task, split: str) -> Questions:
    dataset = hub_split(*task.hub, split)
    answers = list(dataset["answers"])
    return Questions(list(dataset["id"]), list(dataset["title"]), list(dataset["context"]), list(dataset["question"]),
                     [list(a["text"]) for a in answers], [[int(s) for s in a["answer_start"]] for a in answers])


KIND = ExtractiveQAKind()
