"""Object stores (`s3://`, `gs://`, `abfs://`, `file://`, ... through fsspec) as a sweep's storage, and the node-local
cache that a trial reads from and writes to.

Object stores have no rename, so a folder is written file by file in an order that makes it whole or absent to every
reader: its files, then `manifest.json` (the sha256 and size of each file, the finishing file's included), then the
finishing file (`last`). A reader that finds the finishing file finds the manifest, and every file it fetches is
checked against it before it is put, atomically, into the node cache: a file in the cache is one that matched.

Credentials and endpoints come from where the file-system library looks for them (for S3: AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE or ~/.aws, an instance or pod role; AWS_ENDPOINT_URL for an
S3-compatible store); nothing here writes, logs or prints them, and a URI that carries a password is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from urllib.parse import urlsplit

from .errors import ClusterError

CACHE_ENV = "TICKETS_CACHE"  # the node-local cache folder (default: TMPDIR/bert-tickets-cache)
MANIFEST = "manifest.json"
DOWNLOAD_LOG = "downloads.jsonl"  # one JSON line per file fetched into this node's cache
_CHUNK = 1 << 20
_VERSION_KEYS = ("ETag", "etag", "md5Hash", "generation", "content_md5", "mtime", "LastModified", "last_modified")


def is_uri(location: str) -> bool:
    """True when `location` is a URI (`s3://bucket/prefix`, `file:///path`), not a folder."""
    return "://" in location


def node_cache() -> str:
    """This node's cache folder: $TICKETS_CACHE, else `bert-tickets-cache` in the temporary folder."""
    return os.path.abspath(os.environ.get(CACHE_ENV) or os.path.join(tempfile.gettempdir(), "bert-tickets-cache"))


def uri_slug(uri: str) -> str:
    """A short name for `uri` that is safe as a folder name (its place in a node cache)."""
    return hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]


