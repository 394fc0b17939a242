"""``InputError`` and ``one_line``: importable without JAX (command-line checks, ``--help``)."""

from __future__ import annotations

__all__ = ["InputError", "one_line"]


class InputError(ValueError):
    """Bad input from the user: the message is one line naming the file or option."""


def one_line(message: object, limit: int = 400) -> str:
    """Collapses a (possibly multi-line) message to one line of at most ``limit`` chars."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
