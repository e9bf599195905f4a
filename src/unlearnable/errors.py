"""User-facing errors.

Anything a user can get wrong (a path, a field, a value) raises :class:`UserError`. The CLI turns it into one line
on stderr and exit code 2; library callers get an ordinary exception they can catch.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, reported as one line (no traceback) with exit code 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
