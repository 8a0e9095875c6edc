"""A local stand-in for the Kaggle API server, good enough for the official ``kaggle`` client to round-trip.

The real client (``kaggle`` 2.2 / ``kagglesdk`` 0.1) is pointed at it with ``KAGGLE_API_ENVIRONMENT=LOCALHOST``
plus ``HTTP_PROXY=http://127.0.0.1:PORT`` (and ``NO_PROXY`` empty): requests then sends absolute-URL request
lines (``POST http://localhost/api/v1/...``), which this server accepts as well as plain paths. The
``kaggle_server`` / ``kaggle_env`` fixtures in ``tests/conftest.py`` set all of that up.

Python API (what tests use)::

    stub = KaggleStub(credentials=("testuser", "secret")).start()   # or the `kaggle_server` fixture
    stub.url                        # "http://127.0.0.1:PORT"
    stub.add_competition("histopathologic-cancer-detection", zip_path)  # served by the download calls
    stub.rules_accepted["name"] = False   # download calls answer 403 "accept the rules"
    stub.corrupt_zip("name")        # serve the zip with one data byte flipped (CRC error)
    stub.valid_submission("name")   # bytes of a submission.csv that passes validation for that competition
    stub.fail("DownloadDataFiles", status=500, times=2, retry_after=None)  # HTTP error, next N calls
    stub.fail_in_body("SaveKernel", code=403, message="...", times=1)     # {"code":403,...} in an HTTP 200
    stub.delay("DownloadDataFiles", seconds=30, times=1)                   # stall (outer time limits)
    stub.wait_held(1)               # until that many requests are held in a delay; stub.held: how many now
    stub.requests                   # every request RECEIVED: Recorded(method, path, endpoint, body, headers, data)
    stub.calls("CreateSubmission")  # the Recorded requests of one endpoint, in order
    stub.stop()

Endpoints are named by their RPC method (``ListDataFiles``, ``DownloadDataFiles``, ``DownloadDataFile``,
``StartSubmissionUpload``, ``CreateSubmission``, ``ListSubmissions``, ``SaveKernel``,
``GetKernel``, ``GetKernelSessionStatus``, ``ListKernelSessionOutput``, ``GetAcceleratorQuotaStatistics``,
``StartBlobUpload``, ``GetDatasetStatus``,
``CreateDataset``, ``CreateDatasetVersion``, ``IntrospectToken``) plus two plain-HTTP ones: ``"GET"`` (any
file fetched by URL: competition zip or file, kernel output) and ``"PUT"`` (an upload to a createUrl).

State, inspectable and adjustable by tests:

- ``blobs[token] -> Blob(name, content_length, data: bytearray, kind)``: uploads (submission or dataset).
- ``submissions[competition] -> [dict]`` (newest first). A new submission is ``PENDING`` and turns
  ``COMPLETE`` after ``submission_polls`` ListSubmissions calls, scored by ``score_fn(csv_bytes) -> (public,
  private)`` (default ``("0.9000", "0.8900")``); ``submission_outcome="ERROR"`` makes it fail instead, listed
  with ``errorDescription`` = ``submission_error`` (Kaggle's reason).
- ``kernels[(user, slug)] -> Kernel(body, version, polls, outcome, failure_message, outputs, log)``: SaveKernel
  stores the request body; status answers ``QUEUED`` for the first ``kernel_polls // 2`` polls, ``RUNNING``
  until ``kernel_polls`` polls, then ``kernel_outcome`` (``"COMPLETE"`` or ``"ERROR"`` with
  ``kernel_failure``). Its outputs default to ``kernel_outputs`` (``{name: bytes}``) and ``kernel_log``;
  ListKernelSessionOutput pages them ``output_page_size`` at a time with ``nextPageToken``.
- ``kernel_next_outcomes[slug] -> [outcome, ...]``: each push of that kernel takes the next outcome from its list
  (then ``kernel_outcome``), e.g. one fold kernel of a fan-out that fails once and completes when pushed again.
- ``kernel_queued_extra[slug] -> n``: that kernel answers QUEUED for ``n`` more polls first (Kaggle taking its
  time to start a session; nothing waits for a GPU slot: a push beyond the limit below is refused).
- SaveKernel lists a ``kernelDataSources`` entry (owner/slug) that names no kernel pushed here, or one whose
  latest version did not end COMPLETE, as ``invalidKernelSources`` (Kaggle attaches only finished output).
- ``kernel_push_error`` (str): SaveKernel answers ``{"error": ...}`` in a 200 (the client does not raise).
- ``kernel_invalid_sources`` (``{"dataset"|"competition"|"kernel"|"model": [source, ...]}``): SaveKernel saves
  the kernel and lists those as ``invalidDatasetSources`` etc., as the service does for unattachable sources.
- ``datasets["owner/slug"] -> {"body": ..., "versions": [...]}``; ``dataset_error`` (str): CreateDataset /
  CreateDatasetVersion answer ``{"status": "Error", "error": ...}`` in a 200. CreateDataset for a slug that
  exists answers that the slug is already in use; ``dataset_lost_answers`` (int): that many CreateDataset calls
  create the dataset and then answer HTTP 503, as if the answer got lost (the caller retries).
- ``submissions_page_size_ignored`` (default False): ListSubmissions pages by ``page`` (1-based) and ``pageSize``
  (default 20); when True every page holds 50 whatever ``pageSize`` asks (issue #899's server). A page past the
  end is empty. A PENDING submission counts a poll only when it is on the page listed.
- ``tokens[access_token] -> username``: accepted ``KAGGLE_API_TOKEN`` values (IntrospectToken, Bearer auth).
- ``credentials=(user, key)``: when set, Basic auth must match (else HTTP 401); ``None`` accepts anyone.

The real service's limits, ON by default (set a knob to ``None``/0 in a test about something else):

- ``max_gpu_sessions`` (default 2; ``None``: no limit): at most that many GPU kernel versions QUEUED or RUNNING
  per account. A GPU push (``machineShape`` an Nvidia/Rtx shape, or ``enableGpu`` without a shape) beyond it is
  answered in an HTTP 200 with ``error`` = ``Maximum batch GPU session count of 2 reached``; no version is created
  and nothing queues. A session starts at its push and ends when a status call answers COMPLETE or ERROR (the
  stand-in's sessions advance by status polls), or when ``end_session(slug)`` ends it; a new version of the
  same kernel supersedes a live one (that one ends as ``cancel``: status follows the latest version).
  ``hold_gpu_session(slug, polls=n)`` takes a slot as a session started elsewhere (the web editor) would; it ends
  after ``n`` status calls of any kernel (``None``: only by ``end_session``). ``live_gpu_sessions()`` lists the
  live ones; ``peak_gpu_sessions`` is the most ever live at once; ``session_log`` is a list of ``(event, slug,
  version)`` with event ``"start"``, ``"end"``, ``"cancel"`` or ``"refused"`` (version 0: none was created).
- ``gpu_quota_hours`` (default 30.0) and ``session_hours`` (default 1.0): each GPU session, when it ends,
  consumes ``session_hours`` of the weekly quota, or the push's ``sessionTimeoutSeconds`` when smaller
  (``gpu_hours_used`` holds the sum; tests may set it). A GPU push when ``gpu_quota_hours - gpu_hours_used <= 0``
  is refused in a 200 with ``Maximum weekly GPU quota of 30.00 hours reached``. ``GetAcceleratorQuotaStatistics``
  (the client's ``quota_view``, kaggle >= 2.2.1) answers ``gpuQuota`` with ``timeUsed``, ``timeReserved`` (live
  sessions' hours) and ``totalTimeAllowed``, durations as ``"<seconds>s"``.
- ``dataset_processing_polls`` (default 2): a dataset created or versioned is processing for that many
  GetDatasetStatus calls (answered ``BLOBS_RECEIVED``, which the client returns as ``"blobs_received"``),
  then ``READY``. CreateDatasetVersion while it is processing is refused with HTTP 403; a SaveKernel naming it in
  ``datasetDataSources`` saves and runs the kernel but lists it in ``invalidDatasetSources``.
  ``datasets[ref]["processing"]`` holds the status calls left.
- Retired machine shapes are substituted silently (``RETIRED_SHAPES``: ``NvidiaTeslaP100`` -> ``NvidiaTeslaT4``,
  ``TpuV38`` / ``Tpu1VmV38`` -> ``TpuV5E8``, ``TpuV232`` / ``TpuV2256`` -> CPU ``""``). ``kernel_shapes[slug]`` is
  the shape the latest push of that kernel got (``NvidiaTeslaT4`` for ``enableGpu`` without a shape; ``""``:
  CPU).
- Kernel output: the client writes the session log ``<slug>.log`` (``kernel_log``, sent with the first page)
  after all the listed files, so it comes LAST in ``kernels_output``'s list, after e.g. ``run/train.log``. Output
  names may hold folders (``run/train.log``).

Uploads honour the resumable protocol: a PUT with ``Content-Range: bytes */N`` is a probe answered 200 when
all N bytes arrived, else 308 with ``Range: bytes=0-<last>``; a PUT with ``Content-Range: bytes a-b/N``
appends at ``a``. Note that the client itself retries some calls (StartBlobUpload, CreateDatasetVersion,
SaveKernel...) on 429/5xx with its own backoff, so inject at most one or two such faults there.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

ISO_DATE = "2024-01-02T03:04:05.000Z"
# Retired machine shapes and what the service runs instead (kaggle's _RETIRED_ACCELERATORS, PR #1192); "" = CPU
RETIRED_SHAPES = {
    "NvidiaTeslaP100": "NvidiaTeslaT4",
    "TpuV38": "TpuV5E8",
    "Tpu1VmV38": "TpuV5E8",
    "TpuV232": "",
    "TpuV2256": "",
}
GPU_SHAPE_PREFIXES = ("Nvidia", "Rtx")
DATASET_PROCESSING = "BLOBS_RECEIVED"  # a DatabundleVersionStatus before READY
LAST_MODIFIED = formatdate(1704164645, usegmt=True)  # an HTTP date; an ISO date crashes the client


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str  # without scheme/host, even when the request line was an absolute URL
    endpoint: str  # RPC method name, "GET" or "PUT"
    body: Any  # parsed JSON body of an RPC (None otherwise)
    headers: dict[str, str]
    data: bytes  # raw request body


@dataclass
class Fault:
    kind: str  # "status" | "body" | "delay"
    times: int
    status: int = 500
    message: str = ""
    seconds: float = 0.0
    retry_after: float | None = None


@dataclass
class Blob:
    name: str
    content_length: int
    kind: str  # "submission" | "DATASET" | ...
    data: bytearray = field(default_factory=bytearray)

    @property
    def complete(self) -> bool:
        return len(self.data) >= self.content_length


@dataclass
class Kernel:
    body: dict
    version: int = 1
    polls: int = 0
    outcome: str = "COMPLETE"
    failure_message: str = ""
    outputs: dict[str, bytes] = field(default_factory=dict)
    log: str = ""
    queued_extra: int = 0  # more QUEUED polls first (Kaggle taking its time to start the session)


@dataclass
class Session:
    """A live GPU session: a kernel version QUEUED or RUNNING, or a slot held as by the web editor."""

    slug: str
    version: int
    hours: float  # quota it consumes when it ends
    polls_left: int | None = None  # held slot: ends after that many status calls of any kernel


@dataclass
class Competition:
    zip_path: Path
    corrupt: bool = False


class _Reply(Exception):
    """Raised inside a handler to send an HTTP status with a JSON error body."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class KaggleStub:
    """The stand-in server: start(), stop(), state and fault injection (see the module docstring)."""

    def __init__(self, credentials: tuple[str, str] | None = None, workdir: Path | None = None) -> None:
        self.credentials = credentials
        self.workdir = workdir
        self.requests: list[Recorded] = []
        self.competitions: dict[str, Competition] = {}
        self.rules_accepted: dict[str, bool] = {}
        self.blobs: dict[str, Blob] = {}
        self.submissions: dict[str, list[dict]] = {}
        self.submission_polls = 2
        self.submission_outcome = "COMPLETE"
        self.submission_error = "Submission scoring failed"  # errorDescription of an ERROR submission
        self.score_fn: Callable[[bytes], tuple[str, str]] = lambda data: ("0.9000", "0.8900")
        self.kernels: dict[tuple[str, str], Kernel] = {}
        self.kernel_polls = 2
        self.kernel_outcome = "COMPLETE"
        self.kernel_failure = "Your notebook hit an error"
        self.kernel_outputs: dict[str, bytes] = {"submission.csv": b"id,label\n"}
        self.kernel_log = '[{"stream_name":"stdout","time":1.0,"data":"hello\\n"}]'
        self.kernel_push_error: str | None = None
        self.kernel_invalid_sources: dict[str, list[str]] = {}
        self.kernel_next_outcomes: dict[str, list[str]] = {}
        self.kernel_queued_extra: dict[str, int] = {}
        self.output_page_size = 2
        self.submissions_page_size_ignored = False
        # the real service's limits (module docstring)
        self.max_gpu_sessions: int | None = 2
        self.gpu_quota_hours = 30.0
        self.session_hours = 1.0
        self.gpu_hours_used = 0.0
        self.dataset_processing_polls = 2
        self.gpu_sessions: dict[str, Session] = {}
        self.peak_gpu_sessions = 0
        self.session_log: list[tuple[str, str, int]] = []
        self.kernel_shapes: dict[str, str] = {}
        self.datasets: dict[str, dict] = {}
        self.models: dict[str, list[str]] = {}  # "owner/model/framework/variation/version" -> file names
        self.dataset_error: str | None = None
        self.dataset_lost_answers = 0
        self.tokens: dict[str, str] = {}
        self._faults: dict[str, list[Fault]] = {}
        self._lock = threading.RLock()
        self._ids = itertools.count(1000)
        self._stop = threading.Event()
        self.held = 0  # requests sleeping in an injected delay right now: received, not answered
        self._held_changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> KaggleStub:
        handler = type("Handler", (_Handler,), {"stub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes handlers sleeping in an injected delay
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def port(self) -> int:
        assert self._server is not None, "call start() first"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ test API
    def add_competition(self, name: str, zip_path: Path, rules_accepted: bool = True) -> None:
        self.competitions[name] = Competition(Path(zip_path))
        self.rules_accepted[name] = rules_accepted

    def valid_submission(self, name: str, label: float = 0.5) -> bytes:
        """A submission.csv that passes validation for competition ``name`` (every id of its sample), e.g. for
        ``kernel_outputs["submission.csv"]``: what a kernel that ran hcd predict leaves in its output."""
        with zipfile.ZipFile(self.competitions[name].zip_path) as zf:
            lines = zf.read("sample_submission.csv").decode().splitlines()
        return ("id,label\n" + "".join(f"{line.split(',')[0]},{label}\n" for line in lines[1:] if line)).encode()

    def corrupt_zip(self, name: str) -> None:
        self.competitions[name].corrupt = True

    def fail(
        self,
        endpoint: str,
        status: int = 500,
        times: int = 1,
        message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self._add_fault(
            endpoint, Fault("status", times, status, message or f"injected HTTP {status}", retry_after=retry_after)
        )

    def fail_in_body(self, endpoint: str, code: int = 403, message: str = "Permission denied", times: int = 1) -> None:
        self._add_fault(endpoint, Fault("body", times, code, message))

    def delay(self, endpoint: str, seconds: float, times: int = 1) -> None:
        self._add_fault(endpoint, Fault("delay", times, seconds=seconds))

    def calls(self, endpoint: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.endpoint == endpoint]

    # ------------------------------------------------------------------ GPU sessions and quota
    def live_gpu_sessions(self) -> list[str]:
        """The slugs of the GPU sessions live now (QUEUED or RUNNING, or held)."""
        with self._lock:
            return sorted(self.gpu_sessions)

    def hold_gpu_session(self, slug: str, polls: int | None = None, hours: float | None = None) -> None:
        """Take a GPU slot as a session started elsewhere (the web editor) does; it ends after ``polls`` status
        calls of any kernel (``None``: only by ``end_session``)."""
        with self._lock:
            self._start_session(Session(slug, 1, self.session_hours if hours is None else hours, polls))

    def end_session(self, slug: str, event: str = "end") -> None:
        """End a live GPU session now: it consumes its hours, and a kernel's next status is its outcome."""
        with self._lock:
            session = self.gpu_sessions.pop(slug, None)
            if session is None:
                return
            self.gpu_hours_used += session.hours
            self.session_log.append((event, slug, session.version))
            for (_, short), kernel in self.kernels.items():
                if short == slug and kernel.version == session.version:
                    kernel.polls = max(kernel.polls, kernel.queued_extra + self.kernel_polls + 1)

    def _start_session(self, session: Session) -> None:
        self.gpu_sessions[session.slug] = session
        self.session_log.append(("start", session.slug, session.version))
        self.peak_gpu_sessions = max(self.peak_gpu_sessions, len(self.gpu_sessions))

    def _gpu_refusal(self) -> str | None:
        """Why the service refuses one more GPU session now (``None``: it starts)."""
        if self.max_gpu_sessions is not None and len(self.gpu_sessions) >= self.max_gpu_sessions:
            return f"Maximum batch GPU session count of {self.max_gpu_sessions} reached"
        if self.gpu_quota_hours - self.gpu_hours_used <= 0:
            return f"Maximum weekly GPU quota of {self.gpu_quota_hours:.2f} hours reached"
        return None

    def _tick_held_sessions(self) -> None:
        for session in list(self.gpu_sessions.values()):
            if session.polls_left is not None:
                session.polls_left -= 1
                if session.polls_left <= 0:
                    self.end_session(session.slug)

    def _add_fault(self, endpoint: str, fault: Fault) -> None:
        with self._lock:
            self._faults.setdefault(endpoint, []).append(fault)

    def _take_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(endpoint, [])
            while queue and queue[0].times <= 0:
                queue.pop(0)
            if not queue:
                return None
            queue[0].times -= 1
            return queue[0]

    def sleep(self, seconds: float) -> None:
        with self._held_changed:
            self.held += 1
            self._held_changed.notify_all()
        try:
            self._stop.wait(seconds)
        finally:
            with self._held_changed:
                self.held -= 1
                self._held_changed.notify_all()

    def wait_held(self, n: int = 1, timeout: float = 120.0) -> int:
        """Block until ``n`` requests are held in an injected delay (``timeout`` only stops a hang); return how
        many are. A client's time limit is then checked by work, not by a clock: it gave up while its request
        was still unanswered."""
        with self._held_changed:
            self._held_changed.wait_for(lambda: self.held >= n, timeout)
            return self.held

    # ------------------------------------------------------------------ competitions
    def _competition(self, name: str) -> Competition:
        comp = self.competitions.get(name)
        if comp is None:
            raise _Reply(404, f"Competition '{name}' not found")
        if not self.rules_accepted.get(name, True):
            raise _Reply(403, "You must accept this competition's rules before you'll be able to download files.")
        return comp

    def _zip_bytes(self, comp: Competition) -> bytes:
        data = bytearray(comp.zip_path.read_bytes())
        if comp.corrupt:
            with zipfile.ZipFile(comp.zip_path) as zf:
                info = next(i for i in zf.infolist() if i.file_size > 0)
            start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
            data[start + min(info.compress_size // 2, 64)] ^= 0xFF  # inside the data: a CRC failure
        return bytes(data)

    def rpc_ListDataFiles(self, body: dict, user: str) -> dict:
        comp = self._competition(body.get("competitionName", ""))
        with zipfile.ZipFile(comp.zip_path) as zf:
            names = sorted({i.filename.split("/")[0] for i in zf.infolist()})
            sizes = {n: sum(i.file_size for i in zf.infolist() if i.filename.split("/")[0] == n) for n in names}
        start = int(body.get("pageToken") or 0)
        size = int(body.get("pageSize") or 20)
        page = names[start : start + size]
        out: dict = {"files": [{"name": n, "totalBytes": sizes[n], "creationDate": ISO_DATE} for n in page]}
        if start + size < len(names):
            out["nextPageToken"] = str(start + size)
        return out

    def rpc_DownloadDataFiles(self, body: dict, user: str) -> dict:
        name = body.get("competitionName", "")
        self._competition(name)
        raise _Reply(302, "", {"Location": f"{self.url}/stub/files/competitions/{name}/{name}.zip"})

    def rpc_DownloadDataFile(self, body: dict, user: str) -> dict:
        name, file_name = body.get("competitionName", ""), body.get("fileName", "")
        self._competition(name)
        raise _Reply(302, "", {"Location": f"{self.url}/stub/files/competitions/{name}/{file_name}"})

    def get_file(self, path: str) -> bytes:
        segments = path.split("/")  # "", "stub", "files", <kind>, ...
        kind = segments[3] if len(segments) > 3 else ""
        parts = [unquote(p) for p in segments[4:]]
        if kind == "competitions" and len(parts) >= 2:
            comp = self._competition(parts[0])
            rest = "/".join(parts[1:])
            if rest == f"{parts[0]}.zip":
                return self._zip_bytes(comp)
            with zipfile.ZipFile(comp.zip_path) as zf:
                if rest in zf.namelist():
                    return zf.read(rest)
        if kind == "kernels" and len(parts) >= 3:
            kernel = self.kernels.get((parts[0], parts[1]))
            name = "/".join(parts[2:])  # output names may hold folders: run/train.log
            if kernel is not None and name in kernel.outputs:
                return kernel.outputs[name]
        raise _Reply(404, f"no file at {path}")

    # ------------------------------------------------------------------ submissions
    def rpc_StartSubmissionUpload(self, body: dict, user: str) -> dict:
        self._competition(body.get("competitionName", ""))
        token = f"sub-{next(self._ids)}"
        self.blobs[token] = Blob(body.get("fileName", ""), int(body.get("contentLength") or 0), "submission")
        return {"token": token, "createUrl": f"{self.url}/stub/upload/{token}"}

    def rpc_CreateSubmission(self, body: dict, user: str) -> dict:
        name = body.get("competitionName", "")
        self._competition(name)
        blob = self.blobs.get(body.get("blobFileTokens", ""))
        if blob is None or not blob.complete:
            raise _Reply(400, "Submission file was not uploaded")
        ref = next(self._ids)
        self.submissions.setdefault(name, []).insert(
            0,
            {
                "ref": ref,
                "fileName": blob.name,
                "date": ISO_DATE,
                "totalBytes": len(blob.data),
                "description": body.get("submissionDescription", ""),
                "status": "PENDING",
                "_polls": self.submission_polls,
                "_data": bytes(blob.data),
            },
        )
        return {"message": f"Successfully submitted to {name}", "ref": ref}

    def rpc_ListSubmissions(self, body: dict, user: str) -> dict:
        name = body.get("competitionName", "")
        if name not in self.competitions:
            raise _Reply(404, f"Competition '{name}' not found")
        out = []
        size = 50 if self.submissions_page_size_ignored else int(body.get("pageSize") or 20)
        start = (max(int(body.get("page") or 1), 1) - 1) * size
        for sub in self.submissions.get(name, [])[start : start + size]:
            if sub["status"] == "PENDING":
                sub["_polls"] -= 1
                if sub["_polls"] <= 0:
                    if self.submission_outcome == "ERROR":
                        sub.update(status="ERROR", errorDescription=self.submission_error)
                    else:
                        public, private = self.score_fn(sub["_data"])
                        sub.update(status="COMPLETE", publicScore=public, privateScore=private)
            out.append({k: v for k, v in sub.items() if not k.startswith("_")})
        return {"submissions": out}

    # ------------------------------------------------------------------ kernels
    def rpc_SaveKernel(self, body: dict, user: str) -> dict:
        if self.kernel_push_error:
            return {"error": self.kernel_push_error}
        slug = body.get("slug", "")
        owner, _, short = slug.rpartition("/")
        key = (owner or user, short)
        old = self.kernels.get(key)
        asked = body.get("machineShape") or ("NvidiaTeslaT4" if body.get("enableGpu") else "")
        shape = RETIRED_SHAPES.get(asked, asked)
        gpu = shape.startswith(GPU_SHAPE_PREFIXES)
        if gpu and (refusal := self._gpu_refusal()):
            self.session_log.append(("refused", short, 0))
            return {"error": refusal}  # in an HTTP 200, and no version is created
        self.kernel_shapes[short] = shape
        unfinished = [ref for ref in body.get("kernelDataSources") or [] if not self._finished(ref)]
        queued = self.kernel_next_outcomes.get(short) or []
        self.kernels[key] = Kernel(
            body=body,
            version=(old.version + 1) if old else 1,
            outcome=queued.pop(0) if queued else self.kernel_outcome,
            failure_message=self.kernel_failure,
            outputs=dict(self.kernel_outputs),
            log=self.kernel_log,
            queued_extra=self.kernel_queued_extra.get(short, 0),
        )
        kernel = self.kernels[key]
        if short in self.gpu_sessions:  # the stand-in follows the latest version only: the old one ends
            self.end_session(short, "cancel")
        if gpu:
            hours, cap = self.session_hours, body.get("sessionTimeoutSeconds")
            self._start_session(Session(short, kernel.version, min(hours, int(cap) / 3600) if cap else hours))
        invalid = {
            f"invalid{kind.capitalize()}Sources": list(sources)
            for kind, sources in self.kernel_invalid_sources.items()
            if sources
        }
        if unfinished:
            invalid["invalidKernelSources"] = invalid.get("invalidKernelSources", []) + unfinished
        processing = [ref for ref in body.get("datasetDataSources") or [] if self._dataset_processing(ref)]
        if processing:
            invalid["invalidDatasetSources"] = invalid.get("invalidDatasetSources", []) + processing
        return {
            "ref": f"/code/{key[0]}/{key[1]}",
            "url": f"{self.url}/code/{key[0]}/{key[1]}",
            "versionNumber": kernel.version,
            "kernelId": next(self._ids),
            **invalid,
        }

    def _finished(self, ref: str) -> bool:
        """Whether kernel ``owner/slug`` exists here and its latest version ended COMPLETE (attachable output)."""
        kernel = self.kernels.get(tuple(ref.split("/", 1)))  # type: ignore[arg-type]
        return (
            kernel is not None
            and kernel.outcome == "COMPLETE"
            and kernel.polls - kernel.queued_extra > self.kernel_polls
        )

    def _kernel(self, body: dict) -> Kernel:
        kernel = self.kernels.get((body.get("userName", ""), body.get("kernelSlug", "")))
        if kernel is None:
            raise _Reply(404, f"Kernel '{body.get('userName')}/{body.get('kernelSlug')}' not found")
        return kernel

    def rpc_GetKernel(self, body: dict, user: str) -> dict:
        """The kernel's metadata (``currentVersionNumber``: its latest version) and source; 404 if never pushed."""
        kernel = self._kernel(body)
        owner, slug = body.get("userName", ""), body.get("kernelSlug", "")
        meta = {"ref": f"{owner}/{slug}", "slug": slug, "title": kernel.body.get("newTitle") or slug}
        blob = {"source": kernel.body.get("text", ""), "language": "python", "kernelType": "script", "slug": slug}
        return {"metadata": {**meta, "currentVersionNumber": kernel.version}, "blob": blob}

    def rpc_GetKernelSessionStatus(self, body: dict, user: str) -> dict:
        self._tick_held_sessions()
        kernel = self._kernel(body)
        kernel.polls += 1
        polls = kernel.polls - kernel.queued_extra
        if polls <= self.kernel_polls // 2:
            return {"status": "QUEUED"}
        if polls <= self.kernel_polls:
            return {"status": "RUNNING"}
        live = self.gpu_sessions.get(body.get("kernelSlug", ""))
        if live is not None and live.version == kernel.version and live.polls_left is None:
            self.end_session(live.slug)
        if kernel.outcome == "ERROR":
            return {"status": "ERROR", "failureMessage": kernel.failure_message}
        return {"status": kernel.outcome}

    def rpc_ListKernelSessionOutput(self, body: dict, user: str) -> dict:
        kernel = self._kernel(body)
        names = sorted(kernel.outputs)  # the client writes the session log after them all
        start = int(body.get("pageToken") or 0)
        size = min(int(body.get("pageSize") or 20), self.output_page_size)
        base = f"{self.url}/stub/files/kernels/{body['userName']}/{body['kernelSlug']}"
        out: dict = {"files": [{"fileName": n, "url": f"{base}/{n}"} for n in names[start : start + size]]}
        if start == 0 and kernel.log:
            out["log"] = kernel.log
        if start + size < len(names):
            out["nextPageToken"] = str(start + size)
        return out

    def rpc_GetAcceleratorQuotaStatistics(self, body: dict, user: str) -> dict:
        reserved = sum(s.hours for s in self.gpu_sessions.values())
        return {
            "quotaRefreshTime": ISO_DATE,
            "gpuQuota": {
                "timeUsed": f"{round(self.gpu_hours_used * 3600)}s",
                "timeReserved": f"{round(reserved * 3600)}s",
                "totalTimeAllowed": f"{round(self.gpu_quota_hours * 3600)}s",
                "hasEverRun": bool(self.session_log),
            },
            "tpuQuota": {"timeUsed": "0s", "totalTimeAllowed": f"{20 * 3600}s"},
        }

    # ------------------------------------------------------------------ blobs and datasets
    def rpc_StartBlobUpload(self, body: dict, user: str) -> dict:
        token = f"blob-{next(self._ids)}"
        self.blobs[token] = Blob(body.get("name", ""), int(body.get("contentLength") or 0), body.get("type", "DATASET"))
        return {"token": token, "createUrl": f"{self.url}/stub/upload/{token}"}

    def put_upload(self, token: str, headers: dict[str, str], data: bytes) -> tuple[int, dict[str, str]]:
        blob = self.blobs.get(token)
        if blob is None:
            return 404, {}
        crange = headers.get("content-range", "")
        if m := re.fullmatch(r"bytes \*/(\d+)", crange):  # resume probe
            if len(blob.data) >= int(m.group(1)):
                return 200, {}
            return 308, ({"Range": f"bytes=0-{len(blob.data) - 1}"} if blob.data else {})
        if m := re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", crange):
            del blob.data[int(m.group(1)) :]
        else:
            blob.data.clear()
        blob.data.extend(data)
        return (200, {}) if blob.complete else (308, {"Range": f"bytes=0-{len(blob.data) - 1}"})

    def _dataset_files_ok(self, files: list) -> None:
        for f in files or []:
            blob = self.blobs.get(f.get("token", ""))
            if blob is None or not blob.complete:
                raise _Reply(400, f"Unknown or incomplete upload token {f.get('token')!r}")

    def _dataset_processing(self, ref: str) -> bool:
        """Whether dataset ``owner/slug`` (a ``/versions/N`` tail ignored) exists here and is still processing."""
        dataset = self.datasets.get("/".join(ref.split("/")[:2]))
        return dataset is not None and dataset.get("processing", 0) > 0

    def rpc_ListModelInstanceVersionFiles(self, body: dict, user: str) -> dict:
        """The files of a model instance version (``models`` holds the ones that exist); 404 otherwise."""
        framework = str(body.get("framework", "")).lower().removeprefix("model_framework_").replace("_", "")
        keys = ("ownerSlug", "modelSlug", None, "instanceSlug", "versionNumber")
        ref = "/".join(framework if k is None else str(body.get(k, "")) for k in keys)
        known = {k.lower(): files for k, files in self.models.items()}  # the framework's case is the client's
        if ref.lower() not in known:
            raise _Reply(404, f"Model instance version '{ref}' not found")
        return {"files": [{"name": n, "size": 1} for n in known[ref.lower()][:1]]}

    def rpc_GetDatasetStatus(self, body: dict, user: str) -> dict:
        ref = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
        if ref not in self.datasets:
            raise _Reply(404, f"Dataset '{ref}' not found")
        dataset = self.datasets[ref]
        if dataset.get("processing", 0) > 0:
            dataset["processing"] -= 1
            return {"status": DATASET_PROCESSING}
        return {"status": "READY"}

    def rpc_CreateDataset(self, body: dict, user: str) -> dict:
        if self.dataset_error:
            return {"status": "Error", "error": self.dataset_error}
        self._dataset_files_ok(body.get("files"))
        ref = f"{body.get('ownerSlug') or user}/{body.get('slug')}"
        if ref in self.datasets:
            return {"status": "Error", "error": f'The requested slug "{body.get("slug")}" is already in use'}
        self.datasets[ref] = {"body": body, "versions": [body], "processing": self.dataset_processing_polls}
        if self.dataset_lost_answers > 0:
            self.dataset_lost_answers -= 1
            raise _Reply(503, "The service is unavailable")  # created, but the caller never hears so
        return {"ref": f"/datasets/{ref}", "url": f"{self.url}/datasets/{ref}", "status": "Ok"}

    def rpc_CreateDatasetVersion(self, body: dict, user: str) -> dict:
        if self.dataset_error:
            return {"status": "Error", "error": self.dataset_error}
        ref = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
        if ref not in self.datasets:
            raise _Reply(404, f"Dataset '{ref}' not found")
        if self.datasets[ref].get("processing", 0) > 0:  # the real text is generic: a caller cannot tell why
            raise _Reply(403, "Permission 'datasets.update' was denied")
        self._dataset_files_ok((body.get("body") or {}).get("files"))
        self.datasets[ref]["versions"].append(body)
        self.datasets[ref]["processing"] = self.dataset_processing_polls
        return {"ref": f"/datasets/{ref}", "url": f"{self.url}/datasets/{ref}", "status": "Ok"}

    def rpc_IntrospectToken(self, body: dict, user: str) -> dict:
        name = self.tokens.get(body.get("token", ""))
        return {"active": True, "username": name} if name else {"active": False}

    # ------------------------------------------------------------------ auth
    def authenticate(self, headers: dict[str, str], endpoint: str) -> str:
        """The caller's user name; raises a 401 reply when credentials are required and wrong."""
        auth = headers.get("authorization", "")
        if endpoint == "IntrospectToken":
            return ""
        if auth.startswith("Bearer "):
            user = self.tokens.get(auth[7:])
            if user is None:
                raise _Reply(401, "Unauthenticated")
            return user
        if auth.startswith("Basic "):
            user, _, key = base64.b64decode(auth[6:]).decode().partition(":")
            if self.credentials is None or (user, key) == tuple(self.credentials):
                return user
        elif self.credentials is None:
            return ""
        raise _Reply(401, "Unauthenticated")


class _Handler(BaseHTTPRequestHandler):
    stub: KaggleStub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def _path(self) -> str:
        return urlsplit(self.path).path if "://" in self.path else self.path.split("?")[0]

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _dispatch(self) -> None:
        stub = self.stub
        path = self._path()
        data = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        if path.startswith("/api/v1/"):
            endpoint = path.rsplit("/", 1)[-1]
        else:
            endpoint = self.command
        try:
            body = json.loads(data) if endpoint not in ("GET", "PUT") and data else None
        except ValueError:
            body = None
        with stub._lock:
            stub.requests.append(Recorded(self.command, path, endpoint, body, headers, data))
        try:
            self._handle(stub, endpoint, path, body or {}, headers, data)
        except _Reply as reply:
            if reply.status in (301, 302, 303, 307):
                self._send(reply.status, b"", reply.headers, "text/plain")
            else:
                self._send_json(reply.status, {"code": reply.status, "message": reply.message}, reply.headers)

    def _handle(
        self, stub: KaggleStub, endpoint: str, path: str, body: dict, headers: dict[str, str], data: bytes
    ) -> None:
        fault = stub._take_fault(endpoint)
        if fault is not None and fault.kind == "delay":
            stub.sleep(fault.seconds)
        elif fault is not None and fault.kind == "status":
            extra = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            raise _Reply(fault.status, fault.message, extra)
        elif fault is not None and fault.kind == "body":
            return self._send_json(200, {"code": fault.status, "message": fault.message})
        if endpoint == "GET" and path.startswith("/stub/files/"):
            return self._send_file(stub.get_file(path), headers)
        if endpoint == "PUT" and path.startswith("/stub/upload/"):
            status, extra = stub.put_upload(path.rsplit("/", 1)[-1], headers, data)
            return self._send_json(status, {}, extra)
        handler = getattr(stub, f"rpc_{endpoint}", None)
        if self.command != "POST" or handler is None:
            raise _Reply(404, f"unknown endpoint {self.command} {path}")
        user = stub.authenticate(headers, endpoint)
        with stub._lock:
            result = handler(body, user)
        self._send_json(200, result)

    def _send_file(self, blob: bytes, headers: dict[str, str]) -> None:
        extra = {"Last-Modified": LAST_MODIFIED, "Accept-Ranges": "bytes"}
        if m := re.fullmatch(r"bytes=(\d+)-", headers.get("range", "")):
            start = int(m.group(1))
            if start >= len(blob):
                return self._send(416, b"", extra, "application/octet-stream")
            extra["Content-Range"] = f"bytes {start}-{len(blob) - 1}/{len(blob)}"
            return self._send(206, blob[start:], extra, "application/octet-stream")
        self._send(200, blob, extra, "application/octet-stream")

    do_GET = do_POST = do_PUT = do_HEAD = _dispatch


def build_competition_zip(src: Path, dest: Path) -> Path:
    """Zip a competition-layout folder (train/, test/, two CSVs) the way Kaggle ships it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("sample_submission.csv", "train_labels.csv"):
            zf.write(src / name, name)
        for folder in ("test", "train"):
            for f in sorted((src / folder).iterdir()):
                zf.write(f, f"{folder}/{f.name}")
    return dest
