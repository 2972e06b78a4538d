"""Sweep specs (YAML) -> Ray Tune trials that call `tickets`; results reused by content key, tracked in MLflow."""
