"""Two packed image arrays read as one, so a training loader can draw from the train store and the test store.

``StackedImages(first, second)`` presents rows ``0 .. len(first)-1`` of ``first`` followed by ``second``: row
``len(first) + k`` is ``second[k]``. Indexing with an array of rows gathers from each memory map only what the
batch needs; nothing is copied up front, so RAM use stays independent of either store's size. ``BatchLoader``
takes it in place of an array (it needs ``len`` and indexing with sorted int64 rows).

    images = StackedImages(train.images, test.images)
    labels = stacked_labels(train.labels, len(test), test_rows, test_labels)   # -1 for unlabelled test rows
    loader = BatchLoader(images, labels, indices=np.r_[train_rows, len(train) + test_rows])
"""

from __future__ import annotations

import numpy as np


def _plain(a: np.ndarray) -> np.ndarray:
    # indexing an np.memmap wraps every result in a memmap object; a plain view does not
    return a.view(np.ndarray) if isinstance(a, np.memmap) else a


class StackedImages:
    """``first`` then ``second`` (same item shape and dtype) as one read-only indexable array."""

    def __init__(self, first: np.ndarray, second: np.ndarray) -> None:
        if first.shape[1:] != second.shape[1:] or first.dtype != second.dtype:
            raise ValueError(f"cannot stack {first.shape} {first.dtype} and {second.shape} {second.dtype}")
        self.first, self.second = _plain(first), _plain(second)
        self.split = len(first)
        self.shape = (len(first) + len(second), *first.shape[1:])
        self.dtype = first.dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        if isinstance(rows, slice):
            rows = np.arange(len(self))[rows]
        idx = np.asarray(rows)
        if idx.dtype == bool or not np.issubdtype(idx.dtype, np.integer):
            raise IndexError("StackedImages takes integer rows (or a slice)")
        idx = np.where(idx < 0, idx + len(self), idx)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row out of range for {len(self)} images")
        if idx.ndim == 0:
            i = int(idx)
            return self.first[i] if i < self.split else self.second[i - self.split]
        low = idx < self.split
        if low.all():  # the common case, e.g. a validation batch: one gather from the first array
            return self.first[idx]
        if not low.any():
            return self.second[idx - self.split]
        out = np.empty((*idx.shape, *self.shape[1:]), self.dtype)
        out[low] = self.first[idx[low]]
        out[~low] = self.second[idx[~low] - self.split]
        return out


def stacked_labels(first: np.ndarray, n_second: int, rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Labels for ``StackedImages(first_images, second_images)``: ``first``, then -1 for each of the ``n_second``
    rows of the second array except ``rows``, which get ``labels``. Only rows with a label >= 0 may be drawn."""
    second = np.full(n_second, -1, np.int64)
    second[np.asarray(rows, np.int64)] = np.asarray(labels, np.int64)
    return np.concatenate([np.asarray(first, np.int64), second])
