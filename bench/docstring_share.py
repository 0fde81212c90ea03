"""The share of a package's lines that are module, class and function docstrings (issue 34's prose measure).

Usage: ``python bench/docstring_share.py src/clipeval [more paths ...]``: one line per path (a folder or a
file), and a total when there are several.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def docstring_lines(source: str) -> int:
    """The lines of ``source`` that its module, class and function docstrings span."""
    count = 0
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, DOCUMENTED) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                count += first.end_lineno - first.lineno + 1
    return count


def share(path: Path) -> tuple[int, int]:
    """(lines, docstring lines) of the ``.py`` files at ``path`` (a folder, searched recursively, or a file)."""
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    texts = [file.read_text() for file in files]
    return sum(len(text.splitlines()) for text in texts), sum(docstring_lines(text) for text in texts)


def main(paths: list[str]) -> None:
    totals = [0, 0]
    for name in paths:
        lines, docs = share(Path(name))
        totals[0] += lines
        totals[1] += docs
        print(f"{name}: {lines} lines, {docs} docstring lines, {docs / max(lines, 1):.1%}")
    if len(paths) > 1:
        print(f"total: {totals[0]} lines, {totals[1]} docstring lines, {totals[1] / max(totals[0], 1):.1%}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["src/clipeval"])
