"""Shared fixtures: real competition patches (the sample shipped in the package, and hcd-mini when present).

The default suite needs nothing outside the repository: ``sample_root`` is the demo's 240 labelled and 40 test
real patches, laid out as the competition, and ``subset_factory`` draws from it. ``mini_root`` is the larger
``../shared/data/hcd-mini``; every test that uses it is marked ``shared_data`` and skipped, with the reason,
where that folder is absent (CI always has it). Tests marked ``gpu`` need a real CUDA GPU and are skipped, with
the reason, where none is visible (``pytest -m gpu`` runs them on a GPU machine).

Output is read at a fixed terminal width (``TEST_COLUMNS``): rich sizes hcd's consoles and Typer's help from
``COLUMNS`` or the terminal pytest runs in, so without it a test's outcome would depend on the caller's window.
Packages of the ``[dev]`` extra are imported with ``dev_extra``: missing, the test fails instead of skipping.
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
MINI = REPO.parent / "shared" / "data" / "hcd-mini"
MINI_MISSING = f"needs the real hcd-mini data set at {MINI} (present in CI; absent in a plain clone)"
NO_GPU = "needs a CUDA GPU"
TEST_COLUMNS = 80  # what CI (no terminal) gets anyway: the narrow case, where cropping and folding show


PINNED: dict[str, list[int]] = {}  # under xdist: the CPUs this worker could use, and the share it was pinned to


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (pyproject's addopts): one worker per usable CPU, at most 4 (each worker imports torch, and a
    suite this size gains little past 4); one where workers cannot be pinned (macOS, Windows), as they would
    oversubscribe the cores."""
    if not hasattr(os, "sched_setaffinity"):
        return 1
    return max(1, min(4, len(os.sched_getaffinity(0))))


def pytest_configure(config) -> None:
    """Fix the terminal width before any test module imports rich or Typer (both read it when first used):
    in-process consoles, Typer's help and every ``hcd`` subprocess then see ``TEST_COLUMNS`` columns.

    Under pytest-xdist each worker is pinned to its own share of the CPUs before torch is imported: hcd sizes its
    threads from the CPUs it may use, so two workers on two cores run one thread each, side by side, instead of
    two threads each fighting over both cores (5-10x slower). The subprocesses a test starts inherit the pin."""
    os.environ["COLUMNS"] = str(TEST_COLUMNS)
    os.environ.pop("TERMINAL_WIDTH", None)  # Typer's own cap on the help's width, read once at its import
    worker = getattr(config, "workerinput", None)
    if worker is not None and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        index, count = int(worker["workerid"].removeprefix("gw")), int(worker["workercount"])
        if count <= len(cpus):
            os.sched_setaffinity(0, cpus[index::count])
            PINNED.update(before=cpus, share=cpus[index::count])


def pytest_collection_modifyitems(config, items) -> None:
    """Any test that takes ``mini_root`` (directly or through a fixture) is a shared-data test; a ``gpu`` test
    is skipped where no CUDA GPU is visible."""
    gpu_missing = None
    for item in items:
        if "mini_root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)
        if item.get_closest_marker("gpu") is not None:
            if gpu_missing is None:
                import torch

                gpu_missing = not torch.cuda.is_available()
            if gpu_missing:
                item.add_marker(pytest.mark.skip(reason=NO_GPU))


@pytest.fixture(autouse=True)
def fixed_terminal_width(monkeypatch):
    """Every test reads output ``TEST_COLUMNS`` wide unless it asks for another width itself (``COLUMNS`` in a
    CliRunner's or a subprocess's env). hcd's consoles keep a width taken from ``COLUMNS`` when they were built
    (rich has no public way to drop it again): unset here, they follow ``COLUMNS`` at each print."""
    from hcd_kit.console import console, err_console

    monkeypatch.setenv("COLUMNS", str(TEST_COLUMNS))
    for c in (console, err_console):
        monkeypatch.setattr(c, "_width", None)


def dev_extra(name: str) -> ModuleType:
    """Import ``name``, a package of the ``[dev]`` extra (pyproject.toml): the suite needs it, so a missing one
    fails the test, saying how to install it, instead of skipping it unnoticed."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing = exc
    pytest.fail(
        f'{name} is missing ({missing}); the tests need the [dev] extra: pip install -e ".[dev]"', pytrace=False
    )


@pytest.fixture(scope="session")
def mini_root() -> Path:
    """The real miniature competition (3,284 train, 546 test patches); CI has ../shared beside the clone."""
    if not (MINI / "train_labels.csv").is_file():
        pytest.skip(MINI_MISSING)
    return MINI


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    """The real patches shipped inside the package (240 labelled, 40 test) in the competition's layout."""
    from hcd_kit.data import materialise

    return materialise(tmp_path_factory.mktemp("sample")).root


