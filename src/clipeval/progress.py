"""Progress bars that read well in a terminal and in a log file (docs/notebooks.md): every bar comes from
:func:`progress_bar`. Outside a terminal a bar that redrew every batch would write thousands of lines, so it
redraws at most every :data:`LOG_INTERVAL_S` seconds, and a ``set_postfix`` waits for that redraw.
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
