"""A PostgreSQL server for MLflow's tracking store, as `python -m cluster up --tracking postgres` starts it.

Everything lives in one folder under the run folder: `data/` (the cluster, owned by the user the server runs as) and
`pgpass` (the generated password of the `mlflow` role, in libpq's password-file format, mode 0600). The server listens
on 127.0.0.1 only, with no Unix socket, and accepts password (SCRAM) logins only. Started by root it runs as the
`postgres` user, since `initdb` and `postgres` refuse to run as root; otherwise as the current user. The store URI
carries no password: the MLflow server finds it through `PGPASSFILE`.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from .errors import ClusterError

HOST = "127.0.0.1"
ROLE = "mlflow"
DATABASE = "mlflow"
SERVER_USER = "postgres"  # who runs the server when `cluster up` runs as root
PGPASS = "pgpass"
DATA = "data"
BIN_GLOB = "/usr/lib/postgresql/*/bin"  # Debian's layout of the server binaries, one folder per major version
STOP_SIGNAL = signal.SIGINT  # to the postmaster: a fast shutdown (sessions are ended, the data is flushed)


@dataclass
class Postgres:
    """A PostgreSQL cluster folder and the port its server listens on."""

    folder: str
    port: int

    @property
    def data_dir(self) -> str:
        """The cluster's data folder (initdb's -D)."""
        return os.path.join(self.folder, DATA)

    @property
    def pgpass(self) -> str:
        """The 0600 password file of the `mlflow` role (libpq's PGPASSFILE format)."""
        return os.path.join(self.folder, PGPASS)

    @property
    def uri(self) -> str:
        """The MLflow backend store URI of the `mlflow` database (no password: see `env`)."""
        return f"postgresql://{ROLE}@{HOST}:{self.port}/{DATABASE}"

    @property
    def env(self) -> dict[str, str]:
        """The environment a client of this server needs besides the URI: where the password is."""
        return {"PGPASSFILE": self.pgpass}


def server_binaries() -> str | None:
    """The folder holding `initdb` and `postgres` (the newest of /usr/lib/postgresql/*/bin, else PATH), or None."""
    for folder in sorted(glob.glob(BIN_GLOB), key=_major_version, reverse=True):
        if all(os.access(os.path.join(folder, name), os.X_OK) for name in ("initdb", "postgres")):
            return folder
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return os.path.dirname(found)
    return None


def _major_version(folder: str) -> int:
    name = os.path.basename(os.path.dirname(folder))
    return int(name) if name.isdigit() else -1


def server_account() -> pwd.struct_passwd:
    """The account the server runs as: `postgres` when this process is root, else the current user."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise ClusterError(f"PostgreSQL refuses to run as root and there is no `{SERVER_USER}` user; create one "
                           f"(useradd --system {SERVER_USER}) or run `cluster up` as an unprivileged user") from None


def prepare(folder: str, port: int, log_path: str) -> Postgres:
    """The cluster in `folder`, created (initdb, a generated password) on first use; reused as it is afterwards."""
    binaries = server_binaries()
    if binaries is None:
        raise ClusterError("the PostgreSQL server binaries are not installed (initdb, postgres; Debian: apt-get install "
                           "postgresql); or give an existing database with --backend-store-uri postgresql://...")
    server = Postgres(os.path.abspath(folder), port)
    account = server_account()
    os.makedirs(server.folder, exist_ok=True)
    _check_reachable(server.folder, account)
    if not os.path.isfile(server.pgpass):
        _write_private(server.pgpass, f"{HOST}:*:*:{ROLE}:{secrets.token_hex(24)}\n")
    if not os.path.isfile(os.path.join(server.data_dir, "PG_VERSION")):
        _initdb(binaries, server, account, log_path)
    return server


def start(server: Postgres, log_path: str) -> subprocess.Popen:
    """Start the server on 127.0.0.1:`server.port` (no Unix socket) in a process group of its own."""
    account = server_account()
    cmd = [os.path.join(server_binaries(), "postgres"), "-D", server.data_dir, "-p", str(server.port),
           "-c", f"listen_addresses={HOST}", "-c", "unix_socket_directories="]
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=server.data_dir, start_new_session=True, **_as_account(account))


def launch(folder: str, port: int, log_path: str, timeout_s: float = 120.0) -> tuple[Postgres, subprocess.Popen]:
    """Prepare the cluster in `folder` (on first use: initdb), start its server, wait until it accepts logins and
    create the `mlflow` database if missing; a server that fails on the way is killed."""
    server = prepare(folder, port, log_path)
    process = start(server, log_path)
    try:
        wait_ready(server, timeout_s, process, log_path)
        ensure_database(server)
    except BaseException:
        _kill_group(process)
        raise
    return server, process


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def wait_ready(server: Postgres, timeout_s: float, process: subprocess.Popen | None, log_path: str) -> None:
    """Wait until the server accepts the `mlflow` role's login; a ClusterError naming the log when it does not."""
    import psycopg

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            raise ClusterError(f"the PostgreSQL server exited during start-up; see {log_path}")
        try:
            _connect(server, "postgres").close()
            return
        except psycopg.OperationalError:
            time.sleep(0.5)
    raise ClusterError(f"the PostgreSQL server did not accept connections on {HOST}:{server.port} within "
                       f"{timeout_s:.0f} s; see {log_path}")


def ensure_database(server: Postgres) -> None:
    """Create the `mlflow` database when the cluster has none yet."""
    with _connect(server, "postgres") as connection:
        connection.autocommit = True
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
            connection.execute(f'CREATE DATABASE "{DATABASE}"')


def check_uri(uri: str, timeout_s: int = 10) -> None:
    """Fail with one line unless the PostgreSQL database a user-given `postgresql://` URI names accepts a login."""
    try:
        import psycopg
    except ImportError:
        raise ClusterError("the PostgreSQL driver is not installed (pip install 'psycopg[binary]'; scripts/setup.sh "
                           "installs it)") from None
    try:
        psycopg.connect(_libpq_dsn(uri), connect_timeout=timeout_s).close()
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ClusterError(f"cannot log in to PostgreSQL at {redact(uri)}: {reason}") from None


def redact(uri: str) -> str:
    """`uri` with any password replaced by `***` (for state files, logs and messages)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _libpq_dsn(uri: str) -> str:
    """A SQLAlchemy URI (`postgresql+psycopg://...`) as the plain `postgresql://` URI libpq reads."""
    scheme, rest = uri.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgresql") else uri


def _connect(server: Postgres, database: str):
    import psycopg

    old = os.environ.get("PGPASSFILE")
    os.environ["PGPASSFILE"] = server.pgpass
    try:
        return psycopg.connect(host=HOST, port=server.port, user=ROLE, dbname=database, connect_timeout=2)
    finally:
        os.environ.pop("PGPASSFILE") if old is None else os.environ.__setitem__("PGPASSFILE", old)


def _initdb(binaries: str, server: Postgres, account: pwd.struct_passwd, log_path: str) -> None:
    password = open(server.pgpass).read().strip().rsplit(":", 1)[1]
    pwfile = os.path.join(server.folder, "initdb.pw")
    _write_private(pwfile, password + "\n", account)
    os.makedirs(server.data_dir, mode=0o700, exist_ok=True)
    if account.pw_uid != os.geteuid():
        os.chown(server.data_dir, account.pw_uid, account.pw_gid)
    try:
        cmd = [os.path.join(binaries, "initdb"), "-D", server.data_dir, "-U", ROLE, f"--pwfile={pwfile}",
               "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C"]
        with open(log_path, "ab") as log:
            done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  cwd=server.folder, **_as_account(account))
    finally:
        os.remove(pwfile)
    if done.returncode != 0:
        shutil.rmtree(server.data_dir, ignore_errors=True)
        raise ClusterError(f"initdb failed for {server.data_dir}; see {log_path}")


def _as_account(account: pwd.struct_passwd) -> dict:
    """Popen arguments that run a command as `account` (none when it is this process's own user)."""
    if account.pw_uid == os.geteuid():
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _write_private(path: str, text: str, account: pwd.struct_passwd | None = None) -> None:
    """Write `text` to a new file only its owner (this user, or `account`) can read or write."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)
    if account is not None and account.pw_uid != os.geteuid():
        os.chown(path, account.pw_uid, account.pw_gid)


def _check_reachable(folder: str, account: pwd.struct_passwd) -> None:
    """Fail with one line when `account` cannot enter every folder on the way to `folder`."""
    if account.pw_uid == os.geteuid():
        return
    groups = {account.pw_gid, *os.getgrouplist(account.pw_name, account.pw_gid)}
    path = folder
    while True:
        info = os.stat(path)
        if info.st_uid == account.pw_uid:
            allowed = info.st_mode & 0o100
        elif info.st_gid in groups:
            allowed = info.st_mode & 0o010
        else:
            allowed = info.st_mode & 0o001
        if not allowed:
            raise ClusterError(f"the PostgreSQL server runs as user `{account.pw_name}`, which cannot enter {path} "
                               f"(mode {info.st_mode & 0o777:o}); give a --state-dir it can reach")
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent
