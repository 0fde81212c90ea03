"""Figures only: every function takes computed tables or arrays and returns a matplotlib figure, saved as a PNG
when given ``path`` (atomically, :func:`clipeval.plots.save.save_figure`). No model calls and no metric computation.
"""
