"""The embedding engine: the one read -> decode -> preprocess -> encode path, its cache and its stage timings."""
