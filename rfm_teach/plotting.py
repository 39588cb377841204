"""One figure style for the whole book: colours and line styles fixed per estimator, shared 2D extents.

Call :func:`set_style` once per notebook. Figures carry no titles (the book captions them); axis labels
are lowercase with symbols, e.g. "t (flow time)", "K (samples)".
"""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from torch import Tensor

__all__ = ["set_style", "ESTIMATOR_STYLE", "style_of", "density_panel", "CMAP"]

#: Okabe–Ito colour-blind-safe palette, one fixed colour and dash per estimator everywhere in the book.
ESTIMATOR_STYLE: dict[str, dict] = {
    "exact": {"color": "#000000", "linestyle": "-", "label": "exact"},
    "none": {"color": "#E69F00", "linestyle": "-", "label": "noise-expectation (c = 0)"},
    "gradient": {"color": "#56B4E9", "linestyle": "--", "label": "gradient-expectation (c = (β/α)²)"},
    "plugin": {"color": "#CC79A7", "linestyle": "-.", "label": "RFM plug-in c"},
    "auto": {"color": "#009E73", "linestyle": "-", "label": "RFM auto c (ours)"},
    "sac": {"color": "#7f7f7f", "linestyle": ":", "label": "SAC"},
}
CMAP = "viridis"


def set_style() -> None:
    """Apply the book's matplotlib style (line width 2, no top/right spines, readable font sizes)."""
    mpl.rcParams.update(
        {
            "figure.figsize": (6.0, 4.0),
            "figure.dpi": 100,
            "lines.linewidth": 2.0,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "font.size": 11,
            "legend.frameon": False,
            "image.cmap": CMAP,
        }
    )


def style_of(name: str) -> dict:
    """Matplotlib keyword arguments (color, linestyle, label) for an estimator name, e.g. "auto"."""
    if name not in ESTIMATOR_STYLE:
        raise ValueError(f"unknown estimator style {name!r}; expected one of {sorted(ESTIMATOR_STYLE)}")
    return dict(ESTIMATOR_STYLE[name])


def density_panel(ax: plt.Axes, density: Tensor | np.ndarray, extent: float, **kwargs) -> mpl.image.AxesImage:
    """Show a 2D density on [-extent, extent]^2 (rows along the second axis, as ExactGrid.density())."""
    d = density.detach().cpu().numpy() if isinstance(density, Tensor) else np.asarray(density)
    im = ax.imshow(d, origin="lower", extent=(-extent, extent, -extent, extent), cmap=CMAP, **kwargs)
    ax.set_xlabel("a₁ (action)")
    ax.set_ylabel("a₂ (action)")
    ax.set_aspect("equal")
    ax.grid(False)
    return im
