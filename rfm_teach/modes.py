"""One code path, three sizes: ``RFM_TEACH_MODE`` = ``smoke`` (CI, seconds), ``book`` (CPU, minutes), ``full`` (GPU).

Every notebook has one ``parameters`` cell that calls :func:`by_mode` for each size it needs; no other
cell branches on the mode. ``CI=true`` with no mode set means ``smoke``.
"""

from __future__ import annotations

import os
from typing import TypeVar

__all__ = ["MODES", "get_mode", "by_mode"]

MODES: tuple[str, ...] = ("smoke", "book", "full")
T = TypeVar("T")


def get_mode() -> str:
    """The current size: ``$RFM_TEACH_MODE`` if set, else ``smoke`` when ``$CI`` is true, else ``book``."""
    mode = os.environ.get("RFM_TEACH_MODE", "").strip().lower()
    if not mode:
        mode = "smoke" if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes") else "book"
    if mode not in MODES:
        raise ValueError(f"RFM_TEACH_MODE must be one of {MODES}; got {mode!r}")
    return mode


def by_mode(smoke: T, book: T, full: T | None = None, *, mode: str | None = None) -> T:
    """Pick the value for the current mode (``full`` defaults to ``book``'s value)."""
    mode = get_mode() if mode is None else mode
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    return {"smoke": smoke, "book": book, "full": book if full is None else full}[mode]
