"""Training batches straight from the packed memory map: no per-file reads, no per-image Python.

A batch is one fancy-index gather from the ``(N, 96, 96, 3)`` uint8 memmap (sorted indices, so pages are
read in order), handed over as a uint8 tensor: four times less to copy to the device than float32, and
augmentation then runs batch-wise on the device (``hcd_kit.training.augment``). A background thread prepares the
next batches while the model works on the current one, so the loader never starves a GPU; an error raised
while loading surfaces in the training loop.

Shuffling is seeded per epoch (``set_epoch``) so a resumed run sees the same order as an uninterrupted one.
Under DDP every rank draws the same global permutation and takes its own slice of each global batch, so
two processes of batch ``b`` see exactly what one process of batch ``2b`` sees.

    loader = BatchLoader(store.images, store.labels, indices=train_idx, batch_size=256, seed=0)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:
            x = batch.images.to(device, non_blocking=True)   # uint8 (B, 96, 96, 3)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Batch:
    images: torch.Tensor  # uint8 (B, H, W, 3)
    labels: torch.Tensor | None  # float32 (B,)
    index: np.ndarray  # int64 (B,) rows of the store


class BatchLoader:
    """Iterable of ``Batch`` over ``images[indices]`` (see module docstring)."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        indices: np.ndarray | None = None,
        batch_size: int = 256,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        prefetch: int = 3,
        pin_memory: bool = False,
        threads: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in a world of {world_size}")
        # a plain ndarray view of a memmap: indexing an np.memmap wraps every result in a memmap object
        self.images = images.view(np.ndarray) if isinstance(images, np.memmap) else images
        self.labels = None if labels is None else np.asarray(labels)
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.prefetch = prefetch
        self.pin_memory = pin_memory
        # One gather thread measured fastest on 2 cores (a second one only competes with the training loop); a
        # GPU host (pin_memory) gets two, so gathering + pinning the next batch never trails a fast GPU's step.
        self.threads = max(1, threads if threads is not None else 2 if pin_memory else 1)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> list[np.ndarray]:
        order = self.indices
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        step = self.batch_size * self.world_size
        chunks = [order[i : i + step] for i in range(0, len(order), step)]
        if chunks and len(chunks[-1]) < step and (self.drop_last or len(chunks[-1]) < self.world_size):
            chunks.pop()  # a rank must never get an empty batch
        return chunks

    def rank_batches(self) -> list[np.ndarray]:
        """Row indices of this rank's batches for the current epoch."""
        if self.world_size == 1:
            return self._global_batches()
        return [np.array_split(c, self.world_size)[self.rank] for c in self._global_batches()]

    def __len__(self) -> int:
        return len(self.rank_batches())

    def _load(self, idx: np.ndarray) -> Batch:
        idx = np.sort(idx)  # in-order page access; order inside a batch does not matter
        if self.pin_memory:  # gather straight into page-locked memory (torch's caching host allocator reuses it
            # once the non-blocking copy that read it is done): one copy of the batch instead of two
            x = torch.empty(
                (len(idx), *self.images.shape[1:]), dtype=torch.from_numpy(self.images[:0]).dtype, pin_memory=True
            )
            np.take(self.images, idx, axis=0, out=x.numpy())
        else:
            x = torch.from_numpy(np.ascontiguousarray(self.images[idx]))
        y = None if self.labels is None else torch.from_numpy(self.labels[idx].astype(np.float32))
        if self.pin_memory and y is not None:
            y = y.pin_memory()
        return Batch(images=x, labels=y, index=idx)

    def __iter__(self) -> Iterator[Batch]:
        batches = self.rank_batches()
        if self.prefetch <= 0:
            for idx in batches:
                yield self._load(idx)
            return
        # background thread(s) gather the next batches while the caller trains on this one; results come
        # in order (futures are consumed in submission order, whatever thread finishes first), at most
        # `prefetch` ahead.
        pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="hcd-loader")
        pending: deque[Future] = deque()
        try:
            for idx in batches:
                pending.append(pool.submit(self._load, idx))
                if len(pending) > self.prefetch:
                    yield pending.popleft().result()  # re-raises a worker's error here
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
