"""``hcd weights export``: one fold of a trained run as a timm ``local-dir:`` folder.

``export_fold`` rebuilds fold K's network (``read_run_model`` + ``load_fold_model``) and writes OUT as a folder
that ``timm.create_model("local-dir:OUT")`` and ``hcd embed --model local-dir:OUT`` load offline:

    model.safetensors   the fold's plain state dict, its 1-logit head included
    config.json         timm's config (``save_config_for_hf``): the architecture, ``model_args`` that rebuild it
                        (registry classes written as "py:module.Name"), ``pretrained_cfg`` with the run's input
                        size and the normalisation the weights expect, and a top-level ``"hcd"`` block (registry
                        name, model kwargs, the source model, run, fold, img_size, patches it trained on)

``save_local_dir`` (``hcd_kit.weights_io``) writes the two files, for ``hcd weights push`` too.
The folder is assembled in a temporary sibling and renamed into place, so OUT is either untouched or complete.

    export_fold("runs/uni", 0, "exports/uni-fold0")   # then: hcd embed --model local-dir:exports/uni-fold0
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hcd_kit.errors import ConfigError, DataError
from hcd_kit.weights_io import save_local_dir  # the one writer of a local-dir: folder (also `hcd weights push`)


@dataclass
class ExportResult:
    out: Path
    files: list[str]
    model: str  # the run's --model
    registry: str | None  # the registry name behind it, if any
    fold: int
    img_size: int
    train_patches: int | None  # patches of RUN/folds.csv outside fold K (None: the run has no folds.csv)
    hcd: dict = field(default_factory=dict)  # the "hcd" block written into config.json


def symbolic_model_kwargs(backbone) -> dict:
    """The ``Backbone``'s create_model kwargs as JSON values, classes as the ``"py:module.Name"`` they came from."""
    from hcd_kit.backbones.registry import symbolic_kwargs
    from hcd_kit.weights_io import read_config

    written = dict(backbone.entry.kwargs) if backbone.entry is not None else {}
    if backbone.folder is not None:  # a local-dir model: its own config.json says how its classes were written
        written.update((read_config(backbone.folder).get("hcd") or {}).get("model_kwargs") or {})
    return symbolic_kwargs(backbone.kwargs, written)


def train_patches(run_dir: Path, fold: int) -> int | None:
    """Rows of ``RUN/folds.csv`` outside fold ``fold``: the patches that fold trained on (None: no folds.csv)."""
    from hcd_kit.data import read_folds
    from hcd_kit.layout import RunLayout

    path = RunLayout.of(run_dir).folds
    if not path.is_file():
        return None
    table = read_folds(path)
    return int((table["fold"] != fold).sum())


def check_out(out: Path, force: bool) -> None:
    """Refuse a file, or a non-empty folder without ``force``, before any work."""
    if out.is_file() or (out.exists() and not out.is_dir()):
        raise DataError(f"--out {out} is a file; name a folder for the export")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(f"--out {out} already holds files; pass --force to replace them, or name a new folder")


def install_dir(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out`` (replacing what is there): ``out`` is old or new, never half."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".old-{out.name}.", dir=out.parent))
    os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old / out.name, out)  # put the old one back
        raise
    shutil.rmtree(old, ignore_errors=True)


def build_dir(out: str | os.PathLike[str], force: bool, fill) -> list[str]:
    """Run ``fill(tmp)`` on a temporary sibling of ``out``, then rename it into place; returns what it wrote."""
    out = Path(out)
    check_out(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}.", dir=out.parent))
    try:
        names = fill(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700 folders; an export is data to share
        install_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return names


def export_fold(
    run_dir: str | os.PathLike[str], fold: int, out: str | os.PathLike[str], force: bool = False
) -> ExportResult:
    """Write fold ``fold`` of run ``run_dir`` into ``out`` as a timm ``local-dir:`` folder (see the module doc).

    An ``out`` that holds files is refused unless ``force``; the folder is replaced whole, atomically.
    """
    import torch

    from hcd_kit.backbones import resolve
    from hcd_kit.inference.runs import load_fold_model
    from hcd_kit.runs.model import read_run_model, select_folds

    run_dir, out = Path(run_dir), Path(out)
    check_out(out, force)  # before loading anything: a refusal costs nothing
    spec = read_run_model(run_dir)
    select_folds(run_dir, [fold])
    n_train = train_patches(run_dir, fold)
    backbone = resolve(spec.model)
    kwargs = symbolic_model_kwargs(backbone)
    model = load_fold_model(run_dir, fold, spec, torch.device("cpu"))
    entry = backbone.entry
    hcd = {
        "registry": entry.name if entry is not None else None,
        "model_kwargs": kwargs,
        "source_model": spec.model,
        "run": str(run_dir.resolve()),
        "fold": fold,
        "img_size": spec.img_size,
        "train_patches": n_train,
        "licence": entry.licence if entry is not None else None,
        "written_by": "hcd weights export",
    }
    files = build_dir(
        out,
        force,
        lambda tmp: save_local_dir(
            model,
            tmp,
            img_size=spec.img_size,
            model_kwargs=kwargs,
            hcd=hcd,
            licence=entry.licence if entry is not None else None,
        ),
    )
    return ExportResult(out, files, spec.model, hcd["registry"], fold, spec.img_size, n_train, hcd)
