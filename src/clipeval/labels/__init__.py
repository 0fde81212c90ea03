"""Pseudo-labelling: build retrieval evaluation sets from unlabelled images, and measure the labels' own error."""