@pytest.fixture(scope="session", params=["sample_root", pytest.param("mini_root", marks=pytest.mark.shared_data)])
def real_root(request) -> Path:
    """Each real data set in turn: the shipped sample always, hcd-mini where it is present."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def project(tmp_path) -> Path:
    """An empty working folder for commands that write beside themselves (rendered kernels land in
    ``project/kernels``), so tests never write into the real repository."""
    root = tmp_path / "project"
    root.mkdir()
    return root


@pytest.fixture(scope="session")
def checkout_wheel(tmp_path_factory) -> Path:
    """The wheel ``hcd dataset push`` builds from this checkout, built once for every test that installs it
    (read-only: copy it before changing anything)."""
    from hcd_kit.kaggle import build_wheel

    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session", autouse=True)
def shared_data_untouched():
    """hcd-mini is shared, read-only input (root can write to it anyway): no test may leave anything there."""
    before = sorted(p.name for p in MINI.iterdir()) if MINI.is_dir() else []
    yield
    after = sorted(p.name for p in MINI.iterdir()) if MINI.is_dir() else []
    assert after == before, f"tests wrote into {MINI}: {sorted(set(after) - set(before))}"


def make_subset(src: Path, dest: Path, n_train: int = 64, n_test: int = 16, seed: int = 0) -> Path:
    """Copy a stratified sample of the real patches in ``src`` into ``dest`` in the competition's exact layout."""
    mini = src
    labels = pd.read_csv(mini / "train_labels.csv", dtype={"id": str})
    per_class = max(1, n_train // 2)
    take = pd.concat(
        [g.sample(n=min(per_class, len(g)), random_state=seed) for _, g in labels.groupby("label")]
    ).sort_values("id")
    sub = pd.read_csv(mini / "sample_submission.csv", dtype={"id": str}).head(n_test)
    (dest / "train").mkdir(parents=True, exist_ok=True)
    (dest / "test").mkdir(parents=True, exist_ok=True)
    for i in take["id"]:
        shutil.copyfile(mini / "train" / f"{i}.tif", dest / "train" / f"{i}.tif")
    for i in sub["id"]:
        shutil.copyfile(mini / "test" / f"{i}.tif", dest / "test" / f"{i}.tif")
    take.to_csv(dest / "train_labels.csv", index=False)
    sub.to_csv(dest / "sample_submission.csv", index=False)
    return dest


def packed_subset(src: Path, dest: Path, n_train: int = 64, n_test: int = 16, n_folds: int = 2) -> Path:
    """``make_subset`` of ``src`` into ``dest``, packed (``hcd prepare``) and split into ``n_folds`` folds (seed 0):
    a data folder ready for ``hcd train``."""
    from hcd_kit.data import create_folds, prepare

    make_subset(src, dest, n_train, n_test)
    prepare(dest, workers=1)
    create_folds(dest, n_folds=n_folds, seed=0)
    return dest


def hub_snapshot(hf_home: Path, repo_id: str) -> Path:
    """The snapshot folder of ``repo_id`` in a Hugging Face hub cache under ``hf_home`` (HF_HOME), laid out as
    huggingface_hub leaves it after a download (``hub/models--ORG--NAME/{refs/main, snapshots/rev0}``): files
    written into it are what the hub client finds "downloaded", offline."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / "rev0"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text("rev0")
    return snap


def save_timm(model, folder: Path) -> Path:
    """``model``'s weights and timm's ``config.json`` in ``folder``: a ``local-dir:`` folder or a hub snapshot."""
    from safetensors.torch import save_file
    from timm.models._hub import save_config_for_hf

    folder.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), folder / "model.safetensors")
    save_config_for_hf(model, str(folder / "config.json"))
    return folder


@pytest.fixture
def subset_factory(sample_root, tmp_path):
    """``subset_factory(n_train=64, n_test=16)`` -> a fresh competition-layout folder of real patches under tmp_path.

    Drawn from the shipped sample (at most 240 labelled, 40 test), so it needs nothing outside the repository.
    """
    counter = iter(range(1000))

    def make(n_train: int = 64, n_test: int = 16, seed: int = 0) -> Path:
        return make_subset(sample_root, tmp_path / f"data{next(counter)}", n_train, n_test, seed)

    return make


# =============================================================================================================
# Kaggle stand-in (helper A1): a local server the real `kaggle` client talks to, and an environment pointing
# the client (in-process or in an `hcd` subprocess) at it. See tests/kaggle_stub.py for the server's API.
# =============================================================================================================
import subprocess  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

from kaggle_stub import KaggleStub, build_competition_zip  # noqa: E402

FAKE_KAGGLE_USER = "testuser"
# Searched for in outputs and written files to prove hcd never prints or writes the key.
FAKE_KAGGLE_KEY = "hcdfakekey-0c9d8e7f6a5b4c3d"
STUB_COMPETITION = "histopathologic-cancer-detection"


@dataclass
class KaggleEnv:
    """What ``kaggle_env`` gives a test: the server, the environment, and two ways to run ``hcd``."""

    server: KaggleStub
    home: Path
    env: dict[str, str] = field(repr=False)  # the full environment a subprocess gets
    user: str = FAKE_KAGGLE_USER
    key: str = FAKE_KAGGLE_KEY

    def run(
        self, *args: str, timeout: float = 120, cwd: Path | None = None, env: dict[str, str | None] | None = None
    ) -> subprocess.CompletedProcess:
        """``hcd ARGS...`` as a subprocess (exactly how the outside checks call it); text stdout/stderr."""
        full = dict(self.env)
        for k, v in (env or {}).items():
            if v is None:
                full.pop(k, None)
            else:
                full[k] = v
        exe = Path(sys.executable).with_name("hcd")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "hcd_kit"]
        return subprocess.run(
            cmd + [str(a) for a in args], env=full, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )

    def invoke(self, *args: str):
        """``hcd ARGS...`` in-process via typer's CliRunner (result.exit_code, .stdout, .stderr)."""
        from typer.testing import CliRunner

        from hcd_kit.cli import app

        return CliRunner().invoke(app, [str(a) for a in args])

    def assert_no_secret(self, *texts: str, paths: tuple[Path, ...] = ()) -> None:
        """Fail if the fake key appears in any text or in any file under ``paths`` (recursively)."""
        for text in texts:
            assert self.key not in (text or ""), "the Kaggle key leaked into output"
        needle = self.key.encode()
        for root in paths:
            files = [root] if Path(root).is_file() else [p for p in Path(root).rglob("*") if p.is_file()]
            for f in files:
                assert needle not in f.read_bytes(), f"the Kaggle key leaked into {f}"


class FakeClock:
    """A clock that moves only when code sleeps on it: ``monotonic()`` and ``time()`` read it, ``sleep(s)``
    advances it at once and records ``s`` in ``sleeps``. A wait with a time-out then counts polls, whatever the
    machine's speed."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    time = monotonic

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)


@pytest.fixture
def poll_clock(monkeypatch) -> FakeClock:
    """hcd's Kaggle polling in this process (``hcd_kit.kaggle.poll``: ``--wait``, ``--wait-timeout``,
    ``--score-timeout``, the backoff) on a ``FakeClock``: waits take no time and time-outs count polls."""
    import hcd_kit.kaggle.poll as poll

    clock = FakeClock()
    monkeypatch.setattr(poll, "time", clock)
    return clock


def ready_datasets(stub: KaggleStub, *refs: str) -> None:
    """Datasets ``owner/slug`` that exist on the stand-in, processed (READY), as if pushed long ago: ``hcd kernel
    push`` checks every dataset a kernel attaches before pushing it."""
    for ref in refs:
        stub.datasets.setdefault(ref, {"body": {}, "versions": [{}]})


def ready_models(stub: KaggleStub, *refs: str) -> None:
    """Model instance versions ``owner/model/framework/variation/version`` that exist on the stand-in: ``hcd kernel
    push`` checks every model a kernel attaches before pushing it."""
    for ref in refs:
        stub.models.setdefault(ref, ["model.safetensors"])


@pytest.fixture(scope="session")
def tiny_competition_zip(tmp_path_factory) -> Path:
    """A competition zip holding only sample_submission.csv: enough for ``hcd kernel push``'s source check."""
    import zipfile

    path = tmp_path_factory.mktemp("tiny-competition") / f"{STUB_COMPETITION}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("sample_submission.csv", "id,label\n")
    return path


