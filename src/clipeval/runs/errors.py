"""Expected failures and the one place they become a one-line stop.

A bad checkpoint spec, a hub name with no network, an unusable pairs table, an extra not
installed: the user needs one line saying what is wrong, not a stack trace. The CLI prints
``error: ...`` and exits with 2; a notebook cell run inside :func:`one_line_errors` stops with
the same line.
"""

from __future__ import annotations

import contextlib

from clipeval.data.options import PairsTableError
from clipeval.extras import MissingExtra
from clipeval.layout import RunFolderMismatch, RunIncomplete
from clipeval.models.registry import CheckpointError


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names it, the error line, and the executed copy to open."""


# What stops a notebook with one line: the user's input (or output folder), not a bug, is at fault.
NOTEBOOK_STOPS = (CheckpointError, PairsTableError, RunFolderMismatch, RunIncomplete)
# The command line also reports bad arguments and missing files in one line.
EXPECTED_ERRORS = (*NOTEBOOK_STOPS, NotebookFailed, MissingExtra, FileNotFoundError, ValueError)


@contextlib.contextmanager
def one_line_errors():
    """Turn a checkpoint or pairs-table error inside the block into ``SystemExit("error: ...")``.

    Jupyter shows a ``SystemExit`` as its message alone, so the executed notebook ends with the
    one line; papermill reports the notebook as failed.
    """
    try:
        yield
    except NOTEBOOK_STOPS as error:
        raise SystemExit(f"error: {error}") from None
