"""The sweep spec: a YAML file validated with pydantic; every error names the field and the file line.

Relative paths: `storage` and a `--data-dir`/`--storage` given on the command line resolve against the current folder;
a relative `data_dir` in the file resolves against the current folder and, when it is not there, against the parent of
the spec's folder (the project root for the specs in `sweeps/`), so `sweeps/quickstart.yaml` finds `../shared/data`
from the repository root or from anywhere else.

URIs: `storage` and `data_dir` may name an object store (`s3://bucket/prefix`, `gs://...`, `abfs://...`, `file://...`,
through fsspec; see cluster.storage). Storage is checked by writing a probe object; data is fetched into this node's
cache (the content keys fingerprint it) and the trials fetch their own copy. Either failing is one line naming the
field.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import replace
from difflib import get_close_matches
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, ValidationError, create_model,
                      field_validator, model_validator)

from cluster.errors import ClusterError
from cluster.storage import ObjectStore, fetch_copy, is_uri
from tickets.backends import resolve_backend
from tickets.bisection import BOUNDARY, KIND as BISECT
from tickets.branches import (BRANCH_KINDS, DEFAULT_REINIT_SCOPE, REINIT_SCOPES, TICKET, branch_options,
                              get_branch_kind)
from tickets.config import EarlyStopConfig, TrainConfig, TrajectoryConfig
from tickets.errors import TicketsError
from tickets.pruning import levels_for_sparsity, target_sparsity
from tickets.records import check_writable_folder
from tickets.settings import settings_of
from tickets.structured.runs import RETRAIN_KINDS, SearchConfig
from tickets.tasks import get_task

from .errors import SpecError
from .spec_fields import as_list, spec_field, spec_fields, spec_list, value_type
from .yamlines import line_of, load_with_lines

DEFAULT_STORAGE = "sweep_storage"
LEVEL_BRANCHES = tuple(kind for kind in BRANCH_KINDS if kind not in ("transfer", TICKET))  # tickets: early_stop
EVALUATE_ALL, EVALUATE_BISECT, EVALUATE_BOUNDARY = "all", "bisect", "boundary"
SEARCHES = {EVALUATE_BISECT: BISECT, EVALUATE_BOUNDARY: BOUNDARY}  # evaluate: word -> ticket search kind
_TRAJECTORY = settings_of(TrajectoryConfig)
_EARLY_STOP = settings_of(EarlyStopConfig)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_PERCENT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*%\s*")


def _canonical_task(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"a task is a name such as 'sst2', got {value!r}")
    try:
        return get_task(value).name
    except TicketsError as exc:
        raise ValueError(str(exc)) from None


def _rewind_point(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool):
        if _TRAJECTORY["rewind"].problem(value) is not None:
            raise ValueError(f"a rewind point must be {_TRAJECTORY['rewind'].range_text()} steps, got {value}")
        return value
    if isinstance(value, str) and (match := _PERCENT.fullmatch(value)):
        percent = float(match.group(1))
        if percent >= 100:
            raise ValueError(f"a rewind percentage must be below 100%, got {value!r}")
        return f"{percent:g}%" if percent else 0
    raise ValueError(f"a rewind point is a number of steps (0, 250) or a percentage of training ('5%'), got {value!r}")


def _all_levels(value: Any) -> Any:
    return None if value == "all" else as_list(value)


def _levels_or_word(value: Any) -> Any:
    return value if value in (EVALUATE_ALL, *SEARCHES) else as_list(value)


TaskName = Annotated[str, PlainValidator(_canonical_task)]
Seed = value_type(_TRAJECTORY["seed"])
RewindPoint = Annotated[int | str, PlainValidator(_rewind_point)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


class Strict(BaseModel):
    """A spec section: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


class _PruningSection(Strict):
    @model_validator(mode="after")
    def _one_stop(self) -> _PruningSection:
        if (self.levels is None) == (self.target_sparsity is None):
            raise ValueError("give exactly one of levels or target_sparsity")
        return self


