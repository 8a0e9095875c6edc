"""Ablations: pooled out-of-fold AUC of training recipes, several seeds each, mean ± sd.

Each variant is a set of ``TrainConfig`` overrides on a base (a recipe name or a TOML file); every
(variant, seed) is a real ``hcd_kit.training.train`` of all folds of DIR/folds.csv followed by
``hcd_kit.runs.cv_report``, so the figure is exactly what ``hcd train`` + ``hcd cv`` would report.
Jobs can run side by side (``--jobs``): on one GPU small models leave most of it idle, so 4-8 jobs share it
well; on a 2-core CPU use ``--jobs 1`` (two torch jobs fight over the cores). This is a benchmark, not a
test: it takes minutes to hours.

    python benchmarks/ablate.py --data-dir D --grid benchmarks/ablations.toml --seeds 0,1,2 --json
    python benchmarks/ablate.py --data-dir D --base cpu --set epochs=4 --seeds 0
    python benchmarks/ablate.py --data-dir D --grid benchmarks/ablations2.toml --folds 0 --seeds 0   # a screen
    python benchmarks/ablate.py --summary benchmarks/results/ablations2.jsonl   # the table of a results file

``--folds`` trains only some folds (a screen: one fold of one seed is a fifth of a row's cost); the AUC is then
the pooled OOF AUC of those folds, comparable only with rows screened on the same folds and seeds.

``--out`` appends one JSON line per finished run (variant, overrides, seed, folds, pooled AUC, fold AUCs,
seconds); a grid measured over several sessions or machines collects in one such file, and ``--summary FILE``
prints its table: one row per (variant, folds), mean ± sd over the seeds, TTA×8 where a line has ``auc_tta8``.

The grid file has an optional ``[base]`` table (TrainConfig keys) and one ``[variants.NAME]`` table per
variant (keys overriding the base; ``augment.stain = 0.05`` style dotted keys for the augment table).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import shutil
import statistics
import sys
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=None, help="competition folder with packed/ and folds.csv")
    p.add_argument("--work-dir", type=Path, default=Path("ablations"), help="where the runs go")
    p.add_argument("--base", default="cpu", help="recipe name or TOML file the variants start from")
    p.add_argument("--grid", type=Path, default=None, help="TOML file with [base] and [variants.NAME] tables")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override for a single variant 'set' (TOML value syntax); repeatable",
    )
    p.add_argument("--only", default="", help="comma-separated variant names to run (default all)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--folds", default="all", help="folds to train: all, or a list like 0 or 0,1 (a screen)")
    p.add_argument("--jobs", type=int, default=1, help="runs side by side")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--out", type=Path, default=None, help="also append each finished run to this JSON-lines file")
    p.add_argument(
        "--summary",
        type=Path,
        nargs="+",
        default=None,
        metavar="FILE",
        help="train nothing: print the table of these --out files (mean ± sd per variant and folds)",
    )
    args = p.parse_args(argv)
    if args.summary is None and args.data_dir is None:
        p.error("--data-dir is required (or --summary FILE to read results)")
    return args


def summarise(records: list[dict]) -> list[dict]:
    """One row per (variant, folds) of ``--out`` records, in first-seen order: seeds, mean ± sd of the pooled AUC,
    of TTA×8 where measured, and of the seconds where timed. A screen (some folds) and a full run never mix."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if "auc" in r:  # a failed run has only "error"
            groups.setdefault((r["variant"], tuple(r.get("folds") or ())), []).append(r)

    def stats(values: list[float]) -> tuple[float | None, float | None]:
        if not values:
            return None, None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None

    rows = []
    for (variant, folds), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        mean, sd = stats([r["auc"] for r in rs])
        tta_mean, tta_sd = stats([r["auc_tta8"] for r in rs if r.get("auc_tta8") is not None])
        secs = [r["seconds"] for r in rs if r.get("seconds") is not None]
        rows.append(
            dict(
                variant=variant,
                folds=list(folds),
                seeds=[r["seed"] for r in rs],
                mean=mean,
                sd=sd,
                tta8_mean=tta_mean,
                tta8_sd=tta_sd,
                seconds_mean=statistics.fmean(secs) if secs else None,
            )
        )
    return rows


def print_summary(rows: list[dict]) -> None:
    def num(v: float | None, fmt: str) -> str:
        return f"{'-':>7}" if v is None else format(v, fmt)

    print(f"{'variant':<22} {'folds':<11} {'seeds':<7} {'mean':>7} {'sd':>7} {'TTA x8':>7} {'s/run':>7}")
    for r in rows:
        folds = ",".join(map(str, r["folds"])) or "?"
        seeds = ",".join(map(str, r["seeds"]))
        print(
            f"{r['variant']:<22} {folds:<11} {seeds:<7} {num(r['mean'], '7.4f')} {num(r['sd'], '7.4f')} "
            f"{num(r['tta8_mean'], '7.4f')} {num(r['seconds_mean'], '7.0f')}"
        )


