"""rfm_teach: learn and run Reverse Flow Matching (Li, Tang & Azizan, ICML 2026).

The package follows the paper's argument, one module per idea, data flowing one way::

    targets -> paths -> estimators -> policies -> agent -> train

Conventions: t = 1 is data and t = 0 is noise (x_t = alpha_t x1 + beta_t x0); shapes are batch B,
draws K, action dimension d; randomness enters through an explicit ``torch.Generator``.
"""

from . import estimators, paths, targets
from .estimators import PosteriorEstimate, posterior_mean
from .paths import LinearFlow, VEDiffusion, VPDiffusion
from .targets import Boltzmann, ExactGrid

__version__ = "0.1.0"

__all__ = [
    "estimators",
    "paths",
    "targets",
    "posterior_mean",
    "PosteriorEstimate",
    "LinearFlow",
    "VPDiffusion",
    "VEDiffusion",
    "Boltzmann",
    "ExactGrid",
]
