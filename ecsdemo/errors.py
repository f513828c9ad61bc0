"""The one exception type the CLI turns into a clean message (never a traceback)."""

from __future__ import annotations


class EcsdemoError(Exception):
    """A failure the user can act on.

    `message` says what is wrong, `hint` (optional) says what to do about it, and `exit_code` is what the
    command exits with.
    """

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 1):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"
