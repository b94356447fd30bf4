"""The one exception type users see: a message that names the place (file, line, key) and the fix."""

from __future__ import annotations

import importlib
from typing import Any


class SeqsmithError(Exception):
    """A problem with the user's input or setup; the CLI prints it without a traceback."""


def import_extra(module: str, extra: str) -> Any:
    """An optional package, or the error that names the extra which installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SeqsmithError(
            f"{module} is not installed; install the {extra} extra: pip install 'seqsmith[{extra}]'"
        ) from None