def _nest(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        if isinstance(value, dict):
            out.setdefault(key, {}).update(_nest(value))
            continue
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def variants(args: argparse.Namespace) -> tuple[dict, dict[str, dict]]:
    grid = tomllib.loads(args.grid.read_text()) if args.grid else {}
    base = _nest(grid.get("base", {}))
    found = {name: _nest(v) for name, v in grid.get("variants", {}).items()}
    if args.set or not found:
        found["set"] = _nest({k: tomllib.loads(f"v = {v}")["v"] for k, v in (s.split("=", 1) for s in args.set)})
    if args.only:
        found = {k: v for k, v in found.items() if k in args.only.split(",")}
    return base, found


def run_one(
    base_name: str,
    base: dict,
    overrides: dict,
    seed: int,
    data_dir: str,
    run_dir: str,
    device: str,
    threads: int,
    folds: str | list[int] = "all",
) -> dict:
    """One (variant, seed): train ``folds``, then their pooled OOF AUC. Runs in a worker process."""
    import contextlib
    import io

    from hcd_kit.runs import cv_report
    from hcd_kit.training import train
    from hcd_kit.training.recipes import recipe_config

    settings = _merge(
        _merge(base, overrides), {"seed": seed, "device": device, "threads": threads, "pretrained": False}
    )
    cfg = recipe_config(base_name, settings)
    log = Path(run_dir + ".out")
    log.parent.mkdir(parents=True, exist_ok=True)
    if Path(run_dir).exists():  # this script's own scratch folder: a rerun trains afresh, never half-resumes
        shutil.rmtree(run_dir)
    start = time.perf_counter()
    with open(log, "w") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(io.StringIO()):
        train(cfg, data_dir, run_dir, folds=folds)
        report = cv_report(run_dir)
    return {
        "seed": seed,
        "folds": [f.fold for f in report.folds],
        "auc": report.overall_auc,
        "fold_aucs": [f.auc for f in report.folds],
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summary is not None:
        records = []
        for path in args.summary:
            try:
                lines = path.read_text().splitlines()
                records += [json.loads(line) for line in lines if line.strip()]
            except (OSError, ValueError) as exc:
                sys.exit(f"error: cannot read {path}: {exc}")
        rows = summarise(records)
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            print_summary(rows)
        return 0
    base, found = variants(args)
    seeds = [int(s) for s in args.seeds.split(",")]
    from hcd_kit.device import cpu_threads

    threads = max(1, cpu_threads() // args.jobs)  # the CPUs this process may use, shared by the jobs
    jobs = [(name, seed) for name in found for seed in seeds]
    results: dict[str, list[dict]] = {name: [] for name in found}
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
        futs = {
            pool.submit(
                run_one,
                args.base,
                base,
                found[name],
                seed,
                str(args.data_dir),
                str(args.work_dir / f"{name}-s{seed}"),
                args.device,
                threads,
                "all" if args.folds == "all" else [int(f) for f in args.folds.split(",")],
            ): (name, seed)
            for name, seed in jobs
        }
        for fut in cf.as_completed(futs):
            name, seed = futs[fut]
            try:
                res = fut.result()
            except Exception as exc:  # one failed variant must not hide the others
                res = {"seed": seed, "error": f"{type(exc).__name__}: {exc}"}
            results[name].append(res)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(json.dumps({"variant": name, "overrides": found[name], **res}) + "\n")
            if not args.json:
                print(
                    f"{name} seed {seed}: "
                    + (f"AUC {res['auc']:.4f} in {res['seconds']:.0f} s" if "auc" in res else res["error"]),
                    flush=True,
                )
    summary = {}
    for name, rs in results.items():
        rs = sorted(rs, key=lambda r: r["seed"])  # completion order differs with --jobs > 1
        aucs = [r["auc"] for r in rs if "auc" in r]
        summary[name] = {
            "overrides": found[name],
            "seeds": [r["seed"] for r in rs if "auc" in r],
            "aucs": aucs,
            "mean": statistics.fmean(aucs) if aucs else None,
            "sd": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
            "seconds_mean": statistics.fmean([r["seconds"] for r in rs if "seconds" in r]) if aucs else None,
            "errors": [r["error"] for r in rs if "error" in r],
        }
    out = {
        "base": args.base,
        "base_overrides": base,
        "folds": args.folds,
        "device": args.device,
        "jobs": args.jobs,
        "variants": summary,
    }
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"{'variant':<22} {'mean':>7} {'sd':>7} {'s/run':>7}  aucs")
        for name, s in summary.items():
            if s["mean"] is None:
                print(f"{name:<22} failed: {s['errors'][:1]}")
                continue
            print(
                f"{name:<22} {s['mean']:7.4f} {s['sd']:7.4f} {s['seconds_mean']:7.0f}  "
                + " ".join(f"{a:.4f}" for a in s["aucs"])
            )
    return 0 if all(s["mean"] is not None for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
