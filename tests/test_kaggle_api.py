"""The Kaggle gateway against the local stand-in: every call of the doc's table round-trips through the real
client, and every failure becomes one actionable ``KaggleError`` line without the key in it."""

from __future__ import annotations

import json

import pytest
from conftest import FAKE_KAGGLE_KEY, STUB_COMPETITION

from hcd_kit.errors import KaggleError
from hcd_kit.kaggle import api as ka

C = STUB_COMPETITION


def _list_files(**kw):
    api = ka.get_api()
    return ka.call(
        f"list files of competition '{C}'",
        lambda: api.competition_list_files(C),
        not_found=f"competition '{C}'",
        competition=C,
        **kw,
    )


# ------------------------------------------------------------------------------------------- round trips
def test_competition_calls_round_trip(kaggle_env, kaggle_competition, tmp_path):
    src, zip_path = kaggle_competition
    files = _list_files().files
    assert sorted(f.name for f in files) == ["sample_submission.csv", "test", "train", "train_labels.csv"]
    got = ka.download_competition_archive(C, tmp_path / "dl")
    assert got.name == f"{C}.zip" and got.read_bytes() == zip_path.read_bytes()
    api = ka.get_api()
    ka.call(
        "download one file",
        lambda: api.competition_download_file(C, "train_labels.csv", path=str(tmp_path), quiet=True),
    )
    assert (tmp_path / "train_labels.csv").read_bytes() == (src / "train_labels.csv").read_bytes()
    # what the server received: Basic auth for the right user, camelCase JSON bodies
    call = kaggle_env.server.calls("DownloadDataFiles")[0]
    assert call.body == {"competitionName": C} and call.headers["authorization"].startswith("Basic ")
    assert ka.username() == "testuser"


def test_submission_round_trip_and_scoring(kaggle_env, kaggle_competition, tmp_path):
    sub = tmp_path / "submission.csv"
    sub.write_text("id,label\nabc,0.5\n")
    api = ka.get_api()
    result = ka.check_reported(
        "submit", ka.call("submit", lambda: api.competition_submit(str(sub), "try 1", C, quiet=True))
    )
    assert result.ref > 0
    server = kaggle_env.server
    start = server.calls("StartSubmissionUpload")[0].body
    assert start["fileName"] == "submission.csv" and int(start["contentLength"]) == sub.stat().st_size
    assert server.calls("PUT")[0].data == sub.read_bytes()
    assert server.calls("CreateSubmission")[0].body["submissionDescription"] == "try 1"
    statuses = [ka.call("list", lambda: api.competition_submissions(C))[0].status.name for _ in range(3)]
    assert statuses == ["PENDING", "COMPLETE", "COMPLETE"]
    assert ka.call("list", lambda: api.competition_submissions(C))[0].public_score == "0.9000"


def test_kernel_round_trip(kaggle_env, tmp_path):
    server = kaggle_env.server
    server.kernel_outputs = {f"out{i}.txt": f"file {i}".encode() for i in range(3)}  # 2 pages of 2
    folder = tmp_path / "kernel"
    folder.mkdir()
    (folder / "run.py").write_text("print('hi')\n")
    (folder / "kernel-metadata.json").write_text(
        json.dumps(
            {
                "id": "testuser/hcd-train",
                "title": "hcd train",
                "code_file": "run.py",
                "language": "python",
                "kernel_type": "script",
                "enable_gpu": True,
                "machine_shape": "NvidiaTeslaT4",
            }
        )
    )
    api = ka.get_api()
    pushed = ka.check_reported("push", ka.call("push", lambda: api.kernels_push(str(folder))))
    assert pushed.version_number == 1
    assert server.calls("SaveKernel")[0].body["machineShape"] == "NvidiaTeslaT4"
    seen = [ka.call("status", lambda: api.kernels_status("testuser/hcd-train")).status.name for _ in range(3)]
    assert seen == ["QUEUED", "RUNNING", "COMPLETE"]
    out = tmp_path / "out"
    ka.call("output", lambda: api.kernels_output("testuser/hcd-train", str(out), quiet=True))
    assert sorted(p.name for p in out.iterdir()) == ["hcd-train.log", "out0.txt", "out1.txt", "out2.txt"]
    assert (out / "out2.txt").read_text() == "file 2"
    assert len(server.calls("ListKernelSessionOutput")) == 2

    server.kernel_push_error = "Notebook slug is invalid"
    bad = ka.call("push", lambda: api.kernels_push(str(folder)))
    with pytest.raises(KaggleError, match="Notebook slug is invalid"):
        ka.check_reported("push kernel 'testuser/hcd-train'", bad)


