"""Where models come from: a local folder, a model shipped inside this package, or a hub id."""

from __future__ import annotations

import os
from pathlib import Path

SHIPPED_DIR = Path(__file__).parent / "checkpoints"


def shipped_models() -> list[str]:
    """Names of the checkpoints shipped inside the package (loadable offline by name)."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "config.json").is_file())


def shipped_path(name) -> Path | None:
    """The folder of the model shipped under ``name``, or None when ``name`` is not a shipped model."""
    if not isinstance(name, str) or "/" in name:
        return None
    folder = SHIPPED_DIR / name
    return folder if (folder / "config.json").is_file() else None


def resolve_model_path(name_or_path) -> str:
    """A shipped name → its folder; a folder → itself (it must hold config.json); anything else → a hub id."""
    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    if not isinstance(name_or_path, str):
        raise TypeError(f"expected a model name or folder, got {type(name_or_path).__name__}")
    shipped = shipped_path(name_or_path)
    if shipped is not None:
        return str(shipped)
    if os.path.isdir(name_or_path):
        if not os.path.isfile(os.path.join(name_or_path, "config.json")):
            raise FileNotFoundError(f"{name_or_path} is a folder without config.json: not a saved VLE model")
        return name_or_path
    if "/" not in name_or_path:
        shipped_list = ", ".join(shipped_models()) or "none yet"
        raise FileNotFoundError(f"unknown model {name_or_path!r}: not a shipped model (shipped: {shipped_list}) and "
                                f"not a folder; hub ids look like 'hfl/vle-base'")
    return name_or_path
