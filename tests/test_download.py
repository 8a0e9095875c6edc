"""``hcd download`` against the local Kaggle stand-in: the outside-check shape (a subprocess with credentials,
LOCALHOST and a proxy), idempotence, recovery from interrupted runs, and every error a user can meet."""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

import pytest
from conftest import STUB_COMPETITION
from kaggle_stub import build_competition_zip

MARKER = ".hcd-download.json"  # on-disk names users see: written last, and the working folder
WORK = ".hcd-download"

C = STUB_COMPETITION
ENTRIES = ["sample_submission.csv", "test", "train", "train_labels.csv"]


def tree(root: Path) -> dict[str, bytes]:
    """Every file under the four competition entries, relative name -> bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for e in ENTRIES for p in sorted((root / e).rglob("*")) if p.is_file()
    } | {e: (root / e).read_bytes() for e in ENTRIES if (root / e).is_file()}


def assert_same_data(data: Path, src: Path) -> None:
    assert sorted(p.name for p in data.iterdir() if not p.name.startswith(".")) == ENTRIES
    assert tree(data) == tree(src)
    assert not (data / WORK).exists()


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error:"), stderr
    return lines[-1]


# ------------------------------------------------------------------------------------------- happy paths
def test_outside_check_shape_then_noop(kaggle_env, kaggle_competition, tmp_path):
    src, _ = kaggle_competition
    data = tmp_path / "DIR"
    first = kaggle_env.run("download", "--data-dir", data)
    assert first.returncode == 0, first.stderr
    assert "downloaded histopathologic-cancer-detection" in first.stdout and "34 files" in first.stdout
    assert_same_data(data, src)
    marker = json.loads((data / MARKER).read_text())
    assert len(marker["files"]) == 34 and marker["entries"] == ENTRIES

    second = kaggle_env.run("download", "--data-dir", data)
    assert second.returncode == 0, second.stderr
    assert "already downloaded and complete" in second.stdout and "nothing to do" in second.stdout
    assert len(kaggle_env.server.calls("DownloadDataFiles")) == 1  # the second run asked Kaggle nothing
    assert_same_data(data, src)
    kaggle_env.assert_no_secret(first.stdout, first.stderr, second.stdout, second.stderr, paths=(data, kaggle_env.home))


def test_interrupted_download_and_extraction_are_redone(kaggle_env, kaggle_competition, tmp_path):
    src, zip_path = kaggle_competition
    data = tmp_path / "DIR"
    work = data / WORK
    (work / "staging" / "train").mkdir(parents=True)
    (work / f"{C}.zip").write_bytes(zip_path.read_bytes()[:5000])  # a download cut short
    (work / "staging" / "train" / "half.tif").write_bytes(b"partial")
    (data / "train").mkdir()
    (data / "train" / "stale.tif").write_bytes(b"from an install cut short")
    result = kaggle_env.invoke("download", "--data-dir", data)
    assert result.exit_code == 0, result.stderr
    assert_same_data(data, src)


def test_missing_file_makes_the_tree_incomplete(kaggle_env, kaggle_competition, tmp_path):
    src, _ = kaggle_competition
    data = tmp_path / "DIR"
    assert kaggle_env.invoke("download", "--data-dir", data).exit_code == 0
    next((data / "train").iterdir()).unlink()  # the marker no longer matches the tree
    result = kaggle_env.invoke("download", "--data-dir", data)
    assert result.exit_code == 0 and "downloaded" in result.stdout
    assert_same_data(data, src)
    assert len(kaggle_env.server.calls("DownloadDataFiles")) == 2


def test_complete_archive_without_marker_is_reused(kaggle_env, kaggle_competition, tmp_path):
    src, zip_path = kaggle_competition
    data = tmp_path / "DIR"
    (data / WORK).mkdir(parents=True)
    (data / WORK / f"{C}.zip").write_bytes(zip_path.read_bytes())  # killed after the download finished
    (data / WORK / "archive.json").write_text(json.dumps({"bytes": zip_path.stat().st_size}))
    result = kaggle_env.invoke("download", "--data-dir", data)
    assert result.exit_code == 0, result.stderr
    assert "re-using the complete archive" in result.stderr
    assert not kaggle_env.server.calls("DownloadDataFiles")
    assert_same_data(data, src)


# ------------------------------------------------------------------------------------------- errors
def test_no_credentials(kaggle_env, tmp_path):
    data = tmp_path / "DIR"
    r = kaggle_env.run("download", "--data-dir", data, env={"KAGGLE_USERNAME": None, "KAGGLE_KEY": None})
    assert r.returncode != 0
    line = one_error_line(r.stderr)
    assert "no Kaggle credentials" in line and "KAGGLE_KEY" in line and "kaggle.json" in line
    assert r.stdout == ""  # the client's own auth help did not leak
    assert not kaggle_env.server.requests and not data.exists()


def test_wrong_key_401_never_shows_the_key(kaggle_env, kaggle_competition, tmp_path):
    kaggle_env.server.credentials = ("testuser", "the-real-key-on-the-server")
    data = tmp_path / "DIR"
    r = kaggle_env.run("download", "--data-dir", data)
    assert r.returncode != 0
    assert "HTTP 401" in one_error_line(r.stderr) and "KAGGLE_KEY" in r.stderr
    kaggle_env.assert_no_secret(r.stdout, r.stderr, paths=(tmp_path,))
    assert not (data / "train").exists()


@pytest.mark.parametrize(
    "setup, args, expected",
    [
        (
            lambda s: s.rules_accepted.update({C: False}),
            [],
            "HTTP 403, forbidden: You must accept this competition's rules",
        ),
        (
            lambda s: None,
            ["--competition", "no-such-competition"],
            "Kaggle does not know competition 'no-such-competition' (HTTP 404)",
        ),
        (
            lambda s: s.fail("DownloadDataFiles", 500, times=99),
            ["--retries", "2"],
            "(HTTP 500: injected HTTP 500) after 3 attempts",
        ),
        (lambda s: s.delay("DownloadDataFiles", 30), ["--stall-timeout", "1"], "no answer from Kaggle within 1 s"),
    ],
    ids=["403-rules", "404-unknown", "500-after-retries", "stalled-timeout"],
)
def test_kaggle_errors_are_one_line(kaggle_env, kaggle_competition, tmp_path, setup, args, expected):
    setup(kaggle_env.server)
    data = tmp_path / "DIR"
    r = kaggle_env.invoke("download", "--data-dir", data, *args)
    assert r.exit_code == 1
    line = one_error_line(r.stderr)
    assert expected in line
    if "403" in expected:
        assert f"https://www.kaggle.com/c/{C}/rules" in line
    if "500" in expected:
        assert len(kaggle_env.server.calls("DownloadDataFiles")) == 3
    assert not (data / "train").exists() and not (data / MARKER).exists()
    kaggle_env.assert_no_secret(r.stdout, r.stderr)


def test_429_is_retried_then_succeeds(kaggle_env, kaggle_competition, tmp_path):
    kaggle_env.server.fail("DownloadDataFiles", 429, times=2)
    data = tmp_path / "DIR"
    r = kaggle_env.invoke("download", "--data-dir", data, "--retries", "3")
    assert r.exit_code == 0, r.stderr
    assert len(kaggle_env.server.calls("DownloadDataFiles")) == 3
    assert_same_data(data, kaggle_competition[0])


def test_corrupt_zip_extracts_nothing_then_recovers(kaggle_env, kaggle_competition, tmp_path):
    kaggle_env.server.corrupt_zip(C)
    data = tmp_path / "DIR"
    r = kaggle_env.invoke("download", "--data-dir", data)
    assert r.exit_code == 1
    assert "is corrupt" in one_error_line(r.stderr) and "run `hcd download` again" in r.stderr
    assert sorted(p.name for p in data.iterdir()) in ([], [WORK]) and not (data / WORK / f"{C}.zip").exists()
    kaggle_env.server.competitions[C].corrupt = False
    assert kaggle_env.invoke("download", "--data-dir", data).exit_code == 0
    assert_same_data(data, kaggle_competition[0])


def _evil_zip(src: Path, dest: Path, kind: str, outside: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for name in ("train_labels.csv", "sample_submission.csv"):
            zf.write(src / name, name)
        zf.writestr("train/", b"")
        zf.writestr("test/", b"")
        if kind == "dotdot":
            # staging/train/../../../.. is the folder above DIR, where `outside` lives
            zf.writestr(zipfile.ZipInfo("train/../../../../" + outside.name), b"owned")
        elif kind == "absolute":
            zf.writestr(zipfile.ZipInfo(str(outside)), b"owned")
        else:
            info = zipfile.ZipInfo("train/link.tif")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, str(outside))
    return dest


@pytest.mark.parametrize(
    "kind, why", [("dotdot", "'..' component"), ("absolute", "absolute path"), ("symlink", "symbolic link")]
)
def test_unsafe_members_are_refused(kaggle_env, kaggle_competition, tmp_path, kind, why):
    src, _ = kaggle_competition
    outside = tmp_path / "outside.txt"
    kaggle_env.server.add_competition(C, _evil_zip(src, tmp_path / "evil.zip", kind, outside))
    data = tmp_path / "DIR"
    r = kaggle_env.invoke("download", "--data-dir", data)
    assert r.exit_code == 1
    line = one_error_line(r.stderr)
    assert "refusing to extract" in line and why in line
    assert not outside.exists() and not (data / "train").exists() and not (data / WORK / "staging").exists()


def test_bad_options_exit_2(kaggle_env, tmp_path):
    r = kaggle_env.invoke("download", "--data-dir", tmp_path, "--stall-timeout", "0")
    assert r.exit_code == 2 and "--stall-timeout must be positive" in r.stderr


@pytest.mark.parametrize("name", ["../../../escaped/x", "Histopathologic-Cancer-Detection", "a/b", "-x", ""])
def test_competition_must_be_a_slug_before_anything_is_written(kaggle_env, tmp_path, name):
    data = tmp_path / "a" / "b" / "DIR"
    r = kaggle_env.invoke("download", "--data-dir", data, "--competition", name)
    assert r.exit_code == 2
    line = one_error_line(r.stderr)
    assert f"--competition {name!r} is not a Kaggle competition slug" in line and C in line
    assert not (tmp_path / "a").exists() and not list(tmp_path.rglob("escaped"))
    assert not kaggle_env.server.requests


def test_bad_slug_is_reported_before_missing_credentials(kaggle_env, tmp_path):
    data = tmp_path / "DIR"
    r = kaggle_env.run(
        "download",
        "--data-dir",
        data,
        "--competition",
        "../../../escaped/x",
        env={"KAGGLE_USERNAME": None, "KAGGLE_KEY": None},
    )
    assert r.returncode == 2 and "not a Kaggle competition slug" in one_error_line(r.stderr)
    assert not data.exists() and not list(tmp_path.rglob("escaped"))


def _zip_with(src: Path, dest: Path, extra: dict[str, bytes]) -> Path:
    build_competition_zip(src, dest)
    with zipfile.ZipFile(dest, "a") as zf:
        for name, data in extra.items():
            zf.writestr(name, data)
    return dest


@pytest.mark.parametrize(
    "entry",
    [
        "packed/manifest.json",
        "folds.csv",
        f"{WORK}/staging/train/x.tif",
        MARKER,
        "prepare-problems.csv",
        "Packed/train_ids.csv",
    ],
)
def test_entries_named_like_hcd_files_are_refused(kaggle_env, kaggle_competition, tmp_path, entry):
    src, _ = kaggle_competition
    kaggle_env.server.add_competition(C, _zip_with(src, tmp_path / "clash.zip", {entry: b"from the archive"}))
    data = tmp_path / "DIR"
    (data / "packed").mkdir(parents=True)
    mine = {data / "packed" / "manifest.json": b"the user's store", data / "folds.csv": b"id,fold\n"}
    for path, content in mine.items():
        path.write_bytes(content)
    r = kaggle_env.invoke("download", "--data-dir", data)
    assert r.exit_code == 1
    line = one_error_line(r.stderr)
    top = entry.split("/")[0]
    assert "refusing to extract" in line and f"top-level entry {top!r} is a name hcd uses" in line
    assert {p: p.read_bytes() for p in mine} == mine  # the user's files are untouched
    assert sorted(p.name for p in data.iterdir()) == sorted(["packed", "folds.csv", WORK])  # nothing installed
    assert not (data / WORK / "staging").exists()


def test_other_plain_entries_are_installed(kaggle_env, kaggle_competition, tmp_path):
    src, _ = kaggle_competition
    kaggle_env.server.add_competition(C, _zip_with(src, tmp_path / "more.zip", {"README.txt": b"about"}))
    data = tmp_path / "DIR"
    r = kaggle_env.invoke("download", "--data-dir", data)
    assert r.exit_code == 0, r.stderr
    assert (data / "README.txt").read_bytes() == b"about" and tree(data) == tree(src)
    assert json.loads((data / MARKER).read_text())["entries"] == sorted(ENTRIES + ["README.txt"])
