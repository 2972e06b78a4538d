"""The science: models, tasks, masks, pruning, training and IMP levels. Imports neither Ray nor MLflow."""

# Bump when a change makes the same settings, data and model give other results (tests/test_golden.py fails until then):
# every content key changes with it, so results of the old code are never reused.
RESULTS_VERSION = "2"
