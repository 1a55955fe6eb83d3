"""Comparisons: one prompt set or dataset against several targets (sibling
jobs over the same items), the grid of rows by targets, and reviews
(ratings of cells, notes on rows)."""
