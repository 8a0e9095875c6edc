"""TTA weights learned on out-of-fold predictions versus the plain mean of the views (issue 21's test-time row).

For a trained run, every fold's validation patches are predicted with N dihedral views (``hcd predict``'s code
path); the views are then treated as N members of a blend (``search_blend``, mode "mean"), and the nested split
gives the held-out AUC of weights chosen on the other parts against the plain mean that ``hcd predict`` uses.
Nothing is written. A benchmark, not a test::

    python benchmarks/tta_weights.py --run-dir RUN --data-dir D [--tta 8] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", type=Path, required=True, help="a trained run (its folds' best.pt and oof.csv)")
    p.add_argument("--data-dir", type=Path, required=True, help="the competition folder it trained on (packed)")
    p.add_argument("--tta", type=int, default=8, choices=(2, 4, 8), help="dihedral views per patch")
    p.add_argument("--parts", type=int, default=5, help="parts of the nested split")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return p.parse_args(argv)


def view_probs(run_dir: Path, data_dir: Path, tta: int, device: str) -> tuple[np.ndarray, np.ndarray]:
    """(views, N) probabilities of every fold's validation patches, and their labels (N,)."""
    from hcd_kit.inference import load_folds, predict_folds
    from hcd_kit.inference.oof import oof_plan
    from hcd_kit.runs import read_run_model, select_folds

    spec = read_run_model(run_dir)
    folds = select_folds(run_dir, None)
    store, rows, note = oof_plan(run_dir, data_dir, folds)
    if store is None:
        raise SystemExit(f"error: {note}")
    models, dev, dtype = load_folds(run_dir, spec, folds, device, "auto")
    parts = {k: [(store.images, rows[k])] for k in folds}
    views, _ = predict_folds(models, parts, img_size=spec.img_size, device=dev, tta=tta, batch_size=256, dtype=dtype)
    logits = np.concatenate([views[k][0] for k in folds])  # (N, views)
    labels = np.concatenate([store.labels[rows[k]] for k in folds])
    return 1.0 / (1.0 + np.exp(-logits.T.astype(np.float64))), labels


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from hcd_kit.inference.blend import search_blend, signed

    probs, labels = view_probs(args.run_dir, args.data_dir, args.tta, args.device)
    choice = search_blend(probs, labels, modes=("mean",), n_parts=args.parts)
    out = {
        "run_dir": str(args.run_dir),
        "tta": args.tta,
        "n": int(labels.size),
        "weights": choice.weights,
        "mean_auc": choice.equal_auc,
        "fit_auc": choice.fit_auc,
        "nested_learned_auc": choice.nested_auc,
        "nested_mean_auc": choice.nested_equal_auc,
        "nested_gain": choice.nested_gain,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{out['n']} OOF patches, TTA x{args.tta}: plain mean AUC {choice.equal_auc:.4f}")
    print(f"weights learned on OOF: {', '.join(f'{w:.2f}' for w in choice.weights)} (in-sample {choice.fit_auc:.4f})")
    print(
        f"held out ({choice.n_parts} parts): learned {choice.nested_auc:.4f} vs mean {choice.nested_equal_auc:.4f} "
        f"({signed(choice.nested_gain)})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
