"""How sweep results are laid out in MLflow: the contract between `sweeps` (writer) and `analysis` (reader).

One experiment per sweep spec `name`. One run per IMP trajectory (RUN_KIND=trajectory) whose metrics are logged
with step = level (level 0 is the dense network), including `sparsity`; masks are artifacts
`masks/level_XX.safetensors` and each level's metrics.json is `levels/level_XX.json`. A run's CONTENT_KEY tag is its
piece's content key; every level file of the run names it as `run_key`, beside the level's own `content_key`. Branch runs
(RUN_KIND=branch: random-prune, random-reinit, oneshot, oneshot-finetuned, transfer) are one run per (trajectory, kind,
level), nested under their source trajectory run, with metrics logged at step = the level whose sparsity they match;
standard pruning, a chain of its own levels, is one run per trajectory with its levels 1..N as steps.
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
TAG_SERIES = "series"  # imp, random-prune, random-reinit, random-reinit:encoder, oneshot, standard, transfer:S->T, ...
TAG_LEVELS = "levels"  # the levels a series run holds, e.g. "1,2" (its steps)
TAG_SWEEP_RUN = "sweep_run_id"  # on every run of a sweep: the id of the sweep's own run (RUN_KIND_SWEEP)
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


def mask_artifact_path(level: int) -> str:
    """Artifact path of the mask used at `level`."""
    return f"masks/level_{level:02d}.safetensors"


def level_artifact_path(level: int) -> str:
    """Artifact path of the metrics.json written for `level`."""
    return f"levels/level_{level:02d}.json"


SPEC_ARTIFACT = "sweep/spec.yaml"  # artifacts of the sweep run
PLAN_ARTIFACT = "sweep/plan.csv"
REPORT_ARTIFACT_DIR = "report"  # report.html, report.md and the CSVs of `python -m analysis report`
