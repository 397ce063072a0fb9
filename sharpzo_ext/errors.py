"""The errors a user can fix by changing what they asked for: a configuration, a path, a file, a
model or data set. Each says what is wrong in one line; the command line prints it so, with exit
status 2 and no traceback. Every other exception is a defect and keeps its traceback."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """Base of the errors a user can fix (RunError, DataError, ModelError, DistributedError,
    the command line's own)."""
