"""The one exception type for problems a user can fix (unknown experiment, unreachable tracking store)."""


class AnalysisError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits with code 2."""
