"""`python -m cluster up|down|runtime-env`: local services for sweeps, and the job upload for a remote cluster."""

from __future__ import annotations

import argparse
import os
import sys

from .errors import ClusterError
from .services import DEFAULT_STATE_DIR, TRACKING_STORES

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cmd_up(args: argparse.Namespace) -> None:
    """Start a Ray head and an MLflow server on 127.0.0.1 (optionally the PostgreSQL server behind MLflow) and print
    how to submit a sweep to them."""
    from .runtime_env import write_runtime_env
    from .services import UpOptions, up

    options = UpOptions(args.port, args.dashboard_port, args.mlflow_port, args.num_cpus, args.num_gpus, args.tracking,
                        args.backend_store_uri, args.postgres_port, args.artifacts, args.node_ip_address)
    services = up(args.state_dir, options)
    runtime_env = os.path.join(os.path.abspath(args.state_dir), "runtime_env.yaml")
    write_runtime_env(PROJECT_ROOT, runtime_env)
    storage = os.path.abspath("sweep_storage")
    data = os.path.abspath(os.path.join(PROJECT_ROOT, "..", "shared", "data", "glue"))
    print(f"Ray head     {services.ray_address}  (dashboard {services.dashboard_url})")
    if options.networked:
        print(f"             worker nodes join with: RAY_AUTH_MODE=token ray start --address {services.ray_address} "
              "(the head's token copied to ~/.ray/auth_token there)")
    print(f"MLflow       {services.tracking_uri}  (store {services.backend_store_uri}, artifacts {services.artifacts})")
    if services.postgres_pgid is not None:
        print(f"PostgreSQL   127.0.0.1:{services.postgres_port}  (data {services.postgres_dir}/data, password file "
              f"{services.postgres_dir}/pgpass)")
    print(f"logs         {', '.join(services.logs.values())}")
    auth = f"RAY_AUTH_MODE={services.auth_mode} "
    print("\nsubmit a sweep as a Ray job (paths are absolute: the job runs in an unpacked copy of this folder):")
    print(f"  {auth}ray job submit --address {services.dashboard_url} --working-dir . --runtime-env {runtime_env} -- \\\n"
          f"    python -m sweeps sweeps/quickstart.yaml --tracking-uri {services.tracking_uri} \\\n"
          f"    --storage {storage} --data-dir {data}")
    print("or drive it from this shell:")
    print(f"  {auth}RAY_ADDRESS={services.ray_address} MLFLOW_TRACKING_URI={services.tracking_uri} "
          "python -m sweeps sweeps/quickstart.yaml")
    print("stop them: python -m cluster down")


def cmd_down(args: argparse.Namespace) -> None:
    """Stop the Ray head and MLflow server that `up` started."""
    from .services import down

    services = down(args.state_dir)
    stopped = f"the Ray head ({services.ray_address}) and the MLflow server ({services.tracking_uri})"
    if services.postgres_pgid is not None:
        stopped += f" and PostgreSQL (127.0.0.1:{services.postgres_port}; its data stays in {services.postgres_dir})"
    print(f"stopped {stopped}")


def cmd_runtime_env(args: argparse.Namespace) -> None:
    """Write the runtime_env YAML for `ray job submit --runtime-env FILE` and report the upload size."""
    from .runtime_env import upload_files, write_runtime_env

    write_runtime_env(PROJECT_ROOT, args.out)
    sizes = upload_files(PROJECT_ROOT)
    print(f"wrote {args.out}: uploads {len(sizes)} files, {sum(sizes.values()) / 2**20:.1f} MiB")


def build_parser() -> argparse.ArgumentParser:
    """The `python -m cluster` argument parser."""
    parser = argparse.ArgumentParser(prog="python -m cluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    upp = sub.add_parser("up", help=cmd_up.__doc__, description=cmd_up.__doc__)
    upp.add_argument("--port", type=int, default=6379, help="Ray GCS port")
    upp.add_argument("--dashboard-port", type=int, default=8265, help="Ray dashboard / job submission port")
    upp.add_argument("--mlflow-port", type=int, default=5000)
    upp.add_argument("--num-cpus", type=int)
    upp.add_argument("--num-gpus", type=int)
    upp.add_argument("--tracking", choices=TRACKING_STORES, default="sqlite",
                     help="MLflow's store: a SQLite file, or a PostgreSQL server started here (data under --state-dir)")
    upp.add_argument("--backend-store-uri", help="an existing MLflow store instead: a SQLite file, or a PostgreSQL "
                                                 "database as postgresql://USER:PASSWORD@HOST:PORT/DB "
                                                 "(default: sqlite:///./mlruns.db)")
    upp.add_argument("--postgres-port", type=int, help="the PostgreSQL port with --tracking postgres (default: a free one)")
    upp.add_argument("--node-ip-address", help="a networked head for a multi-node cluster: Ray listens on this address "
                                               "and requires token authentication (default: one machine, loopback only)")
    upp.add_argument("--artifacts", default="mlartifacts", help="folder the MLflow server stores artifacts in")
    upp.set_defaults(func=cmd_up)
    downp = sub.add_parser("down", help=cmd_down.__doc__, description=cmd_down.__doc__)
    downp.set_defaults(func=cmd_down)
    for p in (upp, downp):
        p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="where `up` records what it started")
    env = sub.add_parser("runtime-env", help=cmd_runtime_env.__doc__, description=cmd_runtime_env.__doc__)
    env.add_argument("--out", default="runtime_env.yaml")
    env.set_defaults(func=cmd_runtime_env)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors print one line and return 2."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
