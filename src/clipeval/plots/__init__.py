"""Figures only: every function takes computed tables or arrays and returns (and optionally saves)
a matplotlib figure. No model calls and no metric computation here.
"""
