"""``hcd pseudo`` and ``hcd train --pseudo``: confident test predictions become extra training labels.

What a user sees: which ids are kept at a threshold, one-line refusals, and a run whose training parts hold the
pseudo-labelled test patches while every validation part, oof.csv and the CV AUC stay train-only. The training
loader is observed directly (a recording BatchLoader), so the test checks the rows and pixels really trained on.
Runs use the real shipped patches, resnet10t from scratch at 32 px, one epoch, so each takes seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import packed_subset
from typer.testing import CliRunner

from hcd_kit.cli import app
from hcd_kit.data import BatchLoader, StackedImages, open_store, read_pseudo
from hcd_kit.errors import DataError
from hcd_kit.fsutil import sha256_file

FAST = [
    "--model",
    "resnet10t",
    "--no-pretrained",
    "--epochs",
    "1",
    "--img-size",
    "32",
    "--batch-size",
    "16",
    "--device",
    "cpu",
    "--threads",
    "1",
    "--precision",
    "fp32",
]


def hcd(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(res, code: int, message: str) -> None:
    assert res.exit_code == code, (res.exit_code, res.output)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
    assert "Traceback" not in res.output


@pytest.fixture(scope="module")
def data(sample_root, tmp_path_factory) -> Path:
    """60 labelled and all 40 test patches of the shipped sample, packed, in 3 folds."""
    root = packed_subset(sample_root, tmp_path_factory.mktemp("pseudo") / "data", n_train=60, n_test=40, n_folds=3)
    return root


def store_test_ids(data) -> np.ndarray:
    return open_store(data / "packed", "test").ids


def write_submission(path: Path, ids, probs) -> Path:
    pd.DataFrame({"id": ids, "label": probs}).to_csv(path, index=False)
    return path


# ------------------------------------------------------------------------------------------ selection


HAND = [0.99, 0.95, 0.9499, 0.9, 0.5, 0.1, 0.05, 0.0500001, 0.01, 0.0]  # the first 10 test ids; the rest 0.5


@pytest.mark.parametrize(
    "flags, label1, label0, summary",
    [
        ([], [0, 1], [6, 8, 9], "kept 5 of 40 test predictions at confidence 0.95: 2 as label 1"),
        (["--min-confidence", "0.9"], [0, 1, 2, 3], [5, 6, 7, 8, 9], "kept 9 of 40"),  # 0.9 and 0.1 are kept
        (["--min-confidence", "0.9", "--max-per-class", "1"], [0], [9], "7 more confident ones left out"),
    ],
)
def test_pseudo_keeps_the_confident_predictions(data, tmp_path, flags, label1, label0, summary):
    ids = store_test_ids(data)
    probs = np.r_[HAND, np.full(len(ids) - len(HAND), 0.5)]
    order = np.random.default_rng(0).permutation(len(ids))  # any row order will do
    pred = write_submission(tmp_path / "sub.csv", ids[order], probs[order])
    out = tmp_path / "pseudo.csv"
    res = hcd("pseudo", "--pred", pred, "--data-dir", data, "--out", out, *flags)
    assert res.exit_code == 0, res.output
    assert summary in res.stdout and f"hcd train --data-dir {data} --pseudo {out}" in res.stdout
    assert out.read_text().splitlines()[0] == "id,label,prob"
    got = read_pseudo(out)
    kept = sorted(label1 + label0)
    assert list(got["id"]) == list(ids[kept])  # in the test store's order
    assert dict(zip(got["id"], got["label"])) == {**{ids[i]: 1 for i in label1}, **{ids[i]: 0 for i in label0}}
    assert np.allclose(got["prob"], probs[kept])


@pytest.mark.parametrize(
    "case, flags, message",
    [
        ("good", ["--min-confidence", "0.5"], "--min-confidence must be in (0.5, 1), got 0.5"),
        ("good", ["--min-confidence", "1"], "--min-confidence must be in (0.5, 1), got 1.0"),
        ("good", ["--max-per-class", "0"], "--max-per-class must be >= 1, got 0"),
        ("train ids", [], "60 of 60 ids are not in the packed test store"),
        ("3 foreign", [], "3 of 43 ids are not in the packed test store of"),
        ("header", [], "must have the columns id,label (has id,prob)"),
        ("not a probability", [], "1 label(s) are not probabilities in [0, 1]"),
        ("missing", [], "--pred: missing test predictions"),
        ("unsure", [], "lower --min-confidence"),
    ],
)
def test_pseudo_refusals_are_one_line(data, tmp_path, case, flags, message):
    ids = store_test_ids(data)
    pred = tmp_path / "sub.csv"
    probs = np.linspace(0, 1, len(ids))
    if case == "good":
        write_submission(pred, ids, probs)
    elif case == "train ids":
        write_submission(pred, open_store(data / "packed", "train").ids, 0.99)
    elif case == "3 foreign":
        write_submission(pred, [*ids, "a" * 40, "b" * 40, "c" * 40], np.r_[probs, 0.5, 0.5, 0.5])
    elif case == "header":
        pred.write_text("id,prob\n" + "".join(f"{i},0.9\n" for i in ids))
    elif case == "not a probability":
        write_submission(pred, ids, np.r_[7.0, probs[1:]])
    elif case == "unsure":
        write_submission(pred, ids, 0.5)
    out = tmp_path / "pseudo.csv"
    res = hcd("pseudo", "--pred", pred, "--data-dir", data, "--out", out, *flags)
    one_line_error(res, 2, message)
    if case in ("train ids", "3 foreign"):
        assert "(0 match" in res.stderr if case == "train ids" else "(40 match" in res.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("id,label\n", "lists no pseudo-labels"),
        ("id,prob\nx,0.9\n", "must have the columns id,label,prob"),
        ("id,label,prob\nx,2,0.9\n", "1 label(s) are not 0 or 1 (first: id x = '2')"),
        ("id,label,prob\nx,1,0.9\nx,1,0.9\n", "lists id x twice"),
        ("id,label,prob\nx,1,1.5\n", "1 prob(s) are not probabilities in [0, 1]"),
    ],
)
def test_a_malformed_pseudo_label_file_is_one_line(tmp_path, text, message):
    path = tmp_path / "pseudo.csv"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        read_pseudo(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_stacked_images_read_both_arrays_as_one():
    a = np.arange(5 * 2 * 2 * 3, dtype=np.uint8).reshape(5, 2, 2, 3)
    b = 200 + np.arange(3 * 2 * 2 * 3, dtype=np.uint8).reshape(3, 2, 2, 3)
    both, ref = StackedImages(a, b), np.concatenate([a, b])
    assert len(both) == 8 and both.shape == ref.shape
    for rows in ([0, 4, 5, 7], [1, 2], [6, 5], [7], np.array([], np.int64)):
        assert np.array_equal(both[np.array(rows, np.int64)], ref[np.array(rows, np.int64)])
    assert np.array_equal(both[6], ref[6]) and np.array_equal(both[-1], ref[-1]) and np.array_equal(both[3:7], ref[3:7])
    with pytest.raises(IndexError):
        both[np.array([8])]


# ------------------------------------------------------------------------------------------ training


class RecordingLoader(BatchLoader):
    """The real loader, keeping every training loader (shuffle=True) and the batches it handed out."""

    made: list[RecordingLoader] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        if self.shuffle:
            RecordingLoader.made.append(self)

    def __iter__(self):
        for batch in super().__iter__():
            if self.shuffle:
                self.batches.append((batch.index.copy(), batch.images.numpy().copy(), batch.labels.numpy().copy()))
            yield batch


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """`hcd pseudo` on a hand-made submission, then `hcd train --pseudo` on all 3 folds, loaders recorded."""
    tmp = tmp_path_factory.mktemp("trained")
    ids = store_test_ids(data)
    probs = np.random.default_rng(1).uniform(0.2, 0.8, len(ids))
    probs[:20] = np.where(np.arange(20) % 2 == 0, 0.99, 0.01)  # 10 sure tumour, 10 sure normal
    pred = write_submission(tmp / "sub.csv", ids, probs)
    pseudo = tmp / "pseudo.csv"
    res = hcd("pseudo", "--pred", pred, "--data-dir", data, "--out", pseudo)
    assert res.exit_code == 0, res.output
    run = tmp / "run"
    RecordingLoader.made = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("hcd_kit.training.loop.BatchLoader", RecordingLoader)
        res = hcd("train", "--data-dir", data, "--fold", "all", "--run-dir", run, "--pseudo", pseudo, *FAST)
    assert res.exit_code == 0, res.output
    return SimpleNamespace(pseudo=pseudo, run=run, output=res.output, loaders=list(RecordingLoader.made))


def test_pseudo_rows_train_every_fold_and_never_validate(data, trained):
    train, test = open_store(data / "packed", "train"), open_store(data / "packed", "test")
    n = len(train)
    folds = pd.read_csv(data / "folds.csv", dtype={"id": str}).set_index("id").loc[train.ids, "fold"].to_numpy()
    pseudo = read_pseudo(trained.pseudo)
    assert len(pseudo) == 20 and pseudo["label"].sum() == 10
    pseudo_rows = n + test.index_of(pseudo["id"])
    pseudo_label = dict(zip(pseudo_rows, pseudo["label"]))
    assert len(trained.loaders) == 3
    for loader in trained.loaders:
        fold = loader.seed  # seed 0 + fold
        expected = np.r_[np.flatnonzero(folds != fold), pseudo_rows]
        assert sorted(loader.indices) == sorted(expected)  # the fold's training part + every pseudo row
        assert not set(loader.indices) & set(np.flatnonzero(folds == fold))  # no validation row
        seen = np.concatenate([b[0] for b in loader.batches])
        assert set(seen) <= set(expected) and (seen >= n).sum() > 0
        for rows, images, labels in loader.batches:  # each row's pixels and label come from the right store
            for row, image, label in zip(rows, images, labels):
                if row < n:
                    assert np.array_equal(image, train.images[row]) and label == train.labels[row]
                else:
                    assert np.array_equal(image, test.images[row - n]) and label == pseudo_label[row]

    oof = pd.concat(pd.read_csv(p, dtype={"id": str}) for p in sorted(trained.run.glob("fold*/oof.csv")))
    assert sorted(oof["id"]) == sorted(train.ids)  # every train id once, no test id anywhere
    assert not set(oof["id"]) & set(test.ids)
    by_id = dict(zip(train.ids, folds))
    assert all(by_id[i] == k for i, k in zip(oof["id"], oof["fold"]))
    assert f'pseudo = "{trained.pseudo}"' in (trained.run / "config.toml").read_text()
    record = json.loads((trained.run / "pseudo.json").read_text())
    assert record == {
        "file": str(trained.pseudo),
        "sha256": sha256_file(trained.pseudo),
        "count": 20,
        "positives": 10,
        "negatives": 10,
    }
    assert "fold 2: + 20 pseudo-labelled test images (10 label 1, 10 label 0)" in trained.output
    assert "CV AUC (pooled OOF of 3 fold(s), 60 images)" in trained.output


def test_resume_refuses_another_pseudo_label_file(data, trained, tmp_path):
    run = shutil.copytree(trained.run, tmp_path / "run")
    pseudo = shutil.copy(trained.pseudo, tmp_path / "pseudo.csv")  # the same labels, in a file this test may change
    config = run / "config.toml"
    config.write_text(config.read_text().replace(str(trained.pseudo), str(pseudo)))
    res = hcd("train", "--data-dir", data, "--run-dir", run, "--resume")  # the same labels: nothing left to do
    assert res.exit_code == 0 and "already finished" in res.output, res.output

    res = hcd("train", "--data-dir", data, "--run-dir", run, "--resume", "--pseudo", trained.pseudo)  # another path
    one_line_error(res, 2, f"has pseudo = '{pseudo}' but this run asks for '{trained.pseudo}'")

    pd.read_csv(pseudo, dtype={"id": str}).iloc[:-1].to_csv(pseudo, index=False)  # one label fewer, same path
    res = hcd("train", "--data-dir", data, "--run-dir", run, "--resume", "--fold", "all")
    one_line_error(res, 2, f"was trained with pseudo-labels {trained.pseudo} (sha256 ")
    assert f"but {pseudo} differs" in res.stderr
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in trained.run.iterdir())


def test_train_refuses_pseudo_labels_that_are_not_test_ids_or_a_run_trained_without(data, trained, tmp_path):
    train_ids = open_store(data / "packed", "train").ids[:4]
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"id": train_ids, "label": [1, 0, 1, 0], "prob": [0.99, 0.01, 0.99, 0.01]}).to_csv(bad, index=False)
    res = hcd("train", "--data-dir", data, "--run-dir", tmp_path / "r1", "--pseudo", bad, *FAST)
    one_line_error(res, 1, "4 of 4 id(s) are not in the packed test store (0 match)")
    assert not (tmp_path / "r1").exists()

    plain = tmp_path / "plain"
    res = hcd("train", "--data-dir", data, "--run-dir", plain, "--fold", "0", *FAST)
    assert res.exit_code == 0, res.output
    res = hcd("train", "--data-dir", data, "--run-dir", plain, "--fold", "1", "--pseudo", trained.pseudo, *FAST)
    one_line_error(res, 2, "fold0 was trained without pseudo-labels")
    assert not (plain / "fold1").exists() and not (plain / "pseudo.json").exists()
    assert "pseudo" not in (plain / "config.toml").read_text()
