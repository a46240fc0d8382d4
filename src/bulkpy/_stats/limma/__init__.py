"""limma (Smyth et al.): linear models with empirical Bayes moderation, vectorised over genes.

=====================  =====================================================================
file                   R function(s) it follows (limma 3.68 by default, 3.54 behind legacy switches)
=====================  =====================================================================
``lmfit.py``           ``lmFit`` (``lm.series``, ``gls.series`` with ``block``/``correlation``, ``nonEstimable``),
                       ``contrasts.fit``
``dupcor.py``          ``duplicateCorrelation`` with ``block`` (statmod's ``mixedModel2Fit``, limma 3.68)
``array_weights.py``   ``arrayWeights`` (REML, gene by gene), ``voomWithQualityWeights`` (limma 3.68)
``batch.py``           ``removeBatchEffect`` (limma 3.68)
``_kernels.py``        compiled per-gene loops: statmod's ``glmgam.fit``, ``.arrayWeightsGeneByGene``
``splines.py``         ``splines::ns`` for the variance trend of ``fitFDist``
``squeeze_var.py``     ``fitFDist``, ``fitFDistRobustly``, ``trigammaInverse``, ``squeezeVar``
``ebayes.py``          ``eBayes``, ``treat`` (``tmixture.vector``)
``voom.py``            ``voom`` (with ``weights``, ``block``, ``correlation`` for its linear model)
``camera.py``          ``camera``, ``fry`` (``.lmEffects``, ``.fryEffects``), ``interGeneCorrelation``, ``zscoreT`` (Hill)
``lowess.py``          R's ``lowess`` (``clowess``), limma's ``loessFit`` without weights, ``approx(rule = 2)``
``weighted_lowess.py`` ``weightedLowess`` and the weighted branch of ``loessFit`` (limma 3.68)
=====================  =====================================================================

The public names are re-exported here; adapters import this package, not the files.
"""

from ..multitest import p_adjust_bh
from .array_weights import QualityVoomResult, array_weights, voom_with_quality_weights
from .batch import batch_terms, remove_batch_effect
from .dupcor import DupCorResult, block_in_design, duplicate_correlation, duplicate_correlation_blocks
from .ebayes import EBayesResult, FTestResult, ebayes, f_projection, moderated_f, treat
from .lmfit import LinearFit, contrasts_fit, lm_fit, lm_fit_blocks
from .lowess import lowess
from .splines import natural_spline_basis
from .squeeze_var import fit_f_dist, fit_f_dist_robustly, squeeze_var, trigamma_inverse
from .voom import VoomResult, voom, voom_blocks

__all__ = [
    "DupCorResult",
    "EBayesResult",
    "FTestResult",
    "LinearFit",
    "QualityVoomResult",
    "VoomResult",
    "array_weights",
    "batch_terms",
    "block_in_design",
    "contrasts_fit",
    "duplicate_correlation",
    "duplicate_correlation_blocks",
    "ebayes",
    "f_projection",
    "fit_f_dist",
    "fit_f_dist_robustly",
    "lm_fit",
    "lm_fit_blocks",
    "lowess",
    "moderated_f",
    "natural_spline_basis",
    "p_adjust_bh",
    "remove_batch_effect",
    "squeeze_var",
    "treat",
    "trigamma_inverse",
    "voom",
    "voom_blocks",
    "voom_with_quality_weights",
]
