"""The one exception type users see: a message that names the place (file, line, key) and the fix."""

from __future__ import annotations


class SeqsmithError(Exception):
    """A problem with the user's input or setup; the CLI prints it without a traceback."""
