"""Per-row caption checks: any Unicode text is a caption; nothing visible is not.

Captions are never rewritten here (no normalisation, no truncation: the encoder truncates
to its context length and counts it). The statuses are listed in
:data:`clipeval.data.images.STATUSES`.
"""

from __future__ import annotations

import unicodedata

import pandas as pd

# Whitespace, line/paragraph separators, control and format characters (zero-width space,
# BOM, bidi marks): a caption made only of these says nothing.
_INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})


def check_caption(text: object) -> tuple[str, str]:
    """Check one caption cell.

    Args:
        text: the cell value (a string, or ``None``/NaN/``pd.NA`` when the row has no caption).

    Returns:
        ``(status, error)``: ``("ok", "")``; ``("empty_caption", reason)`` for a missing, NaN,
        empty or invisible-only caption; ``("bad_caption", reason)`` for a non-text value.
    """
    if isinstance(text, str):
        if not text:
            return "empty_caption", "the caption is empty"
        if all(unicodedata.category(char) in _INVISIBLE_CATEGORIES for char in text):
            return "empty_caption", "the caption is only whitespace or invisible characters"
        return "ok", ""
    if text is None or (pd.api.types.is_scalar(text) and pd.isna(text)):
        return "empty_caption", "no caption in this row"
    return "bad_caption", f"the caption is a {type(text).__name__}, not text ({str(text)[:80]!r})"
