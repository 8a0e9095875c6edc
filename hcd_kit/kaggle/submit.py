"""Uploading a checked submission to Kaggle, waiting for its score, and refreshing the ledger's scores.

``submit_file`` validates the CSV first (an invalid file is never uploaded), runs the client's three-step
upload through the gateway, and treats the client's silent failure (``ref`` 0 / "Could not submit")
as an error; only an accepted submission is appended to the ledger, so the ledger mirrors what Kaggle
holds. ``wait_for_score`` polls ListSubmissions with backoff until the submission is scored or failed
(keeping Kaggle's ``error_description`` of a failed one);
``refresh_ledger`` updates every unfinished record from Kaggle.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from hcd_kit.errors import KaggleError
from hcd_kit.kaggle import api as kaggle_api
from hcd_kit.kaggle.ledger import LedgerRecord, append_record, as_score, read_ledger, update_records, write_ledger
from hcd_kit.kaggle.poll import poll_until
from hcd_kit.runs.submission import validate_submission

FINAL = ("COMPLETE", "ERROR")


# what a 404 from a submission call may also mean
_NO_SUBMISSIONS = (
    "whether competition '{competition}' still accepts submissions (an ended competition may take no late submissions)"
)


def submit_file(
    path: str | os.PathLike[str],
    message: str,
    sample_csv: str | os.PathLike[str],
    competition: str,
    ledger: str | os.PathLike[str],
    timeout: float | None = None,
) -> LedgerRecord:
    """Validate ``path`` against ``sample_csv``, upload it, append the accepted submission to ``ledger``."""
    validate_submission(path, sample_csv)
    record = LedgerRecord.for_file(path, message, competition)
    api = kaggle_api.get_api()
    # no retries: a 5xx after Kaggle stored the file would spend a second daily submission
    resp = kaggle_api.call(
        f"submit {path} to competition '{competition}'",
        lambda: api.competition_submit(str(path), message, competition, quiet=True),
        timeout=timeout,
        retries=0,
        not_found=f"competition '{competition}'",
        competition=competition,
        if_missing=_NO_SUBMISSIONS.format(competition=competition),
    )
    ref = int(getattr(resp, "ref", 0) or 0)
    if ref <= 0:
        said = kaggle_api.redact((getattr(resp, "message", "") or "no reason given").strip().rstrip("."))
        raise KaggleError(f"Kaggle did not accept {path}: {said}; nothing was recorded, try again later")
    record.ref = ref
    append_record(ledger, record)
    return record


def _list(competition: str, timeout: float | None, pages: int = 5) -> dict[int, object]:
    """Recent submissions by ref (a few pages: the ledger's unfinished ones are recent). Stops at an empty page
    or one with nothing new: a server may ignore ``page_size`` (pages of 50), so a short page is not the last."""
    api = kaggle_api.get_api()
    found: dict[int, object] = {}
    for page in range(1, pages + 1):
        subs = (
            kaggle_api.call(
                f"list the submissions of competition '{competition}'",
                lambda page=page: api.competition_submissions(competition, page_number=page, page_size=100),
                timeout=timeout,
                not_found=f"competition '{competition}'",
                competition=competition,
                if_missing=_NO_SUBMISSIONS.format(competition=competition),
            )
            or []
        )
        before = len(found)
        for s in subs:
            found[int(s.ref)] = s
        if len(found) == before:
            break
    return found


def _apply(record: LedgerRecord, sub: object) -> None:
    status = getattr(sub, "status", None)
    record.status = getattr(status, "name", str(status))  # enums print as SubmissionStatus.X
    record.public_score = as_score(getattr(sub, "public_score", None))
    record.private_score = as_score(getattr(sub, "private_score", None))
    reason = str(getattr(sub, "error_description", "") or "").strip()  # Kaggle's why, for an ERROR
    record.error_description = reason or None


def wait_for_score(
    record: LedgerRecord,
    ledger: str | os.PathLike[str],
    wait_timeout: float = 3600.0,
    poll: float = 10.0,
    on_poll: Callable[[LedgerRecord], None] | None = None,
    timeout: float | None = None,
) -> LedgerRecord:
    """Poll Kaggle (backoff up to 60 s) until ``record`` is COMPLETE or ERROR; save its scores to ``ledger``.

    ``timeout`` bounds each call; waiting longer than ``wait_timeout`` seconds is a ``KaggleError``.
    """

    def fetch() -> LedgerRecord:
        sub = _list(record.competition, timeout).get(record.ref)
        if sub is not None:
            _apply(record, sub)
        return record

    poll_until(
        fetch,
        lambda r: r.status in FINAL,
        wait_timeout=wait_timeout,
        poll=poll,
        on_poll=on_poll,
        still=lambda r: (
            f"submission {r.ref} still {r.status} after {wait_timeout:g} s; see its score later with `hcd submissions`"
        ),
    )
    update_records(ledger, [record])
    return record


def refresh_ledger(ledger: str | os.PathLike[str], timeout: float | None = None) -> list[LedgerRecord]:
    """Update every record still pending, or COMPLETE without a private score yet, from Kaggle; return all.

    An ERROR record is final and never scored, so it costs no call."""
    records = read_ledger(ledger)
    stale = [
        r for r in records if r.ref and (r.status not in FINAL or (r.status == "COMPLETE" and r.private_score is None))
    ]
    changed = False
    for competition in sorted({r.competition for r in stale}):
        subs = _list(competition, timeout=timeout)
        for r in stale:
            if r.competition == competition and r.ref in subs:
                _apply(r, subs[r.ref])
                changed = True
    if changed:
        write_ledger(ledger, records)
    return records
