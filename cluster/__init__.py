"""The services: Ray (local head, cluster configs, runtime_env) and the MLflow tracking store."""