class _EarlyStopSection(Strict):
    @model_validator(mode="after")
    def _tolerance_for_bisect(self) -> _EarlyStopSection:
        if self.search is not None and self.tolerance is None:
            raise ValueError(f"evaluate: {self.evaluate} needs tolerance (how far below the seed's dense metric a "
                             "ticket may be and still match)")
        if self.search is None and self.tolerance is not None:
            raise ValueError("tolerance applies to evaluate: bisect or boundary only")
        return self

    def config(self) -> EarlyStopConfig:
        """The engine's EarlyStopConfig."""
        return EarlyStopConfig(self.window, self.threshold, self.check_every, self.relative)

    @property
    def search(self) -> str | None:
        """The ticket search kind that judges the tickets (bisection or the predicted boundary), None for a fixed
        list of levels (or all)."""
        return SEARCHES.get(self.evaluate) if isinstance(self.evaluate, str) else None


EarlyStop = create_model(
    "EarlyStop", __base__=_EarlyStopSection,
    __doc__="Early tickets: pruned levels stop once their next mask has converged (Early-Bird); each level's ticket "
            "is evaluated by a full-length training (`evaluate`: all, a list of levels, bisect or boundary).",
    window=spec_field(replace(_EARLY_STOP["window"], default=5, bounds={"ge": 1})),
    **spec_fields(EarlyStopConfig, ("threshold", "relative", "check_every")),
    evaluate=(Annotated[Literal[EVALUATE_ALL, EVALUATE_BISECT, EVALUATE_BOUNDARY]
                        | list[Annotated[int, Field(ge=1)]],
                        BeforeValidator(_levels_or_word)],
              Field(default=EVALUATE_ALL, description="which levels' tickets are trained to the end: all, a list of "
                                                      "levels, bisect (the sparsest matching level by bisection) or "
                                                      "boundary (only the level the search's early-stopped metrics "
                                                      "predict as the sparsest matching one and the next sparser, "
                                                      "every other level shown as predicted)")),
    tolerance=(Annotated[float, Field(ge=0)] | None,
               Field(default=None, description="bisect, boundary: a ticket matches when its main metric is at least "
                                               "its seed's dense metric minus this (plus, where lower is better)")),
)

Pruning = create_model(
    "Pruning", __base__=_PruningSection, __doc__="IMP settings: method(s), rate, schedule, how far, rewinding.",
    method=spec_list(_TRAJECTORY["method"]),
    **spec_fields(TrajectoryConfig, ("rate", "schedule")),
    levels=spec_field(replace(_TRAJECTORY["levels"], default=None, optional=True)),
    target_sparsity=(Fraction | None, Field(default=None, description="run enough levels to reach this sparsity")),
    rewind=spec_list(_TRAJECTORY["rewind"], RewindPoint),
    **spec_fields(TrajectoryConfig, ("rewind_head", "include_pooler")),
    early_stop=(EarlyStop | None, Field(default=None, description=EarlyStop.__doc__)),
)

Structured = create_model(
    "Structured", __base__=Strict,
    __doc__="A structured search per task x seed (Prasanna et al. 2020) and the subnetworks retrained from it.",
    **spec_fields(SearchConfig),
    subnetworks=(Annotated[list[Literal[RETRAIN_KINDS]], BeforeValidator(as_list), Field(min_length=1)],
                 ["good", "random", "bad"]),
)


class _TrainingSection(Strict):
    def config(self) -> TrainConfig:
        """The engine's TrainConfig."""
        return TrainConfig(**self.model_dump())


Training = create_model(
    "Training", __base__=_TrainingSection,
    __doc__="The fine-tuning recipe, used unchanged at every level and by every branch (tickets.config.TrainConfig).",
    **spec_fields(TrainConfig),
)
RECIPES_HELP = ("per task, the training settings that replace `training:`'s for that task (its trajectories, branches, "
                "and the transfers that train on it)")


