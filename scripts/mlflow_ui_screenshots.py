"""Screenshots of a sweep's experiment in the MLflow UI, as a person would see it in a browser.

Starts an MLflow server on 127.0.0.1 (a free port) for the store, waits until it answers, writes the experiment's
"IMP vs baselines by sparsity" view (cluster/mlflow_view.py) and saves two PNGs taken by headless Chromium:

    runs_table.png        the view's runs table: runs grouped by series, columns series, task, seed, sparsity, metric
    imp_vs_baselines.png  the view's charts: the main metric against sparsity, one line per series (mean over seeds,
                          min-max band)

then stops the server it started (nothing else). A folder (MLflow's file store, which MLflow 3 opens only with
MLFLOW_ALLOW_FILE_STORE=true) is opened with that opt-in. A tracking server URI (http://...) is used as it is, without
starting anything. Chromium is Debian's package (apt-get install -y chromium), driven over the DevTools protocol on
a pipe so that each screenshot waits until the page has rendered.

    .venv/bin/python scripts/mlflow_ui_screenshots.py sqlite:///$PWD/mlruns.db quickstart --out runs/screenshots
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlparse

import requests

from cluster import mlflow_view, tracking

SHOTS = (("runs_table.png", "TABLE"), ("imp_vs_baselines.png", "CHART"))
CLOSE_ASSISTANT = ("document.querySelector('[data-component-id=\"mlflow.assistant.chat_panel.close\"]')"
                   "?.click()")  # MLflow 3's assistant panel opens beside the runs on a first visit
RENDERED = {  # a page counts as rendered once this is true and stays true for SETTLE_S
    "TABLE": "document.querySelectorAll('.ag-row').length > 0",
    "CHART": "document.querySelectorAll('.js-plotly-plot svg.main-svg').length >= {charts}",
}
SETTLE_S = 2.0
FILE_STORE_OPT_IN = "MLFLOW_ALLOW_FILE_STORE"


class Usage(Exception):
    """A problem with what the user asked for: one line, exit 2."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        uri, experiment_id, chromium = check(args)
    except Usage as problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    server = None if tracking.is_server(uri) else Server(uri, args.out)
    try:
        base = uri.rstrip("/") if server is None else server.wait_until_up(args.timeout)
        client = tracking.client(uri)
        view = mlflow_view.comparison_url(client, uri, experiment_id, ui_url=base)
        charts = len(mlflow_view.opened_state(client, experiment_id, view)["compareRunCharts"])
        width, height = args.window_size
        failed = False
        with Browser(chromium, width, height) as browser:
            for name, mode in SHOTS:
                url = view.replace("compareRunsMode=CHART", f"compareRunsMode={mode}")
                path = os.path.join(args.out, name)
                rendered = browser.screenshot(url, RENDERED[mode].format(charts=max(charts, 1)), path, args.timeout)
                failed |= not rendered
                print(f"{path}{'' if rendered else '  (NOT fully rendered within --timeout)'}\n    {url}")
        return 1 if failed else 0
    finally:
        if server is not None:
            stop(server.process)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", help="tracking store: sqlite:///PATH.db, a .db file, an MLflow file-store folder, "
                                      "or a tracking server http://HOST:PORT")
    parser.add_argument("experiment", help="experiment name (a sweep spec's `name`)")
    parser.add_argument("--out", default="mlflow_screenshots", help="folder for the PNGs (default: %(default)s)")
    parser.add_argument("--window-size", default="1600,1000", type=window_size, help="WIDTH,HEIGHT in pixels")
    parser.add_argument("--timeout", default=180.0, type=float,
                        help="seconds to wait for the server and for each page to render (default: %(default)s)")
    return parser.parse_args(argv)


def window_size(text: str) -> tuple[int, int]:
    """WIDTH,HEIGHT as two positive integers."""
    try:
        width, height = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTH,HEIGHT, got {text!r}") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"expected positive WIDTH,HEIGHT, got {text!r}")
    return width, height


