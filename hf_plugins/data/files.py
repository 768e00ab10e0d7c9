"""Where data files come from: ``--data-dir``, else ``HFP_DATA_DIR``, else a download cache."""

from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

from .._io import atomic_path

# Public source of each file we know how to fetch (relative path under the data directory -> URL).
PUBLIC_URLS = {
    "ett/ETTh1.csv": "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/ETTh1.csv",
    "ett/ETTh2.csv": "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/ETTh2.csv",
    "ett/ETTm1.csv": "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/ETTm1.csv",
    "ett/ETTm2.csv": "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/ETTm2.csv",
}


def default_cache_dir() -> Path:
    base = os.environ.get("HFP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hf_plugins", "data")
    return Path(base)


def resolve_data_file(relative_path: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Find ``relative_path`` (for example ``"ett/ETTh1.csv"``).

    Looks in ``data_dir``, then ``$HFP_DATA_DIR``, then the cache (``$HFP_CACHE`` or
    ``~/.cache/hf_plugins/data``), and finally downloads the public file into the cache.
    """
    candidates = []
    if data_dir is not None:
        candidates.append(Path(data_dir))
    if os.environ.get("HFP_DATA_DIR"):
        candidates.append(Path(os.environ["HFP_DATA_DIR"]))
    candidates.append(default_cache_dir())
    for base in candidates:
        path = base / relative_path
        if path.is_file():
            return path
    url = PUBLIC_URLS.get(relative_path)
    searched = ", ".join(str(c) for c in candidates)
    if url is None or not download:
        raise FileNotFoundError(
            f"data file {relative_path!r} not found in {searched}; pass --data-dir or set HFP_DATA_DIR"
        )
    target = default_cache_dir() / relative_path
    try:
        with atomic_path(target) as tmp, open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out, 1 << 20)
    except OSError as exc:
        raise FileNotFoundError(
            f"data file {relative_path!r} not found in {searched} and downloading {url} failed ({exc}); "
            "pass --data-dir or set HFP_DATA_DIR"
        ) from exc
    return target