class Branch(Strict):
    """One baseline kind, run at the given IMP levels (`all`: every pruned level); `reinit_scope` for random-reinit.

    Standard pruning is a chain of its own levels: it runs every level up to the highest one listed."""

    kind: Literal[LEVEL_BRANCHES]
    levels: Annotated[list[Annotated[int, Field(ge=1)]] | None, BeforeValidator(_all_levels)] = None
    reinit_scope: Literal[REINIT_SCOPES] = DEFAULT_REINIT_SCOPE

    @model_validator(mode="after")
    def _scope_for_reinit(self) -> Branch:
        if self.reinit_scope != DEFAULT_REINIT_SCOPE and self.kind != "random-reinit":
            raise ValueError("reinit_scope applies to kind random-reinit only")
        return self

    def options(self) -> dict:
        """The branch's settings beyond its kind, as the engine's BranchConfig takes them (empty when it has none)."""
        return branch_options(self.kind, self.reinit_scope)

    @property
    def label(self) -> str:
        """The branch as named in trial names: its kind, with a non-default reinit scope."""
        return self.kind if self.reinit_scope == DEFAULT_REINIT_SCOPE else f"{self.kind}-{self.reinit_scope}"


class Transfer(Strict):
    """Masks of `sources` at `sparsity` (one of their IMP levels), each trained on every other task of `targets`."""

    sources: Annotated[list[TaskName], BeforeValidator(as_list), Field(min_length=1)]
    targets: Annotated[list[TaskName], BeforeValidator(as_list), Field(min_length=1)]
    sparsity: Fraction


class Resources(Strict):
    """What one trial asks Ray for (fractional GPUs share a device), and an optional cap on trials at once."""

    cpus: Annotated[float, Field(gt=0)] = 1.0
    gpus: Annotated[float, Field(ge=0)] = 0.0
    max_concurrent: Annotated[int, Field(ge=1)] | None = None

    @field_validator("gpus")
    @classmethod
    def _whole_gpus_above_one(cls, gpus: float) -> float:
        if gpus > 1 and not float(gpus).is_integer():
            raise ValueError(f"a trial asks for a fraction of one GPU or whole GPUs, got {gpus}")
        return gpus


