"""A sweep's results in a notebook: the three lines a researcher needs, then a look at what they give.

After the quickstart (`python -m sweeps sweeps/quickstart.yaml` writes ./mlruns.db), from the repository root:

    .venv/bin/python examples/results_api.py [TRACKING_URI]

or paste the cells into Jupyter. Nothing here is specific to the quickstart but its name and metric.
"""

import sys

import analysis

# The three lines: every point of the sweep as one tidy table, and the report's seed statistics and matching levels.
points = analysis.load("quickstart", tracking_uri=sys.argv[1] if len(sys.argv) > 1 else None)
summary = analysis.summary(points)
matching = analysis.matching(points)

# One row per series x task x seed x level, with the run that holds it; a sweep still running has rows not yet
# logged (logged False) and rows of runs not complete (partial True).
print(points[["task", "branch", "seed", "level", "sparsity", "accuracy", "status", "logged", "run_id"]]
      .to_string(index=False))

# summary.csv of `python -m analysis report`: n, mean, std, min, median, max over seeds per series and level.
print(summary[["task", "branch", "level", "sparsity", "n", "accuracy_mean", "accuracy_std"]].to_string(index=False))

# The sparsest level whose mean over seeds matches the dense network (mean >= dense mean - dense std), per series.
print(matching[matching["is_main"]][["task", "branch", "metric", "matching_level", "matching_sparsity",
                                     "strict_level"]].to_string(index=False))

# IMP minus random pruning, paired by seed, at every pruned level.
print(analysis.paired(points)[["task", "level", "baseline", "n", "mean_difference", "ci_low", "ci_high"]]
      .to_string(index=False))
