"""Choosing a blend of runs on their out-of-fold predictions, with a nested split so its gain is honest.

``search_blend`` takes the OOF probabilities of R runs on the same N ids, (R, N), and their labels, and
finds the weights (on a simplex grid for up to 3 runs, by coordinate search beyond) and the mode (mean
probability or mean rank) whose blend has the highest OOF AUC. Weights fitted on the rows they are scored on
always look at least as good as equal weights, so the gain it reports is NESTED: the ids are split into
``n_parts`` parts (stratified by label, seeded); for each part the weights and mode are chosen on the other
parts alone and scored on that part, and the same part is scored with equal weights. The two figures are
the means of those held-out AUCs. The weights to use are then fitted on all rows::

    choice = search_blend(probs, labels)               # probs (R, N), labels (N,)
    choice.weights, choice.mode                        # fitted on all rows: apply them to the test set
    choice.nested_auc, choice.nested_equal_auc         # held-out AUC of "auto" and of equal weights
    signed(choice.nested_gain)                         # "+0.0031" / "-0.0005", never "-0.0000"

Pure numpy: no files, no torch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from hcd_kit.choices import BLEND_MODES, BlendMode
from hcd_kit.config import check_choice
from hcd_kit.errors import DataError
from hcd_kit.metrics import rank_normalise

# Simplex grid resolution by number of runs (21 and 66 points); more runs use the coordinate search.
GRID_STEPS = {1: 1, 2: 20, 3: 10}
COORD_STEPS = 10  # shares tried per run and sweep in the coordinate search (0, 0.1, ..., 1)
COORD_SWEEPS = 4
_TIE = 1e-12  # AUCs closer than this are ties: the candidate nearer equal weights (then mean) wins


@dataclass
class BlendChoice:
    """What ``search_blend`` chose, and how it did on held-out rows."""

    weights: list[float]  # fitted on all rows, sum 1
    mode: str  # "mean" or "rank", fitted on all rows
    baseline_mode: str  # the mode of the equal-weight blend it is compared with
    fit_auc: float  # AUC of (weights, mode) on all rows: in-sample, so optimistic
    equal_auc: float  # AUC of equal weights in baseline_mode on all rows
    nested_auc: float  # mean over parts of the held-out AUC of the choice made without that part
    nested_equal_auc: float  # mean over the same parts of the equal-weight blend's AUC
    n_parts: int
    parts: np.ndarray = field(repr=False)  # (N,) part of each row
    part_choices: list[tuple[list[float], str]] = field(default_factory=list)  # chosen without part j
    part_auc: list[tuple[float, float]] = field(default_factory=list)  # (auto, equal) held-out AUC of part j

    @property
    def nested_gain(self) -> float:
        return self.nested_auc - self.nested_equal_auc


def signed(x: float, digits: int = 4) -> str:
    """``x`` with its sign, e.g. "+0.0031" or "-0.0005"; a value that rounds to zero is "+0.0000"."""
    if x != x:
        return "n/a"
    text = f"{x:+.{digits}f}"
    return "+" + text[1:] if float(text) == 0 else text


def fast_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties share their average rank, as in sklearn); NaN with one class."""
    from scipy.stats import rankdata

    y = np.asarray(labels, dtype=bool)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    r = rankdata(scores)
    return float((r[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def stratified_parts(labels: np.ndarray, n_parts: int, seed: int = 0) -> np.ndarray:
    """(N,) part number 0..n_parts-1 of each row: each class shuffled (seeded) and dealt out in turn."""
    y = np.asarray(labels).astype(np.int64)
    rng = np.random.default_rng(seed)
    parts = np.empty(y.size, dtype=np.int64)
    start = 0
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        parts[idx] = (start + np.arange(idx.size)) % n_parts
        start += idx.size  # the next class continues the deal, so part sizes differ by at most one
    return parts


def simplex_grid(n_runs: int, steps: int) -> np.ndarray:
    """Every weight vector of ``n_runs`` non-negative multiples of 1/steps summing to 1, (C, n_runs)."""
    rows = []
    for bars in itertools.combinations(range(steps + n_runs - 1), n_runs - 1):
        edges = (-1, *bars, steps + n_runs - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(n_runs)])
    return np.asarray(rows, dtype=np.float64) / steps


def _better(auc: float, w: np.ndarray, best: tuple[float, float] | None) -> tuple[float, float] | None:
    """The key (auc, -distance to equal weights) if it beats ``best``, else None."""
    if auc != auc:
        return None
    key = (auc, -float(np.abs(w - 1.0 / w.size).sum()))
    if best is None or key[0] > best[0] + _TIE or (abs(key[0] - best[0]) <= _TIE and key[1] > best[1] + 1e-9):
        return key
    return None


def _coordinate_search(score: Callable[[np.ndarray], float], n_runs: int) -> tuple[np.ndarray, float]:
    """From equal weights, repeatedly set one run's share to the best of 0, 0.1, ..., 1 (the others keep
    their proportions) until a sweep changes nothing."""
    w = np.full(n_runs, 1.0 / n_runs)
    best = _better(score(w), w, None) or (-math.inf, 0.0)
    for _ in range(COORD_SWEEPS):
        moved = False
        for i in range(n_runs):
            rest = np.delete(w, i)
            rest = rest / rest.sum() if rest.sum() > 0 else np.full(n_runs - 1, 1.0 / (n_runs - 1))
            for t in np.linspace(0.0, 1.0, COORD_STEPS + 1):
                cand = np.insert(rest * (1.0 - t), i, t)
                key = _better(score(cand), cand, best)
                if key is not None:
                    best, w, moved = key, cand, True
        if not moved:
            break
    return w, best[0]


def _fit(mats: dict[str, np.ndarray], y: np.ndarray, rows: np.ndarray, modes: Sequence[str]) -> tuple[np.ndarray, str]:
    """The weights and mode with the highest AUC on ``rows`` (ties: nearer equal weights, then the first mode)."""
    n_runs = next(iter(mats.values())).shape[0]
    yr = y[rows]
    best_key, best = None, (np.full(n_runs, 1.0 / n_runs), modes[0])
    for mode in modes:
        m = mats[mode][:, rows]

        def score(w: np.ndarray, m=m) -> float:
            return fast_auc(yr, w @ m)

        if n_runs in GRID_STEPS:
            cands = [(w, score(w)) for w in simplex_grid(n_runs, GRID_STEPS[n_runs])]
        else:
            cands = [_coordinate_search(score, n_runs)]
        for w, auc in cands:
            key = _better(auc, w, best_key)
            if key is not None:
                best_key, best = key, (w, mode)
    return best[0] / best[0].sum(), best[1]


def search_blend(
    probs,
    labels,
    modes: Sequence[BlendMode] = BLEND_MODES,
    n_parts: int = 5,
    seed: int = 0,
) -> BlendChoice:
    """The blend of the R runs in ``probs`` (R, N) that maximises OOF AUC on ``labels`` (N,), with nested
    held-out figures (see module doc). ``modes`` restricts the search (e.g. ``("rank",)``); the equal-weight
    baseline uses "mean" when it is searched, else the one mode given.

    Rank mode ranks each run over all N rows once (it uses no labels), as ``fold_ensemble`` does on the test set.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] != y.size:
        raise ValueError(f"search_blend expects probs (R, N) and labels (N,), got {p.shape} and {y.shape}")
    modes = tuple(dict.fromkeys(modes))
    if not modes or n_parts < 2:
        raise ValueError(f"search_blend needs at least one mode and 2 parts, got {modes} and {n_parts}")
    for mode in modes:
        check_choice("--blend", mode, BlendMode)
    minority = int(min((y == 1).sum(), (y == 0).sum()))
    if minority < 2:
        raise DataError(
            f"--weights auto needs at least 2 positive and 2 negative OOF ids, got {minority} of one "
            "class; give fixed --weights instead"
        )
    k = min(n_parts, minority)  # every part must hold both classes
    parts = stratified_parts(y, k, seed)
    mats = {m: (p if m == "mean" else np.stack([rank_normalise(r) for r in p])) for m in modes}
    base = "mean" if "mean" in modes else modes[0]
    equal = np.full(p.shape[0], 1.0 / p.shape[0])

    part_choices, part_auc = [], []
    for j in range(k):
        held = parts == j
        w, mode = _fit(mats, y, np.flatnonzero(~held), modes)
        part_choices.append(([float(x) for x in w], mode))
        part_auc.append((fast_auc(y[held], w @ mats[mode][:, held]), fast_auc(y[held], equal @ mats[base][:, held])))
    w, mode = _fit(mats, y, np.arange(y.size), modes)
    return BlendChoice(
        weights=[float(x) for x in w],
        mode=mode,
        baseline_mode=base,
        fit_auc=fast_auc(y, w @ mats[mode]),
        equal_auc=fast_auc(y, equal @ mats[base]),
        nested_auc=float(np.mean([a for a, _ in part_auc])),
        nested_equal_auc=float(np.mean([b for _, b in part_auc])),
        n_parts=k,
        parts=parts,
        part_choices=part_choices,
        part_auc=part_auc,
    )