class Spec(Strict):
    """A whole sweep: tasks x seeds x rewinds x methods IMP trajectories, their branches and transfers, and/or a
    structured search per task x seed with its retrained subnetworks."""

    name: str
    model: str | None = None
    data_dir: str | None = None
    tasks: Annotated[list[TaskName], BeforeValidator(as_list), Field(min_length=1)]
    seeds: Annotated[list[Seed], BeforeValidator(as_list), Field(min_length=1)]
    pruning: Pruning | None = None
    structured: Structured | None = None
    training: Training = Field(default_factory=Training)
    recipes: dict[TaskName, Training] = Field(default_factory=dict, description=RECIPES_HELP)
    branches: list[Branch] = Field(default_factory=list)
    transfer: list[Transfer] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    max_failures: Annotated[int, Field(ge=0)] = 3
    storage: str = DEFAULT_STORAGE

    @field_validator("recipes", mode="before")
    @classmethod
    def _one_recipe_per_task(cls, recipes: Any) -> Any:
        if isinstance(recipes, dict):
            seen: dict[str, Any] = {}
            for given in recipes:
                try:
                    name = _canonical_task(given)
                except ValueError:
                    continue  # the key's own validation names it
                if name in seen:
                    raise ValueError(f"task '{name}' has two recipes (as {seen[name]!r} and {given!r})")
                seen[name] = given
        return recipes

    @model_validator(mode="after")
    def _some_work(self) -> Spec:
        if self.pruning is None and self.structured is None:
            raise ValueError("give pruning: (IMP trajectories), structured: (structured tickets), or both")
        return self

    @property
    def last_level(self) -> int:
        """The last IMP level every trajectory runs to (level 0 is dense; 0 without pruning:)."""
        if self.pruning is None:
            return 0
        if self.pruning.levels is not None:
            return self.pruning.levels
        return levels_for_sparsity(self.pruning.target_sparsity, self.pruning.rate, self.pruning.schedule)

    def level_sparsity(self, level: int) -> float:
        """The scheduled sparsity of `level`."""
        return target_sparsity(level, self.pruning.rate, self.pruning.schedule)

    def branch_levels(self, branch: Branch) -> list[int]:
        """The levels a branch runs at (a chain kind: every level up to the highest one listed)."""
        levels = list(range(1, self.last_level + 1)) if branch.levels is None else sorted(set(branch.levels))
        return list(range(1, levels[-1] + 1)) if get_branch_kind(branch.kind).chain else levels

    def transfer_level(self, transfer: Transfer) -> int:
        """The IMP level whose sparsity is the transfer's source sparsity."""
        for level in range(1, self.last_level + 1):
            if math.isclose(self.level_sparsity(level), transfer.sparsity, abs_tol=1e-6):
                return level
        available = ", ".join(f"{self.level_sparsity(lv):.4g}" for lv in range(1, self.last_level + 1))
        raise ValueError(f"{transfer.sparsity} is not the sparsity of a level of this schedule (levels: {available})")

    def training_for(self, task: str) -> TrainConfig:
        """The resolved recipe of `task`: `training:` with the settings its `recipes:` entry gives replaced, and
        backend `auto` resolved for the trials' resources (DeepSpeed when they ask for GPUs and it is installed)."""
        recipe = self.recipes.get(get_task(task).name)
        given = {} if recipe is None else recipe.model_dump(exclude_unset=True)
        train = TrainConfig(**{**self.training.model_dump(), **given})
        return replace(train, backend=resolve_backend(train.backend, on_gpu=self.resources.gpus > 0))

    def trajectory(self, task: str, seed: int, point: int | str, method: str) -> TrajectoryConfig:
        """The engine's TrajectoryConfig of one trajectory of this sweep; a rewind `point` given as a percentage is
        resolved by the engine from the training set it loads."""
        rewind, percent = (point, None) if isinstance(point, int) else (0, float(point.rstrip("%")))
        return TrajectoryConfig(
            task=task, seed=seed, model=self.model, data_dir=self.data_dir, method=method, rate=self.pruning.rate,
            schedule=self.pruning.schedule, levels=self.last_level, rewind=rewind, rewind_percent=percent,
            rewind_head=self.pruning.rewind_head, include_pooler=self.pruning.include_pooler,
            train=self.training_for(task),
            early_stop=EarlyStopConfig() if self.pruning.early_stop is None else self.pruning.early_stop.config(),
        )

    def ticket_levels(self) -> list[int]:
        """The levels whose tickets an early-stopped sweep trains to the end (all or a list; none for a search)."""
        early = self.pruning.early_stop
        if early is None or early.search is not None:
            return []
        return list(range(1, self.last_level + 1)) if early.evaluate == EVALUATE_ALL else sorted(set(early.evaluate))

    def structured_search(self, task: str, seed: int) -> SearchConfig:
        """The engine's SearchConfig of the structured search on `task` with `seed`."""
        recipe = TrajectoryConfig(task=task, seed=seed, model=self.model, data_dir=self.data_dir, levels=0,
                                  train=self.training_for(task))
        s = self.structured
        return SearchConfig(recipe, s.strategy, s.threshold, s.head_fraction, s.importance_samples)


