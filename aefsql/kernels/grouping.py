"""Indices grouped by key: how the kernels split their work by file, tile, year or cell."""

from __future__ import annotations

import numpy as np


def group_indices(keys: np.ndarray, indices: np.ndarray) -> dict:
    """{key: the indices (ascending) whose key it is}, for the given indices."""
    if indices.size == 0:
        return {}
    chosen = keys[indices]
    if chosen.dtype == object:
        # np.unique sorts Python objects (seconds for millions of URLs, though an area has one
        # or two): number the distinct keys in a dict first, and group the numbers.
        numbers: dict = {}
        codes = np.fromiter(
            (numbers.setdefault(k, len(numbers)) for k in chosen), np.int64, chosen.size
        )
        firsts, inverse = np.unique(codes, return_inverse=True)
        names = list(numbers)
        unique = np.array([names[c] for c in firsts], dtype=object)
    else:
        unique, inverse = np.unique(chosen, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(1, unique.size))
    return dict(zip(unique.tolist(), np.split(indices[order], bounds), strict=True))
