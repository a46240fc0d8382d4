"""limma (Smyth et al.): linear models with empirical Bayes moderation, vectorised over genes.

=====================  =====================================================================
file                   R function(s) it follows (limma 3.68 by default, 3.54 behind legacy switches)
=====================  =====================================================================
``lmfit.py``           ``lmFit`` (``lm.series``, ``mrlm`` weights, ``nonEstimable``), ``contrasts.fit``
``splines.py``         ``splines::ns`` for the variance trend of ``fitFDist``
``squeeze_var.py``     ``fitFDist``, ``fitFDistRobustly``, ``trigammaInverse``, ``squeezeVar``
``ebayes.py``          ``eBayes``, ``treat`` (``tmixture.vector``)
``voom.py``            ``voom``
``lowess.py``          R's ``lowess`` (``clowess``), limma's ``loessFit`` without weights, ``approx(rule = 2)``
``weighted_lowess.py`` ``weightedLowess`` and the weighted branch of ``loessFit`` (limma 3.68)
=====================  =====================================================================

The public names are re-exported here; adapters import this package, not the files.
"""

from ..multitest import p_adjust_bh
from .ebayes import EBayesResult, ebayes, treat
from .lmfit import LinearFit, contrasts_fit, lm_fit
from .lowess import lowess
from .splines import natural_spline_basis
from .squeeze_var import fit_f_dist, fit_f_dist_robustly, squeeze_var, trigamma_inverse
from .voom import VoomResult, voom

__all__ = [
    "EBayesResult",
    "LinearFit",
    "VoomResult",
    "contrasts_fit",
    "ebayes",
    "fit_f_dist",
    "fit_f_dist_robustly",
    "lm_fit",
    "lowess",
    "natural_spline_basis",
    "p_adjust_bh",
    "squeeze_var",
    "treat",
    "trigamma_inverse",
    "voom",
]
