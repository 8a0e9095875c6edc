"""``search_blend``: the OOF blend search behind `hcd ensemble --weights auto`, and its nested (held-out) figures.

Pure numpy on synthetic OOF predictions: no files, no torch, milliseconds per search.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from hcd_kit.errors import DataError
from hcd_kit.inference import search_blend, signed
from hcd_kit.inference.blend import fast_auc, simplex_grid, stratified_parts


def scores(y: np.ndarray, quality: float, rng) -> np.ndarray:
    """Probabilities that rank positives higher the larger ``quality`` is (0: pure noise)."""
    return np.clip(quality * y + (1 - quality) * rng.random(y.size), 0, 1)


def test_an_informative_run_takes_the_weight_from_a_noise_run():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    good, noise = scores(y, 0.3, rng), rng.random(y.size)

    c = search_blend(np.stack([good, noise]), y)

    assert c.weights[1] <= 0.1 and sum(c.weights) == pytest.approx(1.0)
    assert c.fit_auc == pytest.approx(roc_auc_score(y, np.dot(c.weights, [good, noise])), abs=1e-9)
    assert c.equal_auc == pytest.approx(roc_auc_score(y, (good + noise) / 2), abs=1e-9)
    # equal weights dilute the good run with noise; held out, the chosen weights still beat them clearly
    assert c.nested_auc > c.nested_equal_auc + 0.05 and signed(c.nested_gain).startswith("+")
    assert all(w[1] <= 0.15 for w, _ in c.part_choices)


def test_two_useful_runs_share_the_weight_the_better_one_more():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 3000)
    strong, weak = scores(y, 0.35, rng), scores(y, 0.2, rng)

    c = search_blend(np.stack([weak, strong]), y)

    assert 0.05 <= c.weights[0] < 0.5 < c.weights[1]
    assert c.fit_auc > max(roc_auc_score(y, strong), roc_auc_score(y, weak))


def test_four_runs_use_the_coordinate_search():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 1500)
    probs = np.stack([rng.random(y.size), scores(y, 0.3, rng), rng.random(y.size), rng.random(y.size)])

    c = search_blend(probs, y)

    assert c.weights[1] >= 0.7 and sum(c.weights) == pytest.approx(1.0)
    assert c.nested_gain > 0.03


def test_pure_noise_gains_nothing_held_out_although_it_does_in_sample():
    """Weights fitted to noise look better on the rows they were fitted on; the nested figure must not."""
    rng = np.random.default_rng(3)
    nested, in_sample = [], []
    for seed in range(20):
        y = rng.integers(0, 2, 400)
        c = search_blend(rng.random((3, y.size)), y, seed=seed)
        nested.append(c.nested_gain)
        in_sample.append(c.fit_auc - c.equal_auc)
    nested, in_sample = np.array(nested), np.array(in_sample)
    assert (in_sample >= -1e-12).all() and in_sample.mean() > 0.01  # fitting always "helps" in sample
    assert nested.mean() < 0.005 and (nested > 0).mean() < 0.8  # held out it is noise, not a reliable gain
    assert nested.mean() < in_sample.mean() - 0.01


def test_each_part_is_scored_with_weights_chosen_without_it():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 600)
    probs = np.stack([scores(y, 0.3, rng), scores(y, 0.15, rng), rng.random(y.size)])
    c = search_blend(probs, y, seed=7)

    assert c.n_parts == 5 and np.array_equal(c.parts, stratified_parts(y, 5, seed=7))
    for j, ((w, mode), (auto, equal)) in enumerate(zip(c.part_choices, c.part_auc)):
        held = c.parts == j
        p = probs if mode == "mean" else np.stack([(rankdata(r) - 1) / (r.size - 1) for r in probs])
        assert auto == pytest.approx(roc_auc_score(y[held], np.dot(w, p[:, held])), abs=1e-9)
        assert equal == pytest.approx(roc_auc_score(y[held], probs[:, held].mean(axis=0)), abs=1e-9)
    assert c.nested_auc == pytest.approx(np.mean([a for a, _ in c.part_auc]))
    assert c.nested_equal_auc == pytest.approx(np.mean([b for _, b in c.part_auc]))

    # What part 0 holds cannot change the choice made for part 0: it was made on the other parts alone.
    scrambled = probs.copy()
    scrambled[:, c.parts == 0] = rng.random((3, int((c.parts == 0).sum())))
    again = search_blend(scrambled, y, seed=7)
    assert again.part_choices[0] == c.part_choices[0]


def test_parts_are_stratified_and_seeded():
    y = np.array([1] * 23 + [0] * 77)
    parts = stratified_parts(y, 5, seed=0)
    assert sorted(np.bincount(parts)) == [20] * 5
    for j in range(5):
        assert (y[parts == j] == 1).sum() in (4, 5)
    assert np.array_equal(parts, stratified_parts(y, 5, seed=0))
    assert not np.array_equal(parts, stratified_parts(y, 5, seed=1))


def test_a_given_mode_restricts_the_search_and_its_baseline():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 500)
    probs = np.stack([scores(y, 0.3, rng), scores(y, 0.1, rng)])
    c = search_blend(probs, y, modes=("rank",))
    assert c.mode == "rank" and c.baseline_mode == "rank"
    assert all(mode == "rank" for _, mode in c.part_choices)
    assert search_blend(probs, y).baseline_mode == "mean"


def test_helpers():
    assert signed(0.00314) == "+0.0031" and signed(-0.0005) == "-0.0005"
    assert signed(-0.00001) == "+0.0000" and signed(0.0) == "+0.0000" and signed(float("nan")) == "n/a"
    grid = simplex_grid(3, 10)
    assert grid.shape == (66, 3) and np.allclose(grid.sum(axis=1), 1) and (grid >= 0).all()
    assert simplex_grid(2, 20).shape == (21, 2)
    rng = np.random.default_rng(6)
    y, s = rng.integers(0, 2, 300), np.round(rng.random(300), 1)  # many ties
    assert fast_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_too_few_ids_of_one_class_is_one_line():
    y = np.array([1, 0, 0, 0, 0, 0])
    with pytest.raises(DataError, match="at least 2 positive and 2 negative OOF ids"):
        search_blend(np.random.default_rng(0).random((2, 6)), y)
    y = np.array([1, 1, 0, 0, 0, 0])  # 2 of each: two parts, each holding both classes
    assert search_blend(np.random.default_rng(0).random((2, 6)), y).n_parts == 2
