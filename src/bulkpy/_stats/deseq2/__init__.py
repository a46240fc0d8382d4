"""DESeq2 (Love, Huber & Anders): the negative binomial GLM engine, vectorised over genes.

=====================  =====================================================================
file                   R function(s) it follows (DESeq2 1.38 / 1.52; see each module)
=====================  =====================================================================
``deseq.py``           ``DESeq`` (the driver), ``nbinomWaldTest``, ``nbinomLRT``, ``results``
                       (``getContrast``, ``pvalueAdjustment``, independent filtering,
                       ``lfcThreshold``), ``replaceOutliers``/``refitWithoutOutliers``,
                       Cook's distances, ``lfcShrink(type = "normal")``
``size_factors.py``    ``estimateSizeFactors`` (ratio, poscounts, iterate; ``normalizationFactors``
                       from tximport lengths)
``dispersion.py``      ``estimateDispersionsGeneEst``, ``estimateDispersionsFit`` (parametric,
                       local, mean), ``estimateDispersionsMAP``, ``estimateDispersionsPriorVar``
``nbinom.py``          ``fitNbinomGLMs`` (IRLS with ridge penalty), ``fitBeta``
``vst.py``             ``varianceStabilizingTransformation`` (parametric closed form, local/mean
                       by spline of the integrated trend)
``rlog.py``            ``rlog``/``rlogData`` (DESeq2 1.52): dispersion trend, prior variance of the
                       sample coefficients (``matchWeightedUpperQuantileForVariance``), the ridge
                       fit on the intercept + sample-indicator design, ``sparseTest``
``locfit.py``          ``locfit(lp(..., deg = 2))`` as DESeq2's local dispersion trend calls it
``apeglm.py``          ``lfcShrink(type = "apeglm")``: apeglm 1.27's ``apeglm(method = "nbinomCR")``
                       (adaptive Cauchy prior, ``priorVar``, L-BFGS mode, ``optimHess``, BFGS
                       refits), ``svalue``
``priorvar_sim.py``    the simulation of ``estimateDispersionsPriorVar`` for few residual df
                       (R's Mersenne Twister, ``rnorm``/``rchisq``)
``_kernels.py``        numba per-gene kernels (IRLS, dispersion line search, Cook's, contrasts)
=====================  =====================================================================
"""
