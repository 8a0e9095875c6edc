"""Time budgets for ``hcd train --time-budget 11h`` and ``--plan``: the arithmetic and the run's clock (no torch).

A plan turns measured speeds (``Speeds``: training and validation images/s, prediction views/s, per-fold set-up
and per-epoch checkpoint seconds, measured by ``speed.measure_speeds`` on the machine at hand) and the run's
sizes (``Work``) into a number of epochs: the most, up to the configured ``--epochs``, such that every
requested fold (training, per-epoch validation, checkpoints) plus the final TTA x8 prediction of the test set
(once per fold) and of the OOF rows fit the budget less a safety ``MARGIN``. ``fit_epochs`` is that pure
function; a budget too small for one epoch of every fold is refused with the smallest budget that fits.

``RunClock`` follows the run while it trains: it times every epoch, gives the run's ETA over all remaining
folds, and, with a budget, stops a fold before an epoch that would end after the fold's share of the deadline
(start + budget - margin - reserved prediction time), so a Kaggle kernel still predicts before its 12-hour kill.

    fit_epochs(Speeds(1000, 4000, 8000, 2, 1), Work([176000] * 5, [44000] * 5, 57458, 220025), 8, 3600.0)
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

from hcd_kit.errors import ConfigError

MARGIN = 0.07  # of the budget, kept free for what the estimate misses
TTA = 8  # views per patch at the final prediction (`hcd predict --tta 8`, the kernel's default)
_now = time.time  # the clock (tests replace it)
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(text: str, label: str = "--time-budget") -> float:
    """``"11h"``, ``"1h30m"``, ``"90m"``, ``"90s"``, ``"5400"`` (seconds) -> seconds; a one-line ConfigError otherwise."""
    s = str(text).strip().lower().replace(" ", "")
    m = _DURATION.fullmatch(s)
    if re.fullmatch(r"\d+(?:\.\d+)?", s):
        seconds = float(s)
    elif s and m and any(m.groups()):
        h, mi, se = (float(g) if g else 0.0 for g in m.groups())
        seconds = 3600 * h + 60 * mi + se
    else:
        raise ConfigError(f"{label} {text!r}: use a duration like 30m, 11h, 1h30m, 90s or 5400 (seconds)")
    if seconds <= 0:
        raise ConfigError(f"{label} must be positive, got {text!r}")
    return seconds


def format_duration(seconds: float, up: bool = False) -> str:
    """Seconds as ``45s``, ``2m40s``, ``14m`` or ``2h05m`` (forms ``parse_duration`` reads); ``up`` rounds up."""
    rnd = math.ceil if up else round
    if seconds < (60 if up else 59.5):
        return f"{max(1, rnd(seconds))}s"
    if seconds < 600:  # minutes and seconds: "2m40s" says more than "3m"
        whole = rnd(seconds)
        return f"{whole // 60}m{whole % 60:02d}s" if whole % 60 else f"{whole // 60}m"
    minutes = rnd(seconds / 60)
    if minutes < 60:
        return f"{minutes}m"
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes % 60 else f"{minutes // 60}h"


def _folds(n: int) -> str:
    return f"{n} fold{'' if n == 1 else 's'}"


def share_budget(text: str | None, started: float, runs_left: int, now: float | None = None) -> str | None:
    """One run's part of a blend's ``--time-budget`` (``text``, counted from ``started``): what is left of it,
    split evenly over the ``runs_left`` runs still to train (this one included); None stays None."""
    if not text:
        return text
    left = parse_duration(text) - ((_now() if now is None else now) - started)
    return f"{max(1, int(left / max(1, runs_left)))}s"


def clock_time(when: float, now: float | None = None) -> str:
    """``14:32``, or ``Fri 14:32`` when ``when`` is not today."""
    now = _now() if now is None else now
    same_day = time.localtime(when)[:3] == time.localtime(now)[:3]
    return time.strftime("%H:%M" if same_day else "%a %H:%M", time.localtime(when))


@dataclass
class Speeds:
    """What the machine at hand does, measured (``speed.measure_speeds``)."""

    train: float  # training images/s (all ranks together)
    val: float  # validation images/s (one view)
    predict: float  # prediction views/s (TTA views stacked in one batch, as `hcd predict` runs them)
    setup_s: float = 0.0  # building one fold's model and optimiser
    checkpoint_s: float = 0.0  # writing last.pt and best.pt once


@dataclass
class Work:
    """What the run has to do, per epoch and at the end."""

    train: list[int]  # training images of one epoch, per requested fold
    val: list[int]  # validation images, per requested fold
    test: int  # test patches (predicted once per fold)
    oof: int  # OOF patches re-predicted with TTA (the requested folds' validation rows)
    lanes: int = 1  # folds trained at the same time (fold-parallel workers)


@dataclass
class Plan:
    epochs: int  # chosen
    configured: int
    budget_s: float | None
    speeds: Speeds
    work: Work
    epoch_s: list[float]  # one epoch of each fold: training + validation + checkpoint
    train_s: float  # every fold, ``epochs`` each (set-up included)
    predict_s: float  # TTA x8 of the test set per fold + the OOF rows
    spent_s: float = 0.0  # already used (measuring) when the plan was made

    @property
    def total_s(self) -> float:
        return self.spent_s + self.train_s + self.predict_s

    def lines(self, now: float | None = None, where: str = "") -> list[str]:
        """The plan as the user reads it (printed before training and by ``hcd train --plan``)."""
        now = _now() if now is None else now
        s, w = self.speeds, self.work
        n = len(w.train)
        chosen = (
            f"epochs {self.epochs} of {self.configured} configured"
            if self.epochs < self.configured
            else f"epochs {self.epochs} (as configured)"
        )
        budget = (
            f"; time budget {format_duration(self.budget_s)} with a {MARGIN:.0%} margin"
            if self.budget_s is not None
            else "; no time budget"
        )
        per_fold = s.setup_s + self.epochs * max(self.epoch_s, default=0.0)
        lanes = f", {w.lanes} at a time" if w.lanes > 1 else ""
        return [
            f"time plan{' on ' + where if where else ''}: measured train {s.train:,.0f} img/s, validation "
            f"{s.val:,.0f} img/s, predict {s.predict:,.0f} views/s (TTA x{TTA}: {s.predict / TTA:,.0f} img/s)",
            f"time plan: {chosen}{budget}",
            f"time plan: about {format_duration(per_fold)} per fold x {_folds(n)}{lanes} "
            f"({format_duration(max(self.epoch_s, default=0.0))} per epoch), then {format_duration(self.predict_s)} "
            f"for TTA x{TTA} prediction of {w.test:,} test x {_folds(n)} + {w.oof:,} OOF images",
            f"time plan: expected finish {clock_time(now + self.total_s - self.spent_s, now)} "
            f"(in {format_duration(self.total_s - self.spent_s)})",
        ]


def _estimate(speeds: Speeds, work: Work) -> tuple[list[float], float, float, float]:
    """(epoch seconds per fold, fixed training seconds, training seconds per epoch of every fold, prediction)."""
    epoch_s = [t / speeds.train + v / speeds.val + speeds.checkpoint_s for t, v in zip(work.train, work.val)]
    lanes = max(1, work.lanes)
    waves = [epoch_s[i : i + lanes] for i in range(0, len(epoch_s), lanes)]  # folds side by side, wave after wave
    fixed = speeds.setup_s * len(waves)
    per_epoch = sum(max(w) for w in waves)
    n = len(work.train)
    predict_s = TTA * (n * work.test + work.oof) / speeds.predict + n * speeds.setup_s
    return epoch_s, fixed, per_epoch, predict_s


def fit_epochs(
    speeds: Speeds,
    work: Work,
    configured: int,
    budget_s: float | None,
    spent_s: float = 0.0,
    budget_text: str | None = None,
) -> Plan:
    """The plan: the most epochs (<= ``configured``) that fit ``budget_s`` less ``MARGIN`` (``configured`` when
    there is no budget). ``spent_s`` seconds of the budget are already gone. A budget that cannot hold one
    epoch of every fold plus the prediction is a ConfigError naming the smallest budget that can."""
    epoch_s, fixed, per_epoch, predict_s = _estimate(speeds, work)
    epochs = configured
    if budget_s is not None:
        usable = budget_s * (1 - MARGIN) - spent_s - predict_s - fixed
        fit = math.floor(usable / per_epoch) if per_epoch > 0 else configured
        if fit < 1:
            need = spent_s + fixed + per_epoch + predict_s
            text = budget_text or format_duration(budget_s)
            raise ConfigError(
                f"--time-budget {text} is too small: one epoch of {_folds(len(work.train))} + TTA x{TTA} prediction "
                f"needs about {format_duration(need)}; give at least {format_duration(need / (1 - MARGIN), up=True)}"
            )
        epochs = min(configured, fit)
    return Plan(epochs, configured, budget_s, speeds, work, epoch_s, fixed + epochs * per_epoch, predict_s, spent_s)


@dataclass
class RunClock:
    """The run's clock: epoch times, the ETA over every remaining fold and, with a budget, the training deadline.

    ``order``: the run's folds in training order; ``lanes``: folds trained at once (fold-parallel, where each
    fold gets a fixed slot of the time); ``deadline``: when training must be over (epoch seconds), or None.
    Picklable, so fold-parallel workers get a copy.
    """

    order: list[int]
    epochs: int
    deadline: float | None = None
    estimate_s: float | None = None  # one epoch, from the plan, until one is measured
    lanes: int = 1
    start: float = field(default_factory=lambda: _now())
    left: dict = field(default_factory=dict)  # fold -> epochs still to train
    durations: list = field(default_factory=list)
    fold_end: float | None = None
    mark: float = 0.0

    def __post_init__(self) -> None:
        self.left = self.left or {f: self.epochs for f in self.order}

    def start_fold(self, fold: int, done: int) -> None:
        """Fold ``fold`` begins after ``done`` epochs: the folds before it are over; its share of the time is set."""
        now = _now()
        self.mark = now
        if fold in self.order:
            for f in self.order[: self.order.index(fold)]:
                self.left[f] = 0
        self.left[fold] = max(0, self.epochs - done)
        if self.deadline is None:
            return
        if self.lanes > 1 and fold in self.order:  # fold-parallel: a fixed slot per wave of `lanes` folds
            waves = math.ceil(len(self.order) / self.lanes)
            self.fold_end = (
                self.start + (self.order.index(fold) // self.lanes + 1) * (self.deadline - self.start) / waves
            )
            return
        todo = sum(self.left.get(f, 0) for f in self.order[self.order.index(fold) :]) if fold in self.order else 0
        share = self.left[fold] / todo if todo else 1.0
        self.fold_end = now + max(0.0, self.deadline - now) * share

    def epoch_done(self, fold: int, epoch: int, info=None) -> bool:
        """Record an epoch (``epoch`` done of ``self.epochs``); True when the next one would overrun the fold's
        share of the deadline (the same answer on every DDP rank)."""
        now = _now()
        self.durations.append(now - self.mark)
        self.mark = now
        self.left[fold] = max(0, self.epochs - epoch)
        stop = (
            self.fold_end is not None
            and self.left[fold] > 0
            and now + max(self.durations[-1], self._per_epoch()) > self.fold_end
        )
        if info is not None and info.distributed:
            from hcd_kit.training.distributed import sum_across

            stop = sum_across([float(stop)], info)[0] > 0
        if stop:
            self.left[fold] = 0
        return stop

    def _per_epoch(self) -> float:
        return sum(self.durations) / len(self.durations) if self.durations else (self.estimate_s or 0.0)

    def eta(self) -> str:
        """`` run ETA 14:32`` for the whole run (every remaining fold), or "" before any epoch is timed."""
        per = self._per_epoch()
        if per <= 0:
            return ""
        end = _now() + per * sum(self.left.values()) / max(1, self.lanes)
        if self.deadline is not None:
            end = min(end, self.deadline)
        return f" run ETA {clock_time(end)}"
