"""The science: models, tasks, masks, pruning, training and IMP levels. Imports neither Ray nor MLflow."""

CODE_VERSION = "1"
