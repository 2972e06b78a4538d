"""The one exception type of the services layer: a user-fixable problem with Ray, MLflow or the upload."""


class ClusterError(Exception):
    """A user-facing error (an unreachable tracking server, a busy port, a missing state file): one line, exit 2."""
