"""How sweep results are laid out in MLflow: the contract between `sweeps` (writer) and `analysis` (reader).

One experiment per sweep spec `name`, tagged with the layout version (EXPERIMENT_TAG_LAYOUT) and a description.
**One run per series** (tag SERIES), its levels as steps: the IMP trajectory of one task x seed x rewind x method
(RUN_KIND=trajectory, SERIES=imp, levels 0..N), each baseline kind of that trajectory (RUN_KIND=branch, SERIES =
the kind: random-prune, random-reinit, oneshot, oneshot-finetuned, standard, ticket; random-reinit:encoder for the
other scope), each transfer S -> T (SERIES=transfer:S->T, one level, SOURCE_LEVEL). Why series: what a researcher
compares is a curve over sparsity per series, averaged over seeds. With one run per series, MLflow's runs table shows
one row per curve (its last level being the sparsest, the same for every series of a sweep), grouping by `series`
averages seeds at each step, and a chart of the main metric against `sparsity` (or step = level) draws IMP and every
baseline side by side; with one run per level, grouping mixed sparsities and a trajectory row showed only its last.
Baseline series are not nested under their trajectory (SOURCE_RUN links it): the UI folds child runs away.

Every level logs at step = level: the task's dev metrics, `sparsity` (the schedule's value, rounded), `actual_sparsity`
(the mask's), `level`, `steps`, `wall_time_s`...; its mask is the artifact `masks/level_XX.safetensors` and its
metrics.json `levels/level_XX.json`; a level counts once `sparsity` is logged (last). Mask-distance curves are metrics
`mask_distance_level_XX` at step = training step. Tags are true for the run: METHOD is how its masks were drawn
(random for random-prune), IMP_METHOD the method of the trajectory it compares with. A run's CONTENT_KEY tag is its
series key (a trajectory's content key; for a per-level baseline a hash of kind, options and trajectory); each level
file names the trial that wrote it as `run_key`. A run starts when its first trial starts (or, logged later from the
results store, when its first level started) and ends with its last level; status is RUNNING while a trial of it
runs, SCHEDULED while it waits, FINISHED or FAILED.
One run per sweep (RUN_KIND=sweep, not a parent) holds the spec and plan and the latest report (REPORT_ARTIFACT_DIR).
Structured tickets (RUN_KIND=structured, tag SUBNETWORK): one run per structured search (SUBNETWORK=search: the
full fine-tuned model's metrics, the good subnetwork's size as `good_*` metrics, its mask as the level-0 mask) and one
per retrained subnetwork (good, random, bad, full), nested under its search run; all at step 0, `sparsity` being the
fraction of prunable weights the subnetwork removes, with `heads_kept`, `mlps_kept`, `heads_total`, `mlps_total`.
"""

TAG_RUN_KIND = "run_kind"
TAG_TASK = "task"
TAG_SEED = "seed"
TAG_METHOD = "method"
TAG_REWIND = "rewind"
TAG_SCHEDULE = "schedule"
TAG_MODEL = "model"
TAG_CONTENT_KEY = "content_key"
TAG_BRANCH_KIND = "branch_kind"
TAG_SOURCE_TASK = "source_task"
TAG_SOURCE_LEVEL = "source_level"
TAG_PRUNABLE_SET = "prunable_set"
TAG_MAIN_METRIC = "main_metric"
TAG_LEVELS_PLANNED = "levels_planned"
TAG_PARENT_RUN = "mlflow.parentRunId"
TAG_SUBNETWORK = "subnetwork"
TAG_REINIT_SCOPE = "reinit_scope"  # random-reinit: which weights were redrawn (prunable, the default, or encoder)
TAG_REWIND_POINT = "rewind_point"  # the spec's rewind point as written ("0", "5%"); TAG_REWIND holds its steps
TAG_NOT_COMPARABLE = "not_comparable_to_published"  # "true" on runs of a task that trains on part of its dev set
TAG_DEVICE = "device"  # where the trial trained: "cpu", "cuda:0"
TAG_PRECISION = "precision"  # the precision it trained in: fp32, bf16, fp16
TAG_VERSIONS = "library_versions"  # what a run's levels ran on, "torch=2.13.0 transformers=5.25.0 deepspeed=0.19.7"
#                                   (deepspeed=none when not installed); levels on other versions add their set after
#                                   " | ", in the order first seen. A record, never part of the content key
TAG_SERIES = "series"  # imp, random-prune, random-reinit, random-reinit:encoder, oneshot, standard, transfer:S->T, ...
TAG_LEVELS = "levels"  # the levels a series run holds, e.g. "1,2" (its steps)
TAG_IMP_METHOD = "imp_method"  # the pruning method of the IMP trajectory a series belongs to (method: its own masks')
TAG_SOURCE_RUN = "source_run_id"  # a baseline or transfer series: the run of the IMP trajectory it branches from
TAG_TICKET_PREFIX = "ticket_level_"  # + "XX", on a ticket search's run: "measured" (trained to the end), "predicted"
#                                     (ticket-boundary: judged from the search's early-stopped metric) or "inferred"
#                                     (ticket-bisect: from the monotone assumption); never a metric for the last two
EXPERIMENT_TAG_LAYOUT = "tracking_layout"  # experiment tag: the version of this layout the experiment was written in
EXPERIMENT_TAG_DESCRIPTION = "mlflow.note.content"  # experiment description shown by the MLflow UI
LAYOUT_VERSION = "2"  # 2: one run per series (levels as steps); 1 (no tag): one branch run per level

RUN_KIND_TRAJECTORY = "trajectory"
RUN_KIND_BRANCH = "branch"
RUN_KIND_STRUCTURED = "structured"
RUN_KIND_SWEEP = "sweep"  # one per sweep: the spec, the plan and the latest report as artifacts; no metrics
SUBNETWORK_SEARCH = "search"

METRIC_SPARSITY = "sparsity"  # rounded to the schedule's value (6 decimals), at step = level
METRIC_LEVEL = "level"  # the level itself, at step = level (an x-axis for MLflow's charts)
METRIC_MASK_DISTANCE_PREFIX = "mask_distance_level_"  # + "XX": normalised Hamming distance by training step
METRIC_SAMPLES_PER_S = "samples_per_s"  # training samples per second of training steps, at step = level
METRIC_PEAK_MEMORY_MB = "peak_memory_mb"  # peak allocated GPU memory while the level ran (GPU trials only)


def ticket_tag(level: int) -> str:
    """The tag saying whether `level`'s ticket verdict on a ticket search's run was measured, predicted or inferred."""
    return f"{TAG_TICKET_PREFIX}{level:02d}"


def mask_artifact_path(level: int) -> str:
    """Artifact path of the mask used at `level`."""
    return f"masks/level_{level:02d}.safetensors"


def level_artifact_path(level: int) -> str:
    """Artifact path of the metrics.json written for `level`."""
    return f"levels/level_{level:02d}.json"


SPEC_ARTIFACT = "sweep/spec.yaml"  # artifacts of the sweep run
PLAN_ARTIFACT = "sweep/plan.csv"
REPORT_ARTIFACT_DIR = "report"  # report.html, report.md and the CSVs of `python -m analysis report`
