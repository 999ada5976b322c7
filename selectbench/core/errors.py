"""User mistakes (bad params or inputs): reported as one line naming the key, never a traceback."""
from __future__ import annotations


class UserError(Exception):
    """A mistake in params or inputs: reported as one line, never as a traceback."""


def fail(key: str, msg: str) -> UserError:
    return UserError(f"{key}: {msg}")
