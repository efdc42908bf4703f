"""The error a user can fix: :class:`UserError`.

Anything the plugin refuses because of what the user gave it (an options value, a checkpoint, an image, an output
path, a run that diverged) raises a :class:`UserError` whose message is one line: what is wrong, where, and the fix.
The ``basicsr`` command prints that line last, without a traceback, and exits with status 2; any other exception is
a defect of the software and keeps its traceback. Standard library only, so that every layer can raise it.
"""

from __future__ import annotations

__all__ = ['UserError']


class UserError(ValueError):
    """A problem the user can fix, stated in one line (also a ``ValueError``, so existing handlers still catch it)."""