def load_spec(path: str, data_dir: str | None = None, storage: str | None = None) -> Spec:
    """Read, validate and resolve a spec file; `data_dir`/`storage` (from the command line) replace the file's."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SpecError(source, None, None, f"cannot read the spec: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(source, raw[:exc.start].count(b"\n") + 1, None,
                        f"not UTF-8 text (byte {raw[exc.start]:#04x}): a sweep spec is a YAML text file") from None
    data, lines = load_with_lines(text, source)
    if not isinstance(data, dict):
        raise SpecError(source, 1, None, "a sweep spec is a YAML mapping (name:, tasks:, seeds:, pruning:, ...)")
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, lines, source) from None
    spec = _resolve_paths(spec, Path(path), lines, source, data_dir, storage)
    _check(spec, lines, source)
    return spec


def _first_error(exc: ValidationError, lines: dict, source: str) -> SpecError:
    order = {"extra_forbidden": 0, "missing": 2}
    errors = sorted(exc.errors(), key=lambda e: order.get(e["type"], 1))  # a typo explains the field it left missing
    error = errors[0]
    loc = tuple(error["loc"])
    field = ".".join(str(part) for part in loc if part != "[key]") or None
    if error["type"] == "extra_forbidden":
        allowed = list(_model_at(loc[:-1]).model_fields)
        close = get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        message = f"unknown field{hint}; allowed here: {', '.join(allowed)}"
    elif error["type"] == "missing":
        message = "required field is missing"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] not in ("value_error", "assertion_error") and "input" in error:
            message += f" (got {error['input']!r})"
    more = len(errors) - 1
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return SpecError(source, line_of(lines, loc), field, message)


def _model_at(loc: tuple) -> type[BaseModel]:
    model: type[BaseModel] = Spec
    for part in loc:
        if isinstance(part, int) or part not in model.model_fields:  # a list index or a mapping's key
            continue
        annotation = model.model_fields[part].annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            break
        model = nested[0]
    return model


def _resolve_paths(spec: Spec, path: Path, lines: dict, source: str, data_dir: str | None, storage: str | None) -> Spec:
    updates: dict[str, str] = {}
    if data_dir is not None and is_uri(data_dir):
        updates["data_dir"] = _fetched(data_dir, source, None, "--data-dir")
    elif spec.data_dir is not None and data_dir is None and is_uri(spec.data_dir):
        updates["data_dir"] = _fetched(spec.data_dir, source, line_of(lines, ("data_dir",)), "data_dir")
    elif data_dir is not None:
        if not os.path.isdir(data_dir):
            problem = "is a file, not a folder" if os.path.exists(data_dir) else "does not exist"
            raise SpecError(source, None, "--data-dir", f"folder '{data_dir}' {problem}")
        updates["data_dir"] = os.path.abspath(data_dir)
    elif spec.data_dir is not None:
        candidates = [Path(spec.data_dir)] if os.path.isabs(spec.data_dir) else \
            [Path.cwd() / spec.data_dir, path.resolve().parent.parent / spec.data_dir]
        found = next((c for c in candidates if c.is_dir()), None)
        if found is None:
            tried = " or ".join(f"'{c}'" for c in candidates)
            raise SpecError(source, line_of(lines, ("data_dir",)), "data_dir",
                            f"folder not found (tried {tried}); give an existing folder or --data-dir")
        updates["data_dir"] = str(found.resolve())
    chosen_storage = storage if storage is not None else spec.storage
    field, line = ("--storage", None) if storage is not None else ("storage", line_of(lines, ("storage",)))
    if is_uri(chosen_storage):
        try:
            ObjectStore(chosen_storage).check_writable("the results store")
        except ClusterError as exc:
            raise SpecError(source, line, field, str(exc)) from None
        updates["storage"] = chosen_storage.rstrip("/")
        return spec.model_copy(update=updates)
    updates["storage"] = os.path.abspath(os.path.expanduser(chosen_storage))
    try:
        check_writable_folder(updates["storage"], "the results store")
    except TicketsError as exc:
        raise SpecError(source, line, field, str(exc)) from None
    return spec.model_copy(update=updates)


def _fetched(uri: str, source: str, line: int | None, field: str) -> str:
    """This node's copy of the data at `uri` (fetched into its cache), or one line naming the field."""
    try:
        return fetch_copy(uri)
    except ClusterError as exc:
        raise SpecError(source, line, field, str(exc)) from None


