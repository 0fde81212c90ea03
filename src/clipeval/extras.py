"""The optional parts of clipeval and the one error a missing one gives.

The package's own dependencies are what it imports everywhere; these stacks are extras, imported
only where they are used: ``notebooks`` (papermill, nbformat, nbconvert, Jupyter: ``run-notebooks``
and the run report), ``ray`` (the Ray executor) and ``finder`` (faiss: the image finder's
approximate search). ``make env`` installs every extra (and ``dev``:
the test, lint and benchmark tools).
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """An optional stack is not installed; the message names the extra that installs it."""


def require(module: str, extra: str, needed_for: str) -> ModuleType:
    """Import ``module`` from the ``extra`` stack, or say which extra to install for ``needed_for``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtra(f"{needed_for} needs {module.split('.')[0]}, which is not installed: "
                           f"pip install 'clipeval[{extra}]' (make env installs every extra)") from error