def file_sha256(path: str) -> str:
    """The sha256 of a local file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def _reason(exc: BaseException) -> str:
    """The first line of what a store client said, for a one-line error."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class ObjectStore:
    """A folder-like prefix in an object store (or any fsspec file system), addressed by paths relative to it."""

    def __init__(self, uri: str):
        from fsspec.core import url_to_fs

        parts = urlsplit(uri)
        if parts.password:
            raise ClusterError(f"'{parts.scheme}://{parts.hostname}{parts.path}' carries a password: give credentials "
                               "through the environment or a profile (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...), never in "
                               "the URI, which is logged")
        self.uri = uri.rstrip("/")
        try:
            local = {"auto_mkdir": True} if parts.scheme in ("file", "local") else {}  # folders appear as in a store
            # A fresh instance: fsspec's cached one would keep the endpoint and credentials of the environment it was
            # first made in.
            self.fs, self.base = url_to_fs(self.uri, use_listings_cache=False, skip_instance_cache=True, **local)
        except ImportError as exc:
            raise ClusterError(f"'{self.uri}' needs a file-system package that is not installed ({exc})") from None
        except ValueError as exc:
            raise ClusterError(f"'{self.uri}' is not a storage URI this tool can use ({exc}); use s3://, gs://, "
                               "abfs:// or file://, or a folder") from None

    def __getstate__(self) -> dict:
        return {"uri": self.uri}  # rebuilt from the environment of the process that unpickles it

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["uri"])

    def _path(self, rel: str) -> str:
        return f"{self.base}/{rel}".rstrip("/") if rel else self.base

    def url(self, rel: str) -> str:
        """The URI of `rel`."""
        return f"{self.uri}/{rel}" if rel else self.uri

    def check_writable(self, what: str) -> None:
        """Fail with one line unless an object can be written, read back and deleted under the prefix."""
        probe = f".write-check-{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
        try:
            self.write_bytes(probe, b"ok")
            if self.read_bytes(probe) != b"ok":
                raise OSError("an object written could not be read back")
            self.fs.rm_file(self._path(probe))
        except Exception as exc:  # noqa: BLE001 - every client error means the same to the user
            raise ClusterError(f"{what} '{self.uri}' cannot be reached or written ({_reason(exc)}); check the URI, "
                               "the credentials (AWS_PROFILE / AWS_ACCESS_KEY_ID ...) and the endpoint "
                               "(AWS_ENDPOINT_URL)") from None

    def exists(self, rel: str) -> bool:
        """True when the object `rel` exists."""
        return self.fs.exists(self._path(rel))

    def read_bytes(self, rel: str) -> bytes | None:
        """The bytes of object `rel`, or None when it does not exist."""
        try:
            return self.fs.cat_file(self._path(rel))
        except FileNotFoundError:
            return None

    def read_json(self, rel: str) -> dict | None:
        """The JSON object `rel`, or None when it does not exist."""
        data = self.read_bytes(rel)
        return None if data is None else json.loads(data)

    def remove(self, rel: str) -> None:
        """Delete object `rel` when it exists."""
        try:
            self.fs.rm_file(self._path(rel))
        except FileNotFoundError:
            pass

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write object `rel` (an object appears whole or not at all)."""
        self.fs.pipe_file(self._path(rel), data)

    def files(self, rel: str) -> set[str]:
        """Every object under the folder `rel`, as paths relative to that folder."""
        prefix = self._path(rel).rstrip("/") + "/"
        try:
            found = self.fs.find(prefix)
        except FileNotFoundError:
            return set()
        return {path[len(prefix):] for path in found if path.startswith(prefix)}

    def versions(self, rel: str) -> dict[str, str]:
        """Every object under the folder `rel` with its size and version (ETag, generation or mtime), to tell when a
        copy is out of date."""
        prefix = self._path(rel).rstrip("/") + "/"
        try:
            found = self.fs.find(prefix, detail=True)
        except FileNotFoundError:
            return {}
        return {path[len(prefix):]: f"{info.get('size')}:{next((info[k] for k in _VERSION_KEYS if k in info), '')}"
                for path, info in found.items() if path.startswith(prefix) and info.get("type") != "directory"}

    def put_folder(self, local_dir: str, rel: str, last: str | None = None) -> None:
        """Upload the files of `local_dir` (not its subfolders) to the folder `rel`: the files, `manifest.json`, then
        `last` (when given), so that a reader that sees `last` sees everything."""
        names = sorted(n for n in os.listdir(local_dir) if os.path.isfile(os.path.join(local_dir, n))
                       and not n.startswith(".") and n != MANIFEST)
        manifest = {n: {"sha256": file_sha256(os.path.join(local_dir, n)),
                        "size": os.path.getsize(os.path.join(local_dir, n))} for n in names}
        for name in names:
            if name != last:
                self.fs.put_file(os.path.join(local_dir, name), self._path(_join(rel, name)))
        record = {"files": manifest, "last": last if last in manifest else None}
        self.write_bytes(_join(rel, MANIFEST), json.dumps(record, indent=1, sort_keys=True).encode())
        if last in manifest:
            self.fs.put_file(os.path.join(local_dir, last), self._path(_join(rel, last)))

    def manifest(self, rel: str) -> dict[str, dict] | None:
        """The manifest of the folder `rel` (file name -> sha256 and size), or None when it has none."""
        data = self.read_json(_join(rel, MANIFEST))
        return None if data is None else data["files"]

    def fetch(self, rel: str, names: list[str], local_dir: str, manifest: dict[str, dict] | None = None) -> None:
        """Make `local_dir` hold the files `names` of the folder `rel`, each checked against the folder's manifest
        (read here unless given); a file already there with the right sha256 is kept. Files are put in the order
        given (put a finishing file last)."""
        manifest = self.manifest(rel) if manifest is None else manifest
        os.makedirs(local_dir, exist_ok=True)
        for name in names:
            target = os.path.join(local_dir, name)
            expected = (manifest or {}).get(name, {}).get("sha256")
            if manifest is not None and expected is None:
                raise ClusterError(f"'{self.url(rel)}' has no {name} in its manifest (its upload was cut short?)")
            if os.path.isfile(target) and (expected is None or file_sha256(target) == expected):
                continue
            self._download(_join(rel, name), target, expected)

    def _download(self, rel: str, target: str, expected: str | None) -> None:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".fetch-")
        os.close(fd)
        try:
            started = time.time()
            self.fs.get_file(self._path(rel), tmp)
            if expected is not None and file_sha256(tmp) != expected:
                raise ClusterError(f"'{self.url(rel)}' does not match the sha256 its manifest records (damaged in "
                                   "the store?); delete its folder in the store to compute it again")
            os.replace(tmp, target)
            log_download(self.url(rel), os.path.getsize(target), time.time() - started)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def fetch_tree(self, rel: str, local_dir: str) -> None:
        """Make `local_dir` a copy of everything under the folder `rel` (its listing recorded beside it, so a later
        call on this node fetches again only when the store's copy changed)."""
        from filelock import FileLock

        listing = self.versions(rel)
        if not listing:
            raise ClusterError(f"'{self.url(rel)}' holds no files")
        record = local_dir.rstrip("/") + ".listing.json"
        os.makedirs(os.path.dirname(record), exist_ok=True)
        with FileLock(record + ".lock"):
            if os.path.isfile(record) and os.path.isdir(local_dir):
                with open(record) as handle:
                    if json.load(handle) == listing:
                        return
            tmp = tempfile.mkdtemp(dir=os.path.dirname(record), prefix=".fetch-")
            try:
                for name in sorted(listing):
                    os.makedirs(os.path.dirname(os.path.join(tmp, name)), exist_ok=True)
                    started = time.time()
                    self.fs.get_file(self._path(_join(rel, name)), os.path.join(tmp, name))
                    log_download(self.url(_join(rel, name)), os.path.getsize(os.path.join(tmp, name)),
                                 time.time() - started)
                shutil.rmtree(local_dir, ignore_errors=True)
                os.replace(tmp, local_dir)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            with open(record, "w") as handle:
                json.dump(listing, handle)

    def tune_location(self, rel: str):
        """(pyarrow file system, path) of the folder `rel`: Ray Tune's RunConfig(storage_filesystem, storage_path)."""
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        return PyFileSystem(FSSpecHandler(self.fs)), self._path(rel)


def log_download(url: str, size: int, seconds: float) -> None:
    """Append what this process fetched into the node cache to the cache's download log (no credentials: the URI,
    the size, the time, the node and process)."""
    entry = {"url": url, "bytes": size, "seconds": round(seconds, 4), "node_id": _node_id(),
             "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
    os.makedirs(node_cache(), exist_ok=True)
    with open(os.path.join(node_cache(), DOWNLOAD_LOG), "a") as handle:
        handle.write(json.dumps(entry) + "\n")


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - a download outside Ray (the driver before Ray starts) has no node id
        return None


def fetch_copy(uri: str) -> str:
    """This node's copy of the folder at `uri` (fetched on first use, and again only when the store's copy changed);
    one line naming the URI when it cannot be reached or holds nothing."""
    local = os.path.join(node_cache(), "data", uri_slug(uri))
    store = ObjectStore(uri)
    try:
        store.fetch_tree("", local)
    except ClusterError:
        raise
    except Exception as exc:  # noqa: BLE001 - every client error means the same to the user
        raise ClusterError(f"'{store.uri}' cannot be read ({_reason(exc)}); check the URI, the credentials and the "
                           "endpoint (AWS_ENDPOINT_URL)") from None
    with open(local + ".source", "w") as handle:
        handle.write(store.uri)
    return local


def copy_source(folder: str | None) -> str | None:
    """The URI a node-cache copy made by `fetch_copy` was fetched from (None for any other folder)."""
    if folder is None or not os.path.isfile(folder.rstrip("/") + ".source"):
        return None
    with open(folder.rstrip("/") + ".source") as handle:
        return handle.read().strip()
