"""A plain PyTorch loop as the yardstick for hcd's short runs: the same folds, model and epochs, pooled OOF AUC.

What a competent user writes in an afternoon: timm's model from scratch, Adam at a constant learning rate,
random flips and 90-degree rotations per image, fp32, the images normalised to [-1, 1], each fold's model after its last
epoch scoring its validation rows. No hcd code trains here: only the packed store and folds.csv are read (the
files `hcd prepare` and `hcd folds` wrote), so the figure is independent of hcd's loop. Compare with

    hcd train --data-dir D --model resnet18 --epochs 4 --fold all     # pooled OOF AUC at the end
    python benchmarks/plain_loop.py --data-dir D --model resnet18 --epochs 4 --json

This is a benchmark, not a test: minutes on a CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, required=True, help="competition folder with packed/ and folds.csv")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", default="all", help="comma-separated fold numbers, or all")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import pandas as pd
    import timm
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import roc_auc_score

    images = np.load(args.data_dir / "packed" / "train_images.npy", mmap_mode="r")
    ids = pd.read_csv(args.data_dir / "packed" / "train_ids.csv")
    folds = pd.read_csv(args.data_dir / "folds.csv").set_index("id").loc[ids["id"], "fold"].to_numpy()
    labels = ids["label"].to_numpy().astype(np.float32)
    x_all = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2)  # uint8 NCHW, in memory
    wanted = sorted(set(folds)) if args.folds == "all" else [int(f) for f in args.folds.split(",")]
    oof = np.full(len(labels), np.nan)
    per_fold, start = {}, time.perf_counter()
    for fold in wanted:
        torch.manual_seed(args.seed + fold)
        rng = np.random.default_rng(args.seed + fold)
        tr, va = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        model = timm.create_model(args.model, pretrained=False, num_classes=1)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        for _ in range(args.epochs):
            model.train()
            order = rng.permutation(tr)
            for i in range(0, len(order) - args.batch_size + 1, args.batch_size):
                rows = order[i : i + args.batch_size]
                x = x_all[rows].float().div_(127.5).sub_(1.0)
                for flip in (lambda t: t.flip(3), lambda t: t.flip(2), lambda t: t.transpose(2, 3)):
                    pick = torch.from_numpy(rng.random(len(rows)) < 0.5).view(-1, 1, 1, 1)  # per image
                    x = torch.where(pick, flip(x), x)  # the three together: any of the 8 flips and rotations
                loss = F.binary_cross_entropy_with_logits(model(x).squeeze(1), torch.from_numpy(labels[rows]))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            for i in range(0, len(va), 256):
                rows = va[i : i + 256]
                oof[rows] = torch.sigmoid(model(x_all[rows].float().div_(127.5).sub_(1.0)).squeeze(1)).numpy()
        per_fold[str(fold)] = float(roc_auc_score(labels[va], oof[va]))
        if not args.json:
            print(f"fold {fold}: AUC {per_fold[str(fold)]:.4f}", flush=True)
    done = ~np.isnan(oof)
    out = {
        "model": args.model,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "fold_aucs": per_fold,
        "pooled_oof_auc": float(roc_auc_score(labels[done], oof[done])),
        "seconds": time.perf_counter() - start,
    }
    print(json.dumps(out, indent=1) if args.json else f"pooled OOF AUC {out['pooled_oof_auc']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
