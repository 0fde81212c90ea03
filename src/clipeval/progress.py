"""Progress bars that read well in a terminal and in a log file.

Every bar in the project comes from :func:`progress_bar` (``tqdm.auto`` underneath). In a terminal it
redraws as usual. When its stream is not a terminal (``make reproduce > run.log``, a CI log, an
executed notebook's output), a bar that redraws every batch would write thousands of lines, so
it redraws at most once every :data:`LOG_INTERVAL_S` seconds, plus its final state.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """A tqdm bar (same arguments); outside a terminal it updates every :data:`LOG_INTERVAL_S` seconds at most."""
    stream = kwargs.get("file") or sys.stderr
    if not getattr(stream, "isatty", lambda: False)():
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
    return tqdm(iterable, **kwargs)
