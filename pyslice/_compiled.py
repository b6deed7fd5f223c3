"""The one place that imports the compiled module ``pyslice._C``.

``import pyslice`` must work where ``_C`` failed to build or to load (the torch references still
run). The first attempt to load it is made lazily, by the first caller that needs it; a failure is
kept and re-raised, with its cause and how to rebuild, each time a compiled path is asked for.

Setting ``PYSLICE_DISABLE_COMPILED=1`` in the environment makes the module count as unavailable,
to exercise the fallbacks.
"""

from __future__ import annotations

import importlib
import os
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "CompiledModuleUnavailable",
    "build_info",
    "cuda_compiled",
    "is_available",
    "load",
    "unavailable_reason",
]

_MODULE_NAME = "pyslice._C"
_DISABLE_VARIABLE = "PYSLICE_DISABLE_COMPILED"
_REBUILD_HINT = (
    "To build it, from a source checkout (needs a C++17 compiler; CMake, ninja, pybind11 and "
    "scikit-build-core come from pip): `pip install --no-build-isolation -e .` "
    "(or `pip install .`); set PYSLICE_CUDA=OFF to skip the CUDA kernels, PYSLICE_CUDA=ON to "
    "require them."
)


class CompiledModuleUnavailable(RuntimeError):
    """``pyslice._C`` could not be imported; the message says why and how to rebuild."""


_lock = threading.Lock()
_attempted = False
_module: ModuleType | None = None
_reason: str | None = None
_cause: BaseException | None = None


def _attempt() -> None:
    global _attempted, _module, _reason, _cause
    if _attempted:
        return
    with _lock:
        if _attempted:
            return
        if os.environ.get(_DISABLE_VARIABLE, "").strip() not in ("", "0"):
            _reason = f"disabled by the environment variable {_DISABLE_VARIABLE}=1"
        else:
            try:
                _module = importlib.import_module(_MODULE_NAME)
            except Exception as error:  # ImportError mostly; a failing module init raises others
                _cause = error
                _reason = (
                    f"{_MODULE_NAME} could not be imported: {type(error).__name__}: {error}. "
                    f"{_source_tree_note()}{_REBUILD_HINT}"
                )
        _attempted = True


def _source_tree_note() -> str:
    """A note when pyslice was imported from an uninstalled checkout (it has no _C there)."""
    package = Path(__file__).resolve().parent
    if (package.parent / "CMakeLists.txt").is_file() and not any(package.glob("_C.*")):
        return (
            f"pyslice was imported from the source folder {package}, which holds no compiled "
            "module: install the package, or run the tests with the `pytest` command (not "
            "`python -m pytest`, which puts the current folder first on sys.path). "
        )
    return ""


def load() -> ModuleType:
    """Return ``pyslice._C``, or raise :class:`CompiledModuleUnavailable` saying why not."""
    _attempt()
    if _module is None:
        raise CompiledModuleUnavailable(_reason) from _cause
    return _module


def is_available() -> bool:
    """True when ``pyslice._C`` imports."""
    _attempt()
    return _module is not None


def unavailable_reason() -> str | None:
    """Why ``pyslice._C`` is unavailable (the original error and how to rebuild), or None."""
    _attempt()
    return _reason


def build_info() -> dict[str, Any]:
    """What ``pyslice._C`` was built with (see ``_C.build_info``), plus ``available``.

    When the module is unavailable: ``{"available": False, "reason": <why>}``.
    """
    _attempt()
    if _module is None:
        return {"available": False, "reason": _reason}
    info: dict[str, Any] = dict(_module.build_info())
    info["available"] = True
    return info


def cuda_compiled() -> bool:
    """True when ``pyslice._C`` is available and was built with its CUDA kernels."""
    _attempt()
    return _module is not None and bool(_module.cuda_compiled())
