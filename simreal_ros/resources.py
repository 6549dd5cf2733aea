"""Locate the package's data files (urdf/, config/, launch/, policies/).

The same code runs from a source checkout, a ``pip install`` (editable or not) and a
colcon/ament install, so the share directory is searched in a fixed order:

1. ``$SIMREAL_ROS_SHARE`` when set (explicit override);
2. the source tree (the directory above this package, when it holds ``urdf/``);
3. ``<sys.prefix>/share/simreal_ros`` (what ``setup.py``'s ``data_files`` install);
4. the ament index, when ``ament_index_python`` and ``AMENT_PREFIX_PATH`` are available.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

PACKAGE = "simreal_ros"


class ResourceNotFoundError(FileNotFoundError):
    """A data file of the package could not be found in any share directory."""


def _candidates() -> list[Path]:
    out: list[Path] = []
    env = os.environ.get("SIMREAL_ROS_SHARE")
    if env:
        out.append(Path(env))
    out.append(Path(__file__).resolve().parent.parent)
    out.append(Path(sys.prefix) / "share" / PACKAGE)
    if os.environ.get("AMENT_PREFIX_PATH"):
        try:
            from ament_index_python.packages import get_package_share_directory

            out.append(Path(get_package_share_directory(PACKAGE)))
        except Exception:  # noqa: BLE001 - the index is optional; a miss is not an error here
            pass
    return out


@lru_cache(maxsize=1)
def share_dir() -> Path:
    """Return the directory that holds ``urdf/`` and ``config/``."""
    tried = _candidates()
    for cand in tried:
        if (cand / "urdf").is_dir() and (cand / "config").is_dir():
            return cand
    raise ResourceNotFoundError(
        f"cannot find the {PACKAGE} share directory (urdf/ and config/); tried: "
        + ", ".join(str(c) for c in tried)
        + ". Set SIMREAL_ROS_SHARE to the directory that holds them."
    )


def resource(*parts: str) -> Path:
    """Path of a file in the share directory, e.g. ``resource("urdf", "panda.urdf")``."""
    path = share_dir().joinpath(*parts)
    if not path.exists():
        raise ResourceNotFoundError(f"{PACKAGE} resource not found: {path}")
    return path
