"""edgeR (Robinson, McCarthy, Chen & Smyth): negative binomial GLMs with quasi-likelihood, vectorised
over genes.

=====================  =====================================================================
file                   R function(s) it follows (edgeR 4.10, edgeR 3.40 behind the legacy switches)
=====================  =====================================================================
``glm.py``             ``glmFit`` (``mglmOneWay``, ``mglmLevenberg``), ``estimateDisp``
                       (APL grid, ``WLEB``, ``locfitByCol``), ``glmQLFit(legacy = TRUE)``,
                       ``glmQLFTest``, ``glmLRT``, ``aveLogCPM``
``ql.py``              edgeR 4's ``glmQLFit`` (``estimateGLMCommonDisp`` of the top genes,
                       ``compute_ave_qd``, ``compute_adjust_vec``) and its ``glmQLFTest``
``nb.py``              the same GLM and dispersion algorithms in plain numpy as sva's
                       ``ComBat_seq`` calls them (``glmFit``, ``estimateGLMCommonDisp``,
                       ``estimateGLMTagwiseDisp``), and R's ``pnbinom``/``qnbinom``
``_kernels.py``        numba per-gene kernels of ``glm.py`` (unit deviance, one-way and Levenberg
                       fits, adjusted profile likelihood)
=====================  =====================================================================

Normalisation (``calcNormFactors``) and ``filterByExpr`` are shared with other tools and live in
:mod:`bulkpy._stats.normalization` and :mod:`bulkpy._stats.filter`.
"""
