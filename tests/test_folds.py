"""``hcd folds``: stratified, deterministic, grouped by slide on request, and checked when read back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hcd_kit.cli import app
from hcd_kit.data import (
    create_folds,
    make_folds,
    open_store,
    prepare,
    read_folds,
    read_groups,
    read_labels,
    write_folds,
)
from hcd_kit.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def labels(real_root) -> pd.DataFrame:
    return read_labels(real_root / "train_labels.csv")


def _hcd(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_stratified_and_deterministic(labels):
    folds = make_folds(labels, n_folds=5, seed=3)
    assert folds["id"].tolist() == labels["id"].tolist()
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]
    sizes = folds["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 1
    rate = labels["label"].mean()
    per_fold = labels["label"].groupby(folds["fold"]).mean()
    assert (per_fold - rate).abs().max() < 0.01
    assert folds.equals(make_folds(labels, n_folds=5, seed=3))
    assert not folds["fold"].equals(make_folds(labels, n_folds=5, seed=4)["fold"])


def _slides(labels: pd.DataFrame, n_slides: int = 60, seed: int = 0) -> pd.Series:
    rng = np.random.default_rng(seed)
    return pd.Series(rng.integers(0, n_slides, len(labels)).astype(str), index=labels["id"].to_numpy())


def test_groups_never_span_two_folds(labels):
    slides = _slides(labels)
    folds = make_folds(labels, n_folds=4, seed=0, groups=slides)
    per_slide = folds.groupby(slides.reindex(folds["id"]).to_numpy())["fold"].nunique()
    assert (per_slide == 1).all() and folds["fold"].nunique() == 4
    assert folds.equals(make_folds(labels, n_folds=4, seed=0, groups=slides))


def test_cli_with_groups_reports_unknown_ids(real_root, labels, tmp_path):
    slides = _slides(labels)
    known = slides.iloc[: len(slides) - 7]
    groups = tmp_path / "patch_to_wsi.csv"
    pd.DataFrame({"id": known.index, "wsi": known.to_numpy()}).to_csv(groups, index=False)
    out = tmp_path / "folds.csv"
    result = _hcd("folds", "--data-dir", real_root, "--n-folds", 3, "--groups", groups, "--out", out)
    assert result.exit_code == 0, result.output
    missing = labels["id"].tolist()[-7:]
    assert "7 id(s) not in" in result.stdout and missing[0] in result.stdout
    n = len(labels)
    assert (
        f"grouped {n - 7:,} of {n:,} patches" in result.stdout
        and f"into {slides.iloc[:-7].nunique()} slides; the other 7 each form a group of their own, "
        f"{slides.iloc[:-7].nunique() + 7} groups in all"
        in " ".join(result.stdout.split())
    )
    for k in range(3):
        assert f"fold {k}:" in result.stdout and "% positive" in result.stdout
    folds = read_folds(out, ids=labels["id"], n_folds=3)
    per_slide = folds.iloc[:-7].groupby(known.to_numpy())["fold"].nunique()
    assert (per_slide == 1).all()


def test_groups_file_formats(tmp_path):
    two = tmp_path / "two.csv"
    two.write_text("a.tif,s1\nb.tif,s2\n")  # headerless, file names like the community's file
    assert read_groups(two).to_dict() == {"a": "s1", "b": "s2"}
    named = tmp_path / "named.csv"
    named.write_text("slide,id,x\ns9,a,0\n")
    assert read_groups(named).to_dict() == {"a": "s9"}
    bad = tmp_path / "bad.csv"
    bad.write_text("id,x,y\na,1,2\n")
    with pytest.raises(DataError, match="wsi, slide, group"):
        read_groups(bad)


def test_cli_default_path_and_bad_n_folds(subset_factory):
    root = subset_factory(n_train=20, n_test=0)
    ok = _hcd("folds", "--data-dir", root, "--n-folds", 2, "--seed", 1)
    assert ok.exit_code == 0 and (root / "folds.csv").is_file()
    assert read_folds(root / "folds.csv", n_folds=2)["fold"].value_counts().tolist() == [10, 10]
    bad = _hcd("folds", "--data-dir", root, "--n-folds", 11)
    assert bad.exit_code != 0 and "fewer than --n-folds 11" in bad.stderr


def test_read_folds_validates(labels, tmp_path):
    folds = make_folds(labels.head(100), n_folds=4, seed=0)
    path = write_folds(folds, tmp_path / "folds.csv")
    back = read_folds(path, ids=labels["id"].head(100)[::-1], n_folds=4)
    assert back["id"].tolist() == labels["id"].head(100)[::-1].tolist()
    assert back.set_index("id")["fold"].sort_index().equals(folds.set_index("id")["fold"].sort_index())
    assert len(read_folds(path, ids=labels["id"].head(10))) == 10  # extra rows in the file are fine

    with pytest.raises(DataError, match="no fold for 1 id"):
        read_folds(path, ids=[*labels["id"].head(3), "nope"])
    with pytest.raises(DataError, match="expected 0..4"):
        read_folds(path, n_folds=5)
    for text, message in [
        ("id,fold\na,0\nb,1\na,1\n", "1 duplicate id"),
        ("id,fold\na,0\nb,2\n", "expected 0..2"),
        ("id,fold\na,0\nb,x\n", "not an integer"),
        ("id,k\na,0\n", "expected id,fold"),
    ]:
        path.write_text(text)
        with pytest.raises(DataError, match=message):
            read_folds(path)


def test_empty_slide_values_are_reported_and_kept_apart(labels, tmp_path):
    slides = _slides(labels, n_slides=40)
    blank = labels["id"].tolist()[:6]  # four empty cells, one blank after stripping, one short row
    rows = [f"{i},{s}" for i, s in slides.items() if i not in blank]
    rows += [f"{i}," for i in blank[:4]] + [f"{blank[4]},  ", blank[5]]
    groups = tmp_path / "groups.csv"
    groups.write_text("id,wsi\n" + "\n".join(rows) + "\n")
    root = tmp_path / "data"
    root.mkdir()
    labels.to_csv(root / "train_labels.csv", index=False)
    result = _hcd("folds", "--data-dir", root, "--n-folds", 3, "--groups", groups)
    assert result.exit_code == 0, result.output
    assert "6 id(s) not in" in result.stdout and "or with no slide there" in result.stdout
    assert blank[0] in result.stdout
    assert f"{slides.drop(blank).nunique() + 6} groups in all" in result.stdout  # not one slide "" for all six


def test_empty_and_missing_slides_alike_each_get_their_own_group(labels, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    labels.head(20).to_csv(root / "train_labels.csv", index=False)
    ids = labels["id"].head(20).tolist()
    rows = [f"{i},s{k % 5}" for k, i in enumerate(ids[:15])] + [f"{ids[15]},", f"{ids[17]},  ", f"{ids[18]}"]
    groups = tmp_path / "groups.csv"
    groups.write_text("id,wsi\n" + "\n".join(rows) + "\n")
    summary = create_folds(root, n_folds=2, groups=groups)
    assert summary.ungrouped == ids[15:] and summary.groups == 5 + 5


def test_a_groups_file_that_matches_under_half_the_patches_is_refused(labels, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    labels.head(40).to_csv(root / "train_labels.csv", index=False)
    ids = labels["id"].head(40).tolist()
    groups = tmp_path / "groups.csv"  # 19 of 40 patch ids known (one of them without a slide), plus strangers
    rows = [f"{i},s{k % 4}" for k, i in enumerate(ids[:18])] + [f"{ids[18]},"] + [f"other{k},s9" for k in range(50)]
    groups.write_text("id,wsi\n" + "\n".join(rows) + "\n")
    result = _hcd("folds", "--data-dir", root, "--n-folds", 2, "--groups", groups)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert (
        f"groups file {groups} gives a slide to 18 of 40 patch ids (45.0 %); at least half must have one"
        in " ".join(result.stderr.split())
    )
    assert not (root / "folds.csv").exists()
    with pytest.raises(ConfigError, match="18 of 40 patch ids"):
        create_folds(root, n_folds=2, groups=groups)

    rows = [f"{i},s{k % 4}" for k, i in enumerate(ids[:20])] + [f"{ids[20]},"]  # exactly half: accepted
    groups.write_text("id,wsi\n" + "\n".join(rows) + "\n")
    result = _hcd("folds", "--data-dir", root, "--n-folds", 2, "--groups", groups)
    assert result.exit_code == 0, result.output
    assert (
        "grouped 20 of 40 patches (50.0 %) into 4 slides; the other 20 each form a group of their own, 24 groups in all"
    ) in " ".join(result.stdout.split())


def _bad_labels(root) -> list[str]:
    """Give six rows of ``root``'s labels a label other than 0/1; their ids, in file order."""
    table = pd.read_csv(root / "train_labels.csv", dtype=str)
    table.loc[:5, "label"] = "7"
    table.to_csv(root / "train_labels.csv", index=False)
    return table["id"][:6].tolist()