@pytest.fixture
def kaggle_server(tiny_competition_zip):
    """A running ``KaggleStub`` that accepts Basic auth ``testuser`` / ``FAKE_KAGGLE_KEY`` only; the account's wheel
    dataset ``testuser/hcd-kit`` is there, READY (other datasets a test attaches: ``ready_datasets``), and the
    competition exists with its rules accepted (``kaggle_competition`` serves a real zip of it instead)."""
    stub = KaggleStub(credentials=(FAKE_KAGGLE_USER, FAKE_KAGGLE_KEY)).start()
    ready_datasets(stub, f"{FAKE_KAGGLE_USER}/hcd-kit")
    stub.add_competition(STUB_COMPETITION, tiny_competition_zip)
    yield stub
    stub.stop()


@pytest.fixture
def kaggle_env(kaggle_server, tmp_path, monkeypatch) -> KaggleEnv:
    """Point the real kaggle client at ``kaggle_server`` for this test, in-process and in subprocesses.

    HOME, KAGGLE_CONFIG_DIR and TMPDIR go to fresh folders; other KAGGLE_* vars are cleared; credentials are
    KAGGLE_USERNAME=testuser + KAGGLE_KEY=FAKE_KAGGLE_KEY; KAGGLE_API_ENVIRONMENT=LOCALHOST; HTTP(S)_PROXY is
    the server, NO_PROXY empty. hcd's own retry backoff is shortened (HCD_KAGGLE_BACKOFF=0.05) and its
    time limit set to 20 s so error paths stay fast; hcd's state folder (HCD_STATE_DIR) is the test's own.
    """
    home = tmp_path / "kaggle-home"
    for sub in ("home", "config", "tmp"):
        (home / sub).mkdir(parents=True)
    for name in list(os.environ):
        if name.startswith(("KAGGLE_", "HCD_KAGGLE_")) or name.lower() in ("https_proxy", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
    settings = {
        "HOME": str(home / "home"),
        "KAGGLE_CONFIG_DIR": str(home / "config"),
        "TMPDIR": str(home / "tmp"),
        "KAGGLE_USERNAME": FAKE_KAGGLE_USER,
        "KAGGLE_KEY": FAKE_KAGGLE_KEY,
        "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
        "HTTP_PROXY": kaggle_server.url,
        "http_proxy": kaggle_server.url,
        "NO_PROXY": "",
        "no_proxy": "",
        "HCD_KAGGLE_BACKOFF": "0.05",
        "HCD_KAGGLE_TIMEOUT": "20",
        "HCD_STATE_DIR": str(home / "state"),  # the account's GPU-slot ledger: one per test, never the user's
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return KaggleEnv(server=kaggle_server, home=home, env=dict(os.environ))


@pytest.fixture
def kaggle_competition(kaggle_server, subset_factory, tmp_path):
    """Register a small real competition zip (24 train, 8 test patches) on the server.

    Returns ``(source_dir, zip_path)``: the competition-layout folder the zip was built from, and the zip.
    """
    src = subset_factory(n_train=24, n_test=8)
    zip_path = build_competition_zip(src, tmp_path / "served" / f"{STUB_COMPETITION}.zip")
    kaggle_server.add_competition(STUB_COMPETITION, zip_path)
    return src, zip_path


def interruptible() -> None:
    """``preexec_fn`` for an ``hcd`` subprocess a test will signal: SIGINT and SIGHUP at their defaults, as in a
    terminal.

    A test run started in the background of a non-interactive shell (``pytest &``, a CI step run as ``cmd &``)
    inherits SIGINT *ignored*, and one started under ``nohup`` inherits SIGHUP ignored, and so does every child it
    starts; hcd rightly keeps an inherited ignore (a background job must survive the terminal's Ctrl-C, a nohup job
    its hang-up), so the test would wait for an exit that never comes."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def signal_and_wait(proc: subprocess.Popen, sig: int, timeout: float = 60.0) -> str:
    """Send ``sig`` to ``proc`` and wait for it to end; returns its stderr. If it does not end in ``timeout`` s,
    fail with what the process was doing: its signal masks (``/proc/PID/status``: blocked, ignored, caught) and,
    where py-spy is installed, its Python stacks, so an interrupt that got lost can be diagnosed from CI's log."""
    proc.send_signal(sig)
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        import shutil

        status = Path(f"/proc/{proc.pid}/status")
        masks = [ln for ln in status.read_text().splitlines() if ln.startswith("Sig")] if status.exists() else []
        spy = shutil.which("py-spy")
        stacks = (
            subprocess.run([spy, "dump", "--pid", str(proc.pid)], capture_output=True, text=True).stdout
            if spy
            else "(py-spy not installed: no stacks)"
        )
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"no exit {timeout:g} s after signal {sig}; {masks}\n{stacks}\nstdout: {out}\nstderr: {err}")


def hold_in_another_process(folder: Path, command: str) -> subprocess.Popen:
    """A process that holds ``folder``'s lock (``hcd_kit.locks.hold``) as ``command`` would, until it is killed."""
    script = (
        "import sys, time\nfrom hcd_kit.locks import hold\n"
        "with hold(sys.argv[1], sys.argv[2]):\n    print('held', flush=True)\n    time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(folder), command], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc
