"""One figure style for the whole book: colours and line styles fixed per estimator, shared 2D extents.

Call :func:`set_style` once per notebook. Figures carry no titles (the book captions them); axis labels
are lowercase with symbols, e.g. "t (flow time)", "K (samples)".
"""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from torch import Tensor

__all__ = ["set_style", "ESTIMATOR_STYLE", "style_of", "run_styles", "density_panel", "CMAP"]

#: Okabe–Ito colour-blind-safe palette, one fixed colour and dash per estimator everywhere in the book.
ESTIMATOR_STYLE: dict[str, dict] = {
    "exact": {"color": "#000000", "linestyle": "-", "label": "exact"},
    "none": {"color": "#E69F00", "linestyle": "-", "label": "noise-expectation (c = 0)"},
    "gradient": {"color": "#56B4E9", "linestyle": "--", "label": "gradient-expectation (c = (β/α)²)"},
    "plugin": {"color": "#CC79A7", "linestyle": "-.", "label": "RFM plug-in c"},
    "auto": {"color": "#009E73", "linestyle": "-", "label": "auto c (ours)"},
    "qsm": {"color": "#D55E00", "linestyle": (0, (3, 1, 1, 1)), "label": "QSM (∇Q at the noisy action)"},
    "sac": {"color": "#7f7f7f", "linestyle": ":", "label": "SAC"},
}
CMAP = "viridis"
#: Colours for further runs of an estimator that already has its line in a figure: the rest of the
#: Okabe–Ito's blue, then matplotlib's tab10 without its blue, orange, green and pink, which are hard to tell
#: from Okabe–Ito's blue and the estimators' orange, green and pink beside them (never a colour already used);
#: Okabe–Ito's yellow last, since a thin or dotted yellow line is hard to see on white.
_EXTRA_COLOURS: tuple[str, ...] = ("#0072B2", "#d62728", "#9467bd", "#8c564b", "#bcbd22", "#17becf", "#F0E442")
_EXTRA_DASHES: tuple = ("-", "--", "-.", ":")


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
            "axes.labelsize": 11,
            "xtick.labelsize": 10,
            "ytick.labelsize": 10,
            "legend.fontsize": 10,
            "legend.frameon": True,
            "legend.facecolor": "white",
            "legend.framealpha": 0.85,
            "image.cmap": CMAP,
        }
    )


def style_of(name: str) -> dict:
    """Matplotlib keyword arguments (color, linestyle, label) for an estimator name, e.g. "auto"."""
    if name not in ESTIMATOR_STYLE:
        raise ValueError(f"unknown estimator style {name!r}; expected one of {sorted(ESTIMATOR_STYLE)}")
    return dict(ESTIMATOR_STYLE[name])


def run_styles(keys: list[str | None]) -> list[dict]:
    """One style per line of a figure: the estimator's own colour for its first line, and for every
    further line (a second run of the same estimator, or a run with no estimator style) a colour no
    other line of the figure has, so that two runs of one algorithm never share a colour.

    ``keys``: estimator names of :data:`ESTIMATOR_STYLE` or None, one per line. Returns dicts of
    color and linestyle (and the estimator's label for its first line).
    """
    styles: list[dict] = []
    seen: set[str] = set()
    reserved = {ESTIMATOR_STYLE[k]["color"] for k in keys if k in ESTIMATOR_STYLE}
    spare = [c for c in _EXTRA_COLOURS if c not in reserved]
    extra = 0
    for key in keys:
        if key in ESTIMATOR_STYLE and key not in seen:
            seen.add(key)
            styles.append(style_of(key))
            continue
        colour = spare[extra % len(spare)]
        dash = _EXTRA_DASHES[(extra // len(spare)) % len(_EXTRA_DASHES)]
        extra += 1
        styles.append({"color": colour, "linestyle": ESTIMATOR_STYLE[key]["linestyle"] if key in ESTIMATOR_STYLE and extra <= len(spare) else dash})
    return styles


def density_panel(ax: plt.Axes, density: Tensor | np.ndarray, extent: float, **kwargs) -> mpl.image.AxesImage:
    """Show a 2D density on [-extent, extent]^2 (rows along the second axis, as ExactGrid.density())."""
    d = density.detach().cpu().numpy() if isinstance(density, Tensor) else np.asarray(density)
    im = ax.imshow(d, origin="lower", extent=(-extent, extent, -extent, extent), cmap=CMAP, **kwargs)
    ax.set_xlabel("a₁ (action)")
    ax.set_ylabel("a₂ (action)")
    ax.set_aspect("equal")
    ax.grid(False)
    return im
