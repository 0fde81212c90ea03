"""Progress bars that read well in a terminal and in a log file.

Every bar in the project comes from :func:`progress_bar` (``tqdm`` underneath). In a terminal it
redraws as usual. When its stream is not a terminal (``make reproduce > run.log``, a CI log, an
executed notebook's output), a bar that redraws every batch would write thousands of lines, so
it redraws at most once every :data:`LOG_INTERVAL_S` seconds, plus its final state; there a
``set_postfix`` (the loss of a training step...) waits for the next redraw instead of forcing one.
The text bar is used in notebooks too: ``tqdm.auto``'s widget needs ipywidgets, and without them
it prints a warning into every executed notebook.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


class _LogBar(tqdm):
    """A bar for a log: its postfix is shown at the next timed redraw, not written at every step."""

    def set_postfix(self, ordered_dict=None, refresh=False, **kwargs):
        super().set_postfix(ordered_dict, refresh=refresh, **kwargs)


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """A tqdm bar (same arguments); outside a terminal it updates every :data:`LOG_INTERVAL_S` seconds at most."""
    stream = kwargs.get("file") or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(iterable, **kwargs)
    kwargs.setdefault("mininterval", LOG_INTERVAL_S)
    return _LogBar(iterable, **kwargs)
