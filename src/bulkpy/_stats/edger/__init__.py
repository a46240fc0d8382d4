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
``ql_moments.py``      the NB unit-deviance moments as edgeR 4's ``glmQLFit`` evaluates them
                       (``compute_weight``: its Chebyshev interpolants, rebuilt from the moments)
``treat.py``           ``glmTreat`` (interval and worst-case nulls, on glmFit and both QL fits)
``exact.py``           ``estimateDisp`` without a design (classic mode: ``equalizeLibSizes``,
                       ``q2qnbinom``, ``condLogLikDerDelta``), ``exactTest``
                       (``exactTestDoubleTail``, ``exactTestBetaApprox``)
``nb.py``              the same GLM and dispersion algorithms in plain numpy as sva's
                       ``ComBat_seq`` calls them (``glmFit``, ``estimateGLMCommonDisp``,
                       ``estimateGLMTagwiseDisp``), and R's ``pnbinom``/``qnbinom``
``blocked.py``         the same pipeline (``estimateDisp``, both ``glmQLFit``, ``glmQLFTest``,
                       ``glmLRT``, ``glmTreat``, classic ``estimateDisp`` and ``exactTest``) as
                       passes over blocks of genes of a dask matrix, per-gene vectors between them
``_kernels.py``        numba per-gene kernels of ``glm.py`` (unit deviance, one-way and Levenberg
                       fits, adjusted profile likelihood) and ``exact.py`` (the double-tail sums)
=====================  =====================================================================

Offsets are one value per sample (log effective library sizes) or a genes × samples matrix
(``y$offset``, e.g. tximport's lengths through ``scaleOffset``) everywhere edgeR takes them:
``glmFit``, ``estimateDisp``, ``aveLogCPM``, ``addPriorCount``, both ``glmQLFit`` and the tests.

Normalisation (``calcNormFactors``) and ``filterByExpr`` are shared with other tools and live in
:mod:`bulkpy._stats.normalization` and :mod:`bulkpy._stats.filter`.
"""
