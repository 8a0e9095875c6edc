"""The backbone factory's pretrained paths: the Hugging Face hub (through its local cache, since this machine
has no network) and the failure a user without network or cache sees.

Each case runs in a fresh interpreter because huggingface_hub reads HF_HOME and HF_HUB_OFFLINE when it is
first imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import timm
import torch
from conftest import hub_snapshot
from safetensors.torch import save_file

REPO = "timm/test_resnet.r160_in1k"  # test_resnet's default pretrained tag on the hub

LOAD = """
import sys, torch
from hcd_kit.errors import ConfigError
from hcd_kit.model import create_model
try:
    m = create_model("test_resnet", pretrained=True)
except ConfigError as exc:
    print("ERROR", exc)
    sys.exit(3)
torch.save(m.state_dict(), sys.argv[1])
"""


def _run(tmp_path: Path, hf_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run(
        [sys.executable, "-c", LOAD, str(tmp_path / "out.pt")], env=env, text=True, capture_output=True, timeout=120
    )


def test_pretrained_weights_come_from_the_hub_cache(tmp_path):
    # Lay out the hub cache exactly as huggingface_hub does after a download, then load "from the hub".
    source = timm.create_model("test_resnet", num_classes=1000)
    save_file(source.state_dict(), hub_snapshot(tmp_path / "hf", REPO) / "model.safetensors")

    res = _run(tmp_path, tmp_path / "hf")
    assert res.returncode == 0, res.stdout + res.stderr
    got, want = torch.load(tmp_path / "out.pt", weights_only=True), source.state_dict()
    body = [k for k in want if not k.startswith("fc.")]  # the 1000-class head is replaced by one logit
    assert body and all(torch.equal(got[k], want[k]) for k in body)
    assert got["fc.weight"].shape[0] == 1


def test_no_network_and_no_cache_is_one_actionable_line(tmp_path):
    res = _run(tmp_path, tmp_path / "empty")
    assert res.returncode == 3, res.stdout + res.stderr
    line = res.stdout.strip()
    assert "\n" not in line
    assert "'test_resnet' needs its weights from the Hugging Face hub (timm/test_resnet.r160_in1k)" in line
    assert "HF_HUB_OFFLINE is set" in line
    assert "--weights FILE" in line and "--no-pretrained" in line
