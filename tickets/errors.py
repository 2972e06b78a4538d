"""The one exception type for mistakes a user can fix (bad input, missing files, mismatched masks)."""


class TicketsError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits with code 2."""
