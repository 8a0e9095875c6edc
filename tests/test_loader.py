"""BatchLoader: every row once per epoch, seeded per-epoch shuffling, DDP rank slices, worker errors surface."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hcd_kit.data import BatchLoader


def _images(n: int = 103) -> np.ndarray:
    # row i is filled with i % 256 so a batch's pixels say which rows it holds
    return np.broadcast_to((np.arange(n) % 256).astype(np.uint8)[:, None, None, None], (n, 96, 96, 3)).copy()


def _epoch(loader: BatchLoader, epoch: int) -> list[np.ndarray]:
    loader.set_epoch(epoch)
    return [b.index for b in loader]


def test_every_index_once_per_epoch_with_matching_pixels_and_labels():
    images, labels = _images(), np.arange(103) % 2
    subset = np.arange(3, 103, 2)
    loader = BatchLoader(images, labels, indices=subset, batch_size=8, seed=1)
    batches = list(loader)
    assert len(batches) == len(loader) == 7
    seen = np.concatenate([b.index for b in batches])
    assert sorted(seen.tolist()) == subset.tolist()
    for b in batches:
        assert b.images.dtype == torch.uint8 and b.images.shape[1:] == (96, 96, 3)
        assert torch.equal(b.images[:, 0, 0, 0], torch.from_numpy((b.index % 256).astype(np.uint8)))
        assert b.labels.dtype == torch.float32 and b.labels.tolist() == (b.index % 2).tolist()


def test_order_is_seeded_per_epoch():
    loader = BatchLoader(_images(), batch_size=10, seed=7)
    e0, e1 = _epoch(loader, 0), _epoch(loader, 1)
    assert [b.tolist() for b in e0] != [b.tolist() for b in e1]
    again = BatchLoader(_images(), batch_size=10, seed=7)
    assert [b.tolist() for b in _epoch(again, 1)] == [b.tolist() for b in e1]
    other = BatchLoader(_images(), batch_size=10, seed=8)
    assert [b.tolist() for b in _epoch(other, 1)] != [b.tolist() for b in e1]
    plain = BatchLoader(_images(), batch_size=10, shuffle=False)
    assert np.concatenate(_epoch(plain, 3)).tolist() == list(range(103))


def test_drop_last():
    assert [len(b) for b in _epoch(BatchLoader(_images(), batch_size=10, drop_last=True), 0)] == [10] * 10
    assert len(BatchLoader(_images(), batch_size=10).rank_batches()[-1]) == 3


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_partition_the_global_batch(world):
    images, b = _images(), 6
    single = BatchLoader(images, batch_size=b * world, seed=5, prefetch=0)
    ranks = [BatchLoader(images, batch_size=b, seed=5, rank=r, world_size=world) for r in range(world)]
    for epoch in (0, 1):
        glob = _epoch(single, epoch)
        per_rank = [_epoch(loader, epoch) for loader in ranks]
        assert len({len(p) for p in per_rank}) == 1  # every rank steps the same number of times
        for step, g in enumerate(glob[: len(per_rank[0])]):
            parts = [p[step] for p in per_rank]
            assert all(len(x) > 0 for x in parts)
            assert sorted(np.concatenate(parts).tolist()) == sorted(g.tolist())
        seen = np.concatenate([x for p in per_rank for x in p])
        assert len(np.unique(seen)) == len(seen)


def test_errors_in_the_worker_thread_reach_the_consumer():
    class Flaky(np.ndarray):
        def __getitem__(self, idx):
            if isinstance(idx, np.ndarray) and 50 in idx:
                raise OSError("disk went away")
            return super().__getitem__(idx)

    loader = BatchLoader(_images().view(Flaky), batch_size=10, shuffle=False, prefetch=2)
    got = []
    with pytest.raises(OSError, match="disk went away"):
        for batch in loader:
            got.append(batch)
    assert len(got) == 5


def test_stopping_early_does_not_hang():
    loader = BatchLoader(_images(), batch_size=2, prefetch=1)
    for k, _ in enumerate(loader):
        if k == 1:
            break
    assert sum(1 for _ in loader) == len(loader)  # a fresh iteration starts cleanly


def test_bad_arguments():
    with pytest.raises(ValueError):
        BatchLoader(_images(), batch_size=0)
    with pytest.raises(ValueError):
        BatchLoader(_images(), rank=2, world_size=2)


@pytest.mark.parametrize("threads", [2, 4])
def test_more_gather_threads_keep_order_and_content(threads):
    """A GPU host gathers with two threads (the default with pin_memory): the batches, their order and their
    pixels are exactly those of one thread and of no background thread at all, epoch after epoch."""
    images, labels = _images(), np.arange(103) % 2
    runs = []
    for kw in ({"prefetch": 0}, {"threads": 1}, {"threads": threads, "prefetch": 5}):
        loader = BatchLoader(images, labels, batch_size=8, seed=3, **kw)
        epochs = []
        for epoch in range(3):
            loader.set_epoch(epoch)
            epochs.append([(b.index.tolist(), b.images.numpy().copy(), b.labels.tolist()) for b in loader])
        runs.append(epochs)
    for other in runs[1:]:
        for e_ref, e in zip(runs[0], other):
            assert [b[0] for b in e] == [b[0] for b in e_ref] and [b[2] for b in e] == [b[2] for b in e_ref]
            assert all(np.array_equal(a[1], b[1]) for a, b in zip(e, e_ref))


def test_gather_threads_default_to_two_only_where_batches_are_pinned_for_a_gpu():
    assert BatchLoader(_images(), batch_size=8).threads == 1
    assert BatchLoader(_images(), batch_size=8, pin_memory=True).threads == 2
    assert BatchLoader(_images(), batch_size=8, pin_memory=True, threads=1).threads == 1
