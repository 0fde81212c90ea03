"""The report's table helpers: values formatted once, every cell escaped, checkpoint names marked."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def format_value(value) -> str:
    """A table cell: integers with thousands separators, floats to 3 decimals (2 significant digits below 0.01)."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return ""
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) < 0.01:
            return f"{value:.2g}"
        return f"{value:.3f}"
    return str(value)


def html_table(frame: pd.DataFrame) -> str:
    """An escaped HTML table of ``frame`` (no index); text columns left-aligned, numbers right-aligned."""
    import pandas as pd
    frame = frame.reset_index(drop=True)
    text = {column for column in frame.columns if not pd.api.types.is_numeric_dtype(frame[column])}
    head = "".join(f'<th class="{"text" if c in text else "num"}">{html.escape(str(c).replace("_", " "))}</th>'
                   for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        cells = "".join(f'<td class="{"text" if c in text else "num"}">'
                        f'{html.escape(format_value(python_scalar(v)))}</td>'
                        for c, v in zip(frame.columns, record, strict=True))
        rows.append(f"<tr>{cells}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def python_scalar(value):
    """numpy scalars as Python ones, so :func:`format_value` sees ints and floats."""
    return value.item() if hasattr(value, "item") else value


def checkpoint_label(spec: str) -> str:
    """A checkpoint as the report names it: random-init ones say so."""
    from clipeval.models.catalogue import is_random_init

    return f"{spec} (RANDOM INIT)" if is_random_init(spec) else spec


def read_json(path: Path) -> dict:
    """A JSON file of the run folder."""
    return json.loads(path.read_text())


def render_table(path: Path) -> str:
    """A CSV file as it is."""
    import pandas as pd
    return html_table(pd.read_csv(path))