def check(args: argparse.Namespace) -> tuple[str, str, str]:
    """The store's URI, the experiment's id and the Chromium binary, or a Usage error naming what is wrong."""
    chromium = shutil.which("chromium")
    if chromium is None:
        raise Usage("chromium is not installed (apt-get update && apt-get install -y chromium)")
    uri = tracking.resolve_tracking_uri(args.store)
    if uri.startswith("file://"):
        os.environ.setdefault(FILE_STORE_OPT_IN, "true")  # MLflow 3 refuses folder stores unless told
    if not tracking.is_server(uri):
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else urlparse(uri).path
        if not os.path.exists(path):
            raise Usage(f"no tracking store at {path}")
    try:
        tracking.check_tracking(uri)
        experiment = tracking.client(uri).get_experiment_by_name(args.experiment)
    except Exception as exc:  # noqa: BLE001 - any store failure is reported as one line
        raise Usage(f"cannot read the tracking store {uri}: {exc}") from None
    if experiment is None or experiment.lifecycle_stage == "deleted":
        raise Usage(f"no experiment named '{args.experiment}' in {uri}")
    return uri, experiment.experiment_id, chromium


class Server:
    """An MLflow server for a store on 127.0.0.1 and a free port, in its own process group, logging to a file."""

    def __init__(self, uri: str, out: str):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        root = tracking.artifact_root(uri)
        if root:
            command += ["--default-artifact-root", root]
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = os.path.join(out, "mlflow_server.log")
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner: the UI only reads
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)

    def wait_until_up(self, timeout_s: float) -> str:
        """The server's base URL once its /health answers 200; exits 1 if it stops or does not answer in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"the MLflow server stopped (exit {self.process.returncode}); see {self.log_path}")
            try:
                if tracking.health_status(self.base_url, timeout_s=5) == 200:
                    return self.base_url
            except requests.RequestException:
                pass
            time.sleep(1)
        sys.exit(f"the MLflow server did not answer within {timeout_s:.0f} s; see {self.log_path}")


def stop(process: subprocess.Popen) -> None:
    """Stop `process` and the process group it leads (started with start_new_session): SIGTERM, then SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages
    separated by NUL bytes on file descriptors 3 and 4), one page of WIDTH x HEIGHT."""

    def __init__(self, chromium: str, width: int, height: int):
        self.profile = tempfile.TemporaryDirectory()
        to_browser, self.commands = os.pipe()
        self.replies, from_browser = os.pipe()
        command = [chromium, "--headless", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                   "--no-first-run", "--no-default-browser-check", f"--user-data-dir={self.profile.name}",
                   f"--window-size={width},{height}", "--remote-debugging-pipe"]
        if os.geteuid() == 0:
            command.append("--no-sandbox")  # Chromium refuses to run its sandbox as root

        def pipes_as_3_and_4():
            reads, writes = os.dup(to_browser), os.dup(from_browser)  # copies first: the pipes may be fds 3 and 4
            os.dup2(reads, 3)
            os.dup2(writes, 4)

        self.process = subprocess.Popen(command, pass_fds=(3, 4), preexec_fn=pipes_as_3_and_4,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        os.close(to_browser)
        os.close(from_browser)
        self.last_id = 0
        self.pending = b""
        self.session = None
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.send("Browser.close", timeout_s=10)
            self.process.wait(10)
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            stop(self.process)
        for fd in (self.commands, self.replies):
            os.close(fd)
        self.profile.cleanup()

    def send(self, method: str, timeout_s: float = 60, **params) -> dict:
        """Call one DevTools method and return its result (events in between are skipped)."""
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            while b"\0" not in self.pending:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.replies], [], [], left)[0]:
                    raise RuntimeError(f"Chromium did not answer {method} within {timeout_s:.0f} s")
                chunk = os.read(self.replies, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium exited")
                self.pending += chunk
            raw, self.pending = self.pending.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def screenshot(self, url: str, rendered: str, path: str, timeout_s: float) -> bool:
        """Open `url`, wait until the expression `rendered` has held for SETTLE_S (closing MLflow's assistant panel
        meanwhile), and save a PNG of the window to `path`. False when it did not render within `timeout_s` (the
        PNG then shows the page as it was)."""
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + timeout_s
        since = None
        while time.monotonic() < deadline:
            self.evaluate(CLOSE_ASSISTANT)
            if self.evaluate(rendered):
                since = since or time.monotonic()
                if time.monotonic() - since >= SETTLE_S:
                    break
            else:
                since = None
            time.sleep(0.5)
        data = self.send("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as png:
            png.write(base64.b64decode(data))
        return since is not None and time.monotonic() - since >= SETTLE_S


if __name__ == "__main__":
    sys.exit(main())