def test_dataset_create_and_version(kaggle_env, tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\x00\x01" * 5000)
    (folder / "dataset-metadata.json").write_text(
        json.dumps({"id": "testuser/hcd-weights", "title": "hcd weights", "licenses": [{"name": "CC0-1.0"}]})
    )
    kaggle_env.server.dataset_processing_polls = 0  # the round-trip, not the processing wait (test_kaggle_limits)
    api = ka.get_api()
    created = ka.check_reported("create", ka.call("create", lambda: api.dataset_create_new(str(folder), quiet=True)))
    assert created.status == "Ok"
    server = kaggle_env.server
    assert server.calls("GetDatasetStatus")  # asked first, answered 404
    (blob,) = [b for b in server.blobs.values() if b.kind == "DATASET"]
    assert blob.name == "weights.bin" and bytes(blob.data) == (folder / "weights.bin").read_bytes()
    ka.check_reported("version", ka.call("version", lambda: api.dataset_create_version(str(folder), "v2", quiet=True)))
    assert len(server.datasets["testuser/hcd-weights"]["versions"]) == 2
    server.dataset_error = "Dataset is too big"
    with pytest.raises(KaggleError, match="too big"):
        ka.check_reported(
            "version", ka.call("version", lambda: api.dataset_create_version(str(folder), "v3", quiet=True))
        )


def test_endpoint_follows_environment_at_call_time(kaggle_env, kaggle_competition, monkeypatch):
    _list_files()  # imported and authenticated with LOCALHOST
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "PROD")
    assert "--local" not in ka.get_api().args
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    assert "--local" in ka.get_api().args


