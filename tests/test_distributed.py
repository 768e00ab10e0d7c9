"""A recipe runs unchanged under `torchrun --nproc_per_node 2` (gloo, CPU), trains, and saves once."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

RECIPE = "patchtsmixer-demo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_training_saves_once(tmp_path):
    out = tmp_path / "run"
    cli = shutil.which("hf-plugins") or str(Path(sys.executable).with_name("hf-plugins"))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), "--no-python", cli,
        "train", RECIPE, "--tiny", "--max-steps", "4", "--output-dir", str(out),
        "--linear-probe-steps", "2",  # a frozen backbone under DDP for two steps, then every weight
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["train"]["train_loss"] > 0
    assert (out / "README.md").is_file() and (out / "config.json").is_file()
    weights = load_file(str(out / "model.safetensors"))
    assert weights
    # written exactly once: no leftover temporary folders from a second writer
    siblings = [p.name for p in tmp_path.iterdir()]
    assert siblings == ["run"], siblings
    assert result.stdout.count("wrote ") == 1


def test_evaluate_reloads_a_trained_folder(tmp_path):
    from hf_plugins.recipes import run_recipe

    out = run_recipe(RECIPE, ["--tiny", "--max-steps", "2", "--output-dir", str(tmp_path / "run")])
    saved = json.loads((Path(out) / "metrics.json").read_text())["test"]
    result = subprocess.run([sys.executable, "-m", "hf_plugins.cli", "evaluate", out], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    again = json.loads(result.stdout[result.stdout.index("{"):])
    assert again["test_loss"] == pytest.approx(saved["test_loss"], rel=1e-5)
