"""Shared test set-up: real data from ../shared/data unless HFP_DATA_DIR says otherwise."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HFP_DATA_DIR", str(REPO_ROOT.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ["HFP_DATA_DIR"])
    if not (path / "ett" / "ETTh1.csv").is_file():
        pytest.fail(f"HFP_DATA_DIR={path} does not hold ett/ETTh1.csv (see ../shared/data/README.md)")
    return path