# ------------------------------------------------------------------------------------------- failures
def test_no_credentials(kaggle_env, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    with pytest.raises(KaggleError, match="KAGGLE_USERNAME and KAGGLE_KEY.*kaggle.json.*KAGGLE_API_TOKEN"):
        ka.get_api()


def test_wrong_key_is_401_without_leaking(kaggle_env, kaggle_competition, monkeypatch):
    monkeypatch.setenv("KAGGLE_KEY", "wrong-key-1234")
    with pytest.raises(KaggleError, match="HTTP 401") as err:
        _list_files()
    assert "wrong-key-1234" not in str(err.value) and "settings/api" in str(err.value)


def test_403_names_the_rules_page(kaggle_env, kaggle_competition):
    kaggle_env.server.rules_accepted[C] = False
    with pytest.raises(KaggleError, match=rf"HTTP 403.*https://www.kaggle.com/c/{C}/rules"):
        _list_files()


def test_error_inside_200_is_mapped_by_its_code(kaggle_env, kaggle_competition):
    kaggle_env.server.fail_in_body("ListDataFiles", code=403, message="Permission 'x' was denied")
    with pytest.raises(KaggleError, match="HTTP 403, forbidden: Permission 'x' was denied"):
        _list_files()


def test_404_names_the_unknown_thing(kaggle_env):
    api = ka.get_api()
    with pytest.raises(KaggleError, match="Kaggle does not know competition 'nope' \\(HTTP 404\\)"):
        ka.call("list files", lambda: api.competition_list_files("nope"), not_found="competition 'nope'")


def test_5xx_retried_then_given_up(kaggle_env, kaggle_competition):
    kaggle_env.server.fail("ListDataFiles", status=503, times=10)
    with pytest.raises(KaggleError, match="HTTP 503.*after 3 attempts"):
        _list_files(retries=2)
    assert len(kaggle_env.server.calls("ListDataFiles")) == 3


def test_429_then_success(kaggle_env, kaggle_competition):
    kaggle_env.server.fail("ListDataFiles", status=429, times=2)
    assert len(_list_files(retries=3).files) == 4
    assert len(kaggle_env.server.calls("ListDataFiles")) == 3


def test_4xx_not_retried(kaggle_env, kaggle_competition):
    kaggle_env.server.fail("ListDataFiles", status=400, times=5, message="bad page size")
    with pytest.raises(KaggleError, match="HTTP 400: bad page size"):
        _list_files(retries=3)
    assert len(kaggle_env.server.calls("ListDataFiles")) == 1


def test_stalled_server_hits_outer_timeout(kaggle_env, kaggle_competition):
    server = kaggle_env.server
    server.delay("ListDataFiles", seconds=60)  # an answer only after a minute: waiting for it would fail the raises
    with pytest.raises(KaggleError, match="no answer from Kaggle within 0.5 s"):
        _list_files(timeout=0.5)
    # hcd gave up on the one request it sent (no retry after a time-out) while the server still held it unanswered
    assert server.wait_held(1) == 1 and len(server.calls("ListDataFiles")) == 1


def test_redact_removes_every_known_secret(kaggle_env):
    text = f"key={FAKE_KAGGLE_KEY} header=Basic dGVzdHVzZXI6c2VjcmV0 Bearer abc.def"
    clean = ka.redact(text)
    assert FAKE_KAGGLE_KEY not in clean and "dGVzdHVzZXI6c2VjcmV0" not in clean and "abc.def" not in clean


def test_timeout_env_must_be_a_number(kaggle_env, monkeypatch):
    monkeypatch.setenv("HCD_KAGGLE_TIMEOUT", "soon")
    with pytest.raises(KaggleError, match="HCD_KAGGLE_TIMEOUT='soon' is not a number"):
        ka.call("x", lambda: 1)


def test_access_token_credentials(kaggle_env, kaggle_competition, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    monkeypatch.setenv("KAGGLE_API_TOKEN", "tok-abcdef-123456")
    kaggle_env.server.tokens["tok-abcdef-123456"] = "tokenuser"
    assert len(_list_files().files) == 4
    assert ka.username() == "tokenuser"
    assert kaggle_env.server.calls("ListDataFiles")[-1].headers["authorization"] == "Bearer tok-abcdef-123456"
    assert "tok-abcdef-123456" not in ka.redact("token tok-abcdef-123456 in a message")


def test_stalled_token_check_hits_the_outer_timeout(kaggle_env, kaggle_competition, monkeypatch):
    # With a token the client asks the server to introspect it: a network call that has no limit of its own.
    server = kaggle_env.server
    ka.get_api()  # the client imported (with key credentials, no network) whether or not a test before did it
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    monkeypatch.setenv("KAGGLE_API_TOKEN", "tok-stall-000001")
    server.tokens["tok-stall-000001"] = "tokenuser"
    server.delay("IntrospectToken", seconds=60)
    with pytest.raises(
        KaggleError, match="no answer from Kaggle within 0.5 s while trying to check the Kaggle credentials"
    ):
        ka.get_api(timeout=0.5)
    assert server.wait_held(1) == 1 and len(server.calls("IntrospectToken")) == 1  # given up on, still unanswered


# ------------------------------------------------------------------------------------------- issue 9
def test_submission_404_says_the_competition_may_not_take_submissions(kaggle_env, tmp_path):
    """Kaggle answers 404 for a competition that takes no (more, or late) submissions: the line says so."""
    from hcd_kit.kaggle.submit import submit_file

    sample, sub = tmp_path / "sample_submission.csv", tmp_path / "submission.csv"
    sample.write_text("id,label\nabc,0\n")
    sub.write_text("id,label\nabc,0.5\n")
    with pytest.raises(KaggleError) as err:
        submit_file(sub, "late", sample, "ended-challenge", tmp_path / "ledger.jsonl")
    line = str(err.value)
    assert "HTTP 404" in line and "competition 'ended-challenge'" in line and "\n" not in line
    assert "accepts submissions" in line and "late submissions" in line
    assert not (tmp_path / "ledger.jsonl").exists()
    # a download's 404 is only about the name
    with pytest.raises(KaggleError) as err:
        ka.download_competition_archive("ended-challenge", tmp_path / "dl")
    assert "HTTP 404" in str(err.value) and "submissions" not in str(err.value)


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("endpoint", ["GetKernelSessionStatus", "ListKernelSessionOutput"])
def test_kernel_status_and_output_denied_get_hcds_hint(kaggle_env, tmp_path, endpoint, status):
    """kaggle >= 2.0.2 re-raises a 401/403 there as a ValueError about benchmark_task_slug: hcd's hint instead."""
    kaggle_env.server.fail(endpoint, status=status, message="Permission 'kernels.get' was denied")
    api = ka.get_api()
    ref = "someone/private-kernel"
    fn = (
        (lambda: api.kernels_status(ref))
        if endpoint == "GetKernelSessionStatus"
        else (lambda: api.kernels_output(ref, str(tmp_path / "out"), force=True, quiet=True))
    )
    with pytest.raises(KaggleError) as err:
        ka.call(f"get kernel '{ref}'", fn, not_found=f"kernel '{ref}'")
    line = str(err.value)
    assert "benchmark" not in line and "leaderboard" not in line and "\n" not in line
    assert f"HTTP {status}" in line and "Permission 'kernels.get' was denied" in line
    if status == 401:
        assert "KAGGLE_USERNAME" in line and "settings/api" in line
    else:
        assert "has access to kernel 'someone/private-kernel'" in line and "private" in line
    assert len(kaggle_env.server.calls(endpoint)) == 1  # a refusal is not retried
