"""What a task registry entry holds: its kind, data location, labels and dev metrics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Split:
    """One split of a task's data: its name ("train", or an eval split such as "dev"), local file and Hub split."""

    name: str
    file: str
    hub: str


GLUE_SPLITS = (Split("train", "train.tsv", "train"), Split("dev", "dev.tsv", "validation"))


@dataclass(frozen=True)
class Columns:
    """Where a task in GLUE's TSV format keeps its texts and label, in its files and on the Hub."""

    texts: tuple[str, ...]
    label: str
    hub_texts: tuple[str, ...]
    header: tuple[str, ...] | None = None  # column names of files that have no header row


@dataclass(frozen=True)
class Task:
    """A task: its canonical name, data folder, kind (a module of tickets.tasks), and the dev metrics it reports."""

    name: str
    folder: str
    kind: str
    num_labels: int
    metric_names: tuple[str, ...]
    main_metric: str
    hub: tuple[str, str | None] = ("", None)  # the Hugging Face dataset (path, config name)
    splits: tuple[Split, ...] = GLUE_SPLITS  # "train" first, then the eval splits
    label_names: tuple[str, ...] = ()  # string labels in class-id order, as on the Hub
    columns: Columns | None = None
    lower_is_better: tuple[str, ...] = ()  # metrics of this task that are better when lower
    aliases: tuple[str, ...] = ()  # other names get_task accepts
    dev_split: bool = False  # trains and evaluates on disjoint parts of the dev set: not comparable to published numbers

    @property
    def train_split(self) -> Split:
        """The split trained on."""
        return self.splits[0]

    @property
    def eval_splits(self) -> tuple[Split, ...]:
        """The splits evaluated on, in report order."""
        return self.splits[1:]
