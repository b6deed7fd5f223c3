"""Where pyslice finds its data: the shared structure and rotamer data through the one setting
PYSLICE_DATA (default ``../shared/data`` relative to the working directory), and the files shipped
inside the package. Nothing is copied into the package; code that needs the shared data says so
clearly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "PYSLICE_DATA"
DEFAULT = Path("..") / "shared" / "data"


def data_dir(required: bool = False) -> Path | None:
    """The data folder, or None when it does not exist (FileNotFoundError if ``required``)."""
    path = Path(os.environ.get(ENV_VAR) or DEFAULT).expanduser()
    if path.is_dir():
        return path.resolve()
    if required:
        raise FileNotFoundError(
            f"pyslice data folder not found at {path} (set {ENV_VAR} to the folder that holds "
            "structures/ and top8000/)"
        )
    return None


def shipped_file(name: str) -> Path:
    """A data file shipped inside the package (``pyslice/data/<name>``); FileNotFoundError if the
    installation lacks it."""
    path = Path(__file__).resolve().parent / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"the shipped file {path} is missing (a broken installation?)")
    return path
