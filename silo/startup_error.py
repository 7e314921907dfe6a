"""The one kind of error a silo reports at start-up: one line, with a hint, exit code 2.

Why a type of its own: start-up mistakes (a busy port, a typo in ``--grains``, a second
store on one data directory) are the user's to fix, so the CLI prints them as a single
line that says what to do instead of a traceback.
"""

from __future__ import annotations


class StartupError(Exception):
    """A silo cannot start; ``hint`` tells the user what to do about it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message + (f" (hint: {self.hint})" if self.hint else "")
        return " ".join(text.split())  # never more than one line on stderr