def test_bad_labels_name_the_flag_that_exists_and_list_every_row(subset_factory):
    root = subset_factory(n_train=40, n_test=0)
    bad = _bad_labels(root)
    result = _hcd("folds", "--data-dir", root, "--n-folds", 2)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error:")
    report = root / "folds-problems.csv"
    assert f"6 label not 0/1 ({bad[0]} ('7')" in errors[0] and ", ...)" in errors[0]
    assert f"full list in {report}" in result.stderr and "pass --skip-bad" in errors[0]
    assert not (root / "folds.csv").exists()
    listed = pd.read_csv(report, dtype=str)
    assert listed.columns.tolist() == ["split", "name", "problem"]
    assert listed["name"].tolist() == [f"{i} ('7')" for i in bad] and set(listed["problem"]) == {"label not 0/1"}

    ok = _hcd("folds", "--data-dir", root, "--n-folds", 2, "--skip-bad")  # the flag the message names
    assert ok.exit_code == 0, ok.output
    assert "skipped 6 label not 0/1" in ok.stdout and str(report) in ok.stdout
    folds = read_folds(root / "folds.csv", n_folds=2)
    assert len(folds) == 34 and not set(bad) & set(folds["id"])


def test_skip_bad_folds_cover_the_skip_bad_store(subset_factory):
    root = subset_factory(n_train=40, n_test=0)
    _bad_labels(root)
    prepare(root, splits=("train",), skip_bad=True, workers=1)
    assert _hcd("folds", "--data-dir", root, "--n-folds", 2, "--skip-bad").exit_code == 0
    store = open_store(root / "packed", "train")
    assert read_folds(root / "folds.csv", ids=store.ids, n_folds=2)["id"].tolist() == store.ids.tolist()
    assert len(store) == len(pd.read_csv(root / "folds.csv")) == 34


def test_a_clean_run_removes_an_old_report(subset_factory):
    root = subset_factory(n_train=20, n_test=0)
    (root / "folds-problems.csv").write_text("split,name,problem\ntrain,x ('7'),label not 0/1\n")
    assert _hcd("folds", "--data-dir", root, "--n-folds", 2).exit_code == 0
    assert not (root / "folds-problems.csv").exists()
