"""``hcd prepare``: pixel-exact packing of real patches, bad inputs reported by name, atomic and idempotent."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from hcd_kit.cli import app
from hcd_kit.data import open_store, parse_layout, prepare
from hcd_kit.errors import DataError


def _hcd(*args) -> CliRunner.invoke:
    return CliRunner().invoke(app, [str(a) for a in args])


def _pil(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _train_ids(root: Path) -> list[str]:
    return pd.read_csv(root / "train_labels.csv", dtype={"id": str})["id"].tolist()


def _store_files(packed: Path) -> list[str]:
    return sorted(p.name for p in packed.iterdir()) if packed.exists() else []


def test_pixel_exact_vs_pil_including_files_written_by_pil(subset_factory):
    root = subset_factory(n_train=24, n_test=8)
    ids = _train_ids(root)
    for i, kw in [(ids[0], {}), (ids[1], {"compression": "tiff_lzw"})]:  # other layouts -> PIL fallback
        f = root / "train" / f"{i}.tif"
        Image.open(f).convert("RGB").save(f, format="TIFF", **kw)
    summary = prepare(root, workers=1)
    assert summary.splits["train"].pil == 2 and summary.splits["train"].fast == 22
    for split, folder in [("train", root / "train"), ("test", root / "test")]:
        store = open_store(root / "packed", split)
        assert store.images.dtype == np.uint8 and store.images.shape[1:] == (96, 96, 3)
        for i, img in zip(store.ids, store.images):
            assert np.array_equal(img, _pil(folder / f"{i}.tif")), i
    loaded = np.load(root / "packed" / "train_images.npy", mmap_mode="r")  # a real .npy
    assert loaded.shape == (24, 96, 96, 3)


def test_layout_of_real_files(real_root):
    path = next((real_root / "train").glob("*.tif"))
    data = path.read_bytes()
    layout = parse_layout(data)
    assert layout is not None and layout.size == len(data) == 27935
    assert sum(c for _, c in layout.strips) == 96 * 96 * 3
    assert parse_layout(data[:200]) is None and parse_layout(b"\x00" * 27935) is None


def test_cli_packs_in_csv_order_and_rerun_is_a_no_op(subset_factory):
    root = subset_factory(n_train=32, n_test=8)
    first = _hcd("prepare", "--data-dir", root, "--workers", 1)
    assert first.exit_code == 0, first.output
    assert "train: packed 32 images" in first.stdout and "test: packed 8 images" in first.stdout
    train = open_store(root / "packed", "train")
    labels = pd.read_csv(root / "train_labels.csv", dtype={"id": str})
    assert train.ids.tolist() == labels["id"].tolist() and train.labels.tolist() == labels["label"].tolist()
    sub = pd.read_csv(root / "sample_submission.csv", dtype={"id": str})
    assert open_store(root / "packed", "test").ids.tolist() == sub["id"].tolist()

    npy = root / "packed" / "train_images.npy"
    before = npy.stat().st_mtime_ns, (root / "packed" / "manifest.json").read_text()
    again = _hcd("prepare", "--data-dir", root)
    assert again.exit_code == 0 and again.stdout.count("up to date") == 2
    assert (npy.stat().st_mtime_ns, (root / "packed" / "manifest.json").read_text()) == before

    f = root / "train" / f"{labels['id'][0]}.tif"  # a changed input is noticed
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    third = _hcd("prepare", "--data-dir", root, "--split", "train", "--workers", 1)
    assert "train: packed 32 images" in third.stdout and "up to date" not in third.stdout
    manifest = json.loads((root / "packed" / "manifest.json").read_text())
    assert set(manifest["splits"]) == {"train", "test"}  # the untouched split is kept


def test_parallel_workers_match_serial(subset_factory):
    root = subset_factory(n_train=200, n_test=0)
    bad = _train_ids(root)[150]
    (root / "train" / f"{bad}.tif").write_bytes(b"not a tiff" * 100)
    serial = prepare(root, out_dir=root / "p1", splits=("train",), skip_bad=True, workers=1)
    parallel = prepare(root, out_dir=root / "p2", splits=("train",), skip_bad=True, workers=2)
    assert serial.splits["train"].skipped == parallel.splits["train"].skipped == {"corrupt": [f"{bad}.tif"]}
    a, b = open_store(root / "p1"), open_store(root / "p2")
    assert len(a) == len(b) == 199 and np.array_equal(a.images, b.images) and (a.ids == b.ids).all()


def _rgb(root: Path, i: str) -> Image.Image:
    return Image.open(root / "train" / f"{i}.tif").convert("RGB")


BREAK = {
    "corrupt": lambda root, i, f: f.write_bytes(os.urandom(27935)),
    "truncated": lambda root, i, f: f.write_bytes(f.read_bytes()[:10000]),
    "not 96x96": lambda root, i, f: _rgb(root, i).resize((64, 64)).save(f, format="TIFF"),
    "not RGB": lambda root, i, f: _rgb(root, i).convert("RGBA").save(f, format="TIFF"),
    "not RGB ": lambda root, i, f: _rgb(root, i).convert("L").save(f, format="TIFF"),  # grayscale
    "missing": lambda root, i, f: f.unlink(),
}


@pytest.mark.parametrize("kind", list(BREAK))
def test_each_bad_image_is_named_and_nothing_is_written(subset_factory, kind):
    root = subset_factory(n_train=12, n_test=4)
    victim = _train_ids(root)[5]
    BREAK[kind](root, victim, root / "train" / f"{victim}.tif")
    result = _hcd("prepare", "--data-dir", root, "--workers", 1)
    assert result.exit_code != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1  # one summary line (above it only progress bars)
    assert f"1 {kind.strip()} ({victim}.tif)" in errors[0] and "--skip-bad" in errors[0]
    assert f"full list in {root / 'prepare-problems.csv'}" in errors[0]
    assert not (root / "packed").exists()  # no store, no temporary leftovers, not even an empty folder


def test_skip_bad_packs_the_rest_and_records_what_it_skipped(subset_factory):
    root = subset_factory(n_train=16, n_test=4)
    ids = _train_ids(root)
    for kind, i in zip(BREAK, ids):
        BREAK[kind](root, i, root / "train" / f"{i}.tif")
    labels = pd.read_csv(root / "train_labels.csv", dtype=str)
    labels.loc[10, "label"] = "2"
    extra = "f" * 40  # an image nobody labelled
    (root / "train" / f"{extra}.tif").write_bytes((root / "train" / f"{ids[12]}.tif").read_bytes())
    labels.to_csv(root / "train_labels.csv", index=False)

    result = _hcd("prepare", "--data-dir", root, "--skip-bad", "--workers", 1)
    assert result.exit_code == 0, result.output
    skipped = json.loads((root / "packed" / "manifest.json").read_text())["splits"]["train"]["skipped"]
    assert skipped == {
        "label not 0/1": [f"{ids[10]} ('2')"],
        "missing": [f"{ids[5]}.tif"],
        "not in train_labels.csv": [f"{extra}.tif"],
        "corrupt": [f"{ids[0]}.tif"],
        "truncated": [f"{ids[1]}.tif"],
        "not 96x96": [f"{ids[2]}.tif"],
        "not RGB": [f"{ids[3]}.tif", f"{ids[4]}.tif"],
    }
    assert f"skipped 2 not RGB ({ids[3]}.tif, {ids[4]}.tif)" in result.stdout
    store = open_store(root / "packed", "train")
    keep = [i for k, i in enumerate(ids) if k not in (0, 1, 2, 3, 4, 5, 10)]
    assert store.ids.tolist() == keep
    for i, img in zip(store.ids, store.images):
        assert np.array_equal(img, _pil(root / "train" / f"{i}.tif"))
    assert _hcd("prepare", "--data-dir", root, "--skip-bad").stdout.count("up to date") == 2
    assert _hcd("prepare", "--data-dir", root).exit_code != 0  # without --skip-bad the problems still count


def test_label_problems_reported_together(subset_factory):
    root = subset_factory(n_train=12, n_test=4)
    ids = _train_ids(root)
    labels = pd.read_csv(root / "train_labels.csv", dtype=str)
    labels.loc[3, "label"] = "-1"
    labels = pd.concat([labels, labels.iloc[[7]], pd.DataFrame({"id": ["0" * 40], "label": ["1"]})])
    labels.to_csv(root / "train_labels.csv", index=False)
    with pytest.raises(DataError) as err:
        prepare(root, workers=1)
    msg = str(err.value)
    assert f"1 duplicate id ({ids[7]})" in msg and f"1 label not 0/1 ({ids[3]} ('-1'))" in msg
    assert f"1 missing ({'0' * 40}.tif)" in msg and "no store written" in msg
    assert not (root / "packed" / "manifest.json").exists()

    (root / "train_labels.csv").write_text("image,target\na,1\n")
    result = _hcd("prepare", "--data-dir", root)
    assert result.exit_code != 0 and "expected id,label" in result.stderr


def test_test_only_folder(subset_factory, tmp_path):
    src = subset_factory(n_train=2, n_test=6)
    root = tmp_path / "kernel-input"
    root.mkdir()
    os.rename(src / "test", root / "test")
    os.rename(src / "sample_submission.csv", root / "sample_submission.csv")
    summary = prepare(root, splits=("test",))
    assert list(summary.splits) == ["test"] and summary.splits["test"].count == 6
    assert open_store(root / "packed", "test").labels is None
    with pytest.raises(DataError, match="no packed train store"):
        open_store(root / "packed", "train")
    assert _hcd("prepare", "--data-dir", root).stdout.count("up to date") == 1  # 'all' = what exists
    bad = _hcd("prepare", "--data-dir", root, "--split", "train")
    assert bad.exit_code != 0 and "no train/ folder" in bad.stderr

    (root / "sample_submission.csv").unlink()  # no template: sorted file names
    prepare(root, out_dir=root / "p2", splits=("test",))
    names = sorted(p.stem for p in (root / "test").glob("*.tif"))
    assert open_store(root / "p2", "test").ids.tolist() == names


def test_interrupted_decode_keeps_the_old_store(subset_factory, monkeypatch):
    root = subset_factory(n_train=16, n_test=4)
    prepare(root, workers=1)
    old = open_store(root / "packed", "train").images.copy()
    victim = _train_ids(root)[9]
    f = root / "train" / f"{victim}.tif"
    Image.open(f).convert("RGB").save(f, format="TIFF", compression="tiff_lzw")  # decoded by PIL, mid-split
    real_open = Image.open

    def interrupted(path, *args, **kwargs):  # Ctrl-C while the ninth patch of the split is being decoded
        if str(path).endswith(f"{victim}.tif"):
            raise KeyboardInterrupt
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(root, workers=1)
    assert not [n for n in _store_files(root / "packed") if n.startswith(".tmp-")]
    assert np.array_equal(open_store(root / "packed", "train").images, old)


def test_interrupted_commit_never_looks_complete(subset_factory, monkeypatch):
    root = subset_factory(n_train=16, n_test=4)
    prepare(root, workers=1)
    (root / "train_labels.csv").write_text((root / "train_labels.csv").read_text() + "\n")  # new hash
    real_replace = os.replace

    def killed_at_the_manifest(src, dst, *args, **kwargs):  # the arrays are in place, the manifest is not
        if str(dst).endswith("manifest.json"):
            raise KeyboardInterrupt
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", killed_at_the_manifest)
    with pytest.raises(KeyboardInterrupt):
        prepare(root, workers=1)
    monkeypatch.undo()
    assert not (root / "packed" / "manifest.json").exists()
    for split in ("train", "test"):
        with pytest.raises(DataError, match="hcd prepare"):
            open_store(root / "packed", split)
    result = _hcd("prepare", "--data-dir", root)
    assert result.exit_code == 0 and "train: packed 16 images" in result.stdout
    assert len(open_store(root / "packed", "train")) == 16


def _report(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "prepare-problems.csv", dtype=str)


def test_every_bad_input_is_listed_in_the_report_the_error_names(subset_factory):
    root = subset_factory(n_train=16, n_test=4)
    ids = _train_ids(root)
    for i in ids[:5]:
        BREAK["corrupt"](root, i, root / "train" / f"{i}.tif")
    labels = pd.read_csv(root / "train_labels.csv", dtype=str)
    labels.loc[9, "label"] = "x"
    labels.to_csv(root / "train_labels.csv", index=False)
    sub = pd.read_csv(root / "sample_submission.csv", dtype=str)
    (root / "test" / f"{sub['id'][0]}.tif").unlink()

    result = _hcd("prepare", "--data-dir", root, "--workers", 1)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert f"5 corrupt ({ids[0]}.tif, {ids[1]}.tif, {ids[2]}.tif, ...)" in errors[0]  # a few on screen ...
    assert f"full list in {root / 'prepare-problems.csv'}" in errors[0]  # ... and where to find them all
    listed = _report(root)
    assert listed.values.tolist() == [
        ["train", f"{ids[9]} ('x')", "label not 0/1"],
        *[["train", f"{i}.tif", "corrupt"] for i in ids[:5]],
        ["test", f"{sub['id'][0]}.tif", "missing"],
    ]
    assert not (root / "packed").exists()

    ok = _hcd("prepare", "--data-dir", root, "--skip-bad", "--workers", 1)
    assert ok.exit_code == 0, ok.output
    assert f"every skipped input is listed in {root / 'packed' / 'manifest.json'}" in ok.stdout
    assert not (root / "prepare-problems.csv").exists()  # the report of the failed run would only mislead


def test_all_images_bad_names_the_report_and_leaves_no_folder(subset_factory):
    root = subset_factory(n_train=4, n_test=0)
    for i in _train_ids(root):
        BREAK["truncated"](root, i, root / "train" / f"{i}.tif")
    with pytest.raises(DataError) as err:
        prepare(root, splits=("train",), skip_bad=True, workers=1)
    assert "no good image" in str(err.value) and "prepare-problems.csv" in str(err.value)
    assert len(_report(root)) == 4 and not (root / "packed").exists()


def test_failed_run_keeps_an_existing_store_folder(subset_factory):
    root = subset_factory(n_train=12, n_test=4)
    prepare(root, workers=1)
    victim = _train_ids(root)[2]
    BREAK["corrupt"](root, victim, root / "train" / f"{victim}.tif")
    with pytest.raises(DataError, match="no store written"):
        prepare(root, workers=1)
    assert len(open_store(root / "packed", "test")) == 4  # only a folder hcd just made is removed