def _check(spec: Spec, lines: dict, source: str) -> None:
    def fail(loc: tuple, message: str) -> None:
        raise SpecError(source, line_of(lines, loc), ".".join(str(p) for p in loc), message)

    if not _NAME.fullmatch(spec.name):
        fail(("name",), f"use letters, digits, '_', '.', '-' (it names the MLflow experiment), got {spec.name!r}")
    for field in ("tasks", "seeds"):
        _no_duplicates(getattr(spec, field), (field,), fail)
    if spec.structured is not None:
        _no_duplicates(spec.structured.subnetworks, ("structured", "subnetworks"), fail)
    if spec.pruning is None:
        for field in ("branches", "transfer"):
            if getattr(spec, field):
                fail((field,), f"{field} start from IMP masks: add a pruning: section")
    else:
        _check_pruning(spec, fail)
    if spec.model is not None:
        _check_model(spec.model, lambda message: fail(("model",), message))
    try:
        spec.training.config().validate()
    except TicketsError as exc:
        fail(("training",), str(exc))
    _check_recipes(spec, fail)


def _check_recipes(spec: Spec, fail) -> None:
    trained = {*spec.tasks, *(target for transfer in spec.transfer for target in transfer.targets)}
    for task in spec.recipes:
        if task not in trained:
            fail(("recipes", task), f"task '{task}' is not trained by this sweep (in neither tasks nor targets)")
        try:
            spec.training_for(task).validate()
        except TicketsError as exc:
            fail(("recipes", task), str(exc))


def _check_pruning(spec: Spec, fail) -> None:
    _no_duplicates(spec.pruning.method, ("pruning", "method"), fail)
    try:
        last = spec.last_level
        spec.level_sparsity(last)
    except TicketsError as exc:
        fail(("pruning", "levels" if spec.pruning.levels is not None else "target_sparsity"), str(exc))
    _no_duplicates(spec.pruning.rewind, ("pruning", "rewind"), fail)
    kinds: set[str] = set()
    for index, branch in enumerate(spec.branches):
        if branch.label in kinds:
            fail(("branches", index, "kind"), f"branch '{branch.label}' is listed twice")
        kinds.add(branch.label)
        for j, level in enumerate(branch.levels or []):
            if level > last:
                fail(("branches", index, "levels", j), f"level {level} is beyond the last IMP level ({last})")
    for index, transfer in enumerate(spec.transfer):
        for j, task in enumerate(transfer.sources):
            if task not in spec.tasks:
                fail(("transfer", index, "sources", j),
                     f"source task '{task}' has no IMP trajectories: add it to tasks")
        try:
            spec.transfer_level(transfer)
        except ValueError as exc:
            fail(("transfer", index, "sparsity"), str(exc))
        if not set(transfer.targets) - set(transfer.sources) and len(transfer.sources) == 1:
            fail(("transfer", index, "targets"), "no target differs from the source task")
    early = spec.pruning.early_stop
    if early is not None:
        if not spec.pruning.rewind_head:
            fail(("pruning", "early_stop"), "early stopping needs rewind_head: true (a ticket trains from theta_i "
                                            "with its head gamma_i)")
        if isinstance(early.evaluate, list):
            _no_duplicates(early.evaluate, ("pruning", "early_stop", "evaluate"), fail)
            for j, level in enumerate(early.evaluate):
                if level > last:
                    fail(("pruning", "early_stop", "evaluate", j),
                         f"level {level} is beyond the last IMP level ({last})")


def _no_duplicates(values: list, loc: tuple, fail) -> None:
    seen: set = set()
    for index, value in enumerate(values):
        if value in seen:
            fail((*loc, index), f"{value!r} is listed twice")
        seen.add(value)


def _check_model(model: str, fail) -> None:
    from tickets.models import resolve_model

    try:
        resolve_model(model)
    except TicketsError as exc:
        fail(str(exc))
