"""The optional stacks of clipeval, imported only where used, and the one error a missing one gives.

``notebooks`` (papermill, nbformat, nbconvert, Jupyter: ``run-notebooks`` and the report), ``ray`` (the Ray
executor) and ``finder`` (faiss: the finder's approximate search); ``make env`` installs every extra and ``dev``.
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
