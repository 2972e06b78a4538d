"""The MLflow tracking store: where it is, whether it answers, and idempotent writes following `conventions`.

Default: a local SQLite store `./mlruns.db` with artifacts in `mlartifacts/` beside it. `--tracking-uri` or
`MLFLOW_TRACKING_URI` points at a server instead (`http://HOST:5000`, as `python -m cluster up` starts one).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlparse

from .errors import ClusterError

DEFAULT_DB = "mlruns.db"
DEFAULT_ARTIFACTS = "mlartifacts"
ENV_URI = "MLFLOW_TRACKING_URI"
# MLflow's client retries a failing server for minutes by default. The driver retries for about 7 s per request
# (unless MLFLOW_HTTP_REQUEST_* say otherwise); workers give up sooner, and the driver logs what they missed.
DRIVER_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                   "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
WORKER_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                   "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
PAGE_SIZE = 1000
BULK_MAX_POINTS = 25000  # values one bulk history request returns at most
BULK_ENDPOINT = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"


def resolve_tracking_uri(cli_value: str | None = None) -> str:
    """The tracking URI: the command line, else MLFLOW_TRACKING_URI, else `sqlite:///` + the absolute ./mlruns.db."""
    uri = cli_value or os.environ.get(ENV_URI) or DEFAULT_DB
    if "://" not in uri:
        if uri.endswith(".db"):
            return "sqlite:///" + os.path.abspath(uri)
        return "file://" + os.path.abspath(uri)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + os.path.abspath(uri[len("sqlite:///"):])
    return uri


def is_server(uri: str) -> bool:
    """True for an HTTP(S) tracking server."""
    return urlparse(uri).scheme in ("http", "https")


def artifact_root(uri: str) -> str | None:
    """Where new experiments keep artifacts: `mlartifacts/` beside a SQLite file; None lets a server decide."""
    if uri.startswith("sqlite:///"):
        return "file://" + os.path.join(os.path.dirname(uri[len("sqlite:///"):]), DEFAULT_ARTIFACTS)
    return None


def health_status(uri: str, timeout_s: float = 10.0, path: str = "/health") -> int:
    """The HTTP status with which the server at `uri` answers GET `path` (MLflow's /health unless told otherwise);
    a requests.RequestException when it does not answer within `timeout_s`."""
    import requests

    return requests.get(uri.rstrip("/") + path, timeout=timeout_s).status_code


def uri_origin(uri: str) -> str:
    """Where the tracking URI `uri` came from, as a user would fix it: MLFLOW_TRACKING_URI when that variable names
    it, else the command line's --tracking-uri."""
    env = os.environ.get(ENV_URI)
    return ENV_URI if env and resolve_tracking_uri(env) == uri else "--tracking-uri"


def unreachable_server(uri: str, exc: Exception) -> str:
    """One line saying that the tracking server at `uri` did not answer, naming where its address came from."""
    origin = uri_origin(uri)
    fix = (f"unset {ENV_URI} to use the local SQLite store" if origin == ENV_URI
           else "give the address of a running server with --tracking-uri")
    return (f"the MLflow tracking server at {uri} is not reachable ({type(exc).__name__}); its address comes from "
            f"{origin}: start the server (python -m cluster up) or {fix}")


def store_failure(uri: str, exc: Exception) -> str:
    """One line saying why the tracking store at `uri` cannot be opened (no SQL statements, no links)."""
    text = str(getattr(exc, "message", None) or exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    first = re.sub(r"^\((?:sqlite3|psycopg2?)\.\w+\)\s*", "", first)
    if uri.startswith("sqlite:///") and "file is not a database" in first:
        return f"'{uri[len('sqlite:///'):]}' is not an SQLite database (damaged, or another kind of file)"
    return first


def check_tracking(uri: str, timeout_s: float = 10.0) -> None:
    """Fail with a clear ClusterError unless the tracking store at `uri` answers; create a SQLite store if new."""
    if is_server(uri):
        import requests

        try:
            status = health_status(uri, timeout_s)
        except requests.RequestException as exc:
            raise ClusterError(unreachable_server(uri, exc)) from None
        if status != 200:
            raise ClusterError(f"the MLflow tracking server at {uri} answered /health with HTTP {status}")
        return
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        folder = os.path.dirname(path)
        if not os.path.isdir(folder):
            raise ClusterError(f"the folder of the SQLite tracking store does not exist: {folder}")
        if os.path.isdir(path):
            raise ClusterError(f"the SQLite tracking store '{path}' is a folder, not a file")
    try:
        client(uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any store failure is reported as one line
        raise ClusterError(f"cannot open the MLflow tracking store {uri}: {store_failure(uri, exc)}") from None


def client(uri: str):
    """An MlflowClient for `uri` (quiet: no run links printed on stdout)."""
    from mlflow.tracking import MlflowClient

    for name, value in {**DRIVER_HTTP_ENV, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}.items():
        os.environ.setdefault(name, value)
    return MlflowClient(tracking_uri=uri)


def ensure_experiment(mlflow_client, name: str, uri: str) -> str:
    """The id of experiment `name`, created (artifacts under `artifact_root`) when missing."""
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise ClusterError(
                f"MLflow experiment '{name}' is deleted; restore it (mlflow experiments restore "
                f"--experiment-id {experiment.experiment_id}) or rename the sweep"
            )
        return experiment.experiment_id
    root = artifact_root(uri)
    location = f"{root}/{_slug(name)}" if root else None
    return mlflow_client.create_experiment(name, artifact_location=location)


def paged(search: Callable, *args, page_size: int = PAGE_SIZE, **kwargs) -> Iterator:
    """Every item a paged MlflowClient search (search_runs, search_experiments, ...) finds, page by page."""
    token = None
    while True:
        page = search(*args, max_results=page_size, page_token=token, **kwargs)
        yield from page
        token = page.token
        if not token:
            return


def experiment_names(mlflow_client, page_size: int = PAGE_SIZE) -> list[str]:
    """Names of all active experiments in the store, sorted."""
    return sorted(experiment.name for experiment in paged(mlflow_client.search_experiments, page_size=page_size))


def search_all_runs(mlflow_client, experiment_id: str, page_size: int = PAGE_SIZE) -> list:
    """Every active run of the experiment."""
    return list(paged(mlflow_client.search_runs, [experiment_id], page_size=page_size))


def runs_by_tag(mlflow_client, experiment_id: str, tag: str, filter_string: str = "") -> dict[str, object]:
    """Every run of the experiment that has `tag`, by the tag's value (the oldest run wins a tie)."""
    found: dict[str, object] = {}
    for run in paged(mlflow_client.search_runs, [experiment_id], filter_string=filter_string,
                     order_by=["attributes.start_time ASC"]):
        value = run.data.tags.get(tag)
        if value is not None:
            found.setdefault(value, run)
    return found


def logged_steps(mlflow_client, run_id: str, key: str) -> set[int]:
    """The steps at which metric `key` was logged in a run."""
    return {metric.step for metric in mlflow_client.get_metric_history(run_id, key)}


def log_step(mlflow_client, run_id: str, step: int, metrics: dict[str, float], last: str | None = None,
             tags: dict[str, str] | None = None) -> None:
    """Log `metrics` at `step` and `tags` in one batch; metric `last` (the commit marker) is logged after all the
    others."""
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if k != last]
    if batch or tags:
        mlflow_client.log_batch(run_id, metrics=batch, tags=[RunTag(k, v) for k, v in (tags or {}).items()])
    if last is not None and last in metrics:
        mlflow_client.log_batch(run_id, metrics=[Metric(last, float(metrics[last]), now, step)])


def log_file_as(mlflow_client, run_id: str, local_path: str, artifact_path: str) -> None:
    """Log one file under the artifact path `artifact_path` (folder and file name)."""
    folder, name = os.path.split(artifact_path)
    with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(tmp, name)
        shutil.copyfile(local_path, target)
        mlflow_client.log_artifact(run_id, target, folder or None)


def ui_command(uri: str) -> str:
    """How to open the results in the MLflow UI."""
    if is_server(uri):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


class MetricHistoryReader:
    """Reads the history of one metric for a chunk of runs in one request where the store allows it: SQL stores
    (`get_metric_history_bulk`), tracking servers (the `get-history-bulk` REST endpoint); otherwise, or when that
    request fails (an older server), one request per run. A chunk whose answer may be truncated is split.

    MLflow 3.17 has no public bulk history call (MlflowClient.get_metric_history reads one run and key per request,
    7-18x slower on a 200-run sweep), so this is the one place that uses the store behind the client.
    """

    def __init__(self, client, max_points: int = BULK_MAX_POINTS):
        from mlflow.store.tracking.rest_store import RestStore

        self.client = client
        self.max_points = max_points
        self.store = client._tracking_client.store
        if hasattr(self.store, "get_metric_history_bulk"):
            self.bulk = self._sql
        elif isinstance(self.store, RestStore):
            self.bulk = self._rest
        else:
            self.bulk = None

    def __call__(self, ids: list[str], key: str) -> list[dict]:
        """Every logged value of metric `key` of the runs `ids`, as dicts (run_id, key, value, step, timestamp)."""
        from mlflow.exceptions import MlflowException

        if self.bulk is None:
            return self._per_run(ids, key)
        try:
            points = self.bulk(ids, key)
        except MlflowException:
            self.bulk = None
            return self._per_run(ids, key)
        if len(points) < self.max_points:
            return points
        if len(ids) == 1:
            return self._per_run(ids, key)
        half = len(ids) // 2
        return self(ids[:half], key) + self(ids[half:], key)

    def _per_run(self, ids: list[str], key: str) -> list[dict]:
        return [dict(run_id=r, key=m.key, value=m.value, step=m.step, timestamp=m.timestamp)
                for r in ids for m in self.client.get_metric_history(r, key)]

    def _sql(self, ids: list[str], key: str) -> list[dict]:
        return [m.to_dict() for m in self.store.get_metric_history_bulk(ids, key, self.max_points)]

    def _rest(self, ids: list[str], key: str) -> list[dict]:
        from mlflow.utils.rest_utils import http_request, verify_rest_response

        params = {"run_id": list(ids), "metric_key": key, "max_results": self.max_points}
        response = http_request(self.store.get_host_creds(), BULK_ENDPOINT, "GET", params=params)
        verify_rest_response(response, BULK_ENDPOINT)
        return response.json().get("metrics", [])
