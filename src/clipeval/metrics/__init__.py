"""Pure metrics over score matrices and score tables: ranking, retrieval metrics and chance, bootstrap, comparisons."""
