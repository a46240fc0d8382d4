"""limma's competitive and self-contained gene set tests: ``camera`` and ``fry`` (limma 3.68.5,
Bioconductor 3.23), with ``interGeneCorrelation``.

Both start from the same per-gene quantities, computed once for every gene and then aggregated
per set through a sparse sets x genes membership matrix:

* the **effects** of limma's ``.lmEffects``: each gene's (weighted, optionally block-whitened)
  expression rotated by the Householder QR of its design, the contrast moved to the last column.
  The first effect (sign-corrected) carries the contrast, the ``n - p`` others are residual
  effects. With observation weights (voom) the QR is per gene, batched here over genes one
  Householder column at a time; LINPACK's reflections (``dqrdc2``, R's ``qr``) are reproduced
  exactly so that the residual effects of weighted genes, which depend on the basis, equal R's.
* ``camera`` (``camera.default``): moderated t statistics of the contrast (``squeezeVar`` of the
  residual variances), converted to z-scores (``zscoreT(approx = TRUE, method = "hill")``), and per
  set a two-sample t test of the set's mean against the other genes whose variance is inflated by
  ``1 + (m - 1) * correlation`` (default correlation 0.01; with ``inter_gene_cor=None`` it is
  estimated per set from the standardised residual effects, ``interGeneCorrelation``), or a rank
  sum test (``use_ranks``, ``rankSumTestWithCorrelation``).
* ``fry`` (``fry.default`` / ``.fryEffects``): the closed form of ``roast`` with infinitely many
  rotations. Effects are standardised by a robust posterior standard deviation
  (``standardize = "posterior.sd"``); per set, the directional test is a t statistic of the mean
  contrast effect against the mean residual effects, the mixed test a beta approximation to the
  distribution of the set's share of squared effects, from the singular values of the set's
  effects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy import stats as sst

from .._blocks import gene_blocks, read_block
from ..multitest import p_adjust_bh
from .squeeze_var import _gauss_uniform, _squeeze, fit_f_dist, fit_f_dist_robustly, squeeze_var

#: R's ``qr`` (LINPACK ``dqrdc2``) rank tolerance
QR_TOL = 1e-7


# --------------------------------------------------------------------------------------------
# the effects (limma's .lmEffects), batched over genes
# --------------------------------------------------------------------------------------------


def _householder_qty(A: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched LINPACK Householder QR of ``A`` (``b x n x p``) applied to ``Y`` (``b x n x m``).

    Returns ``Q^T Y`` (R's ``qr.qty``), the diagonal of R (``b x p``) and, per batch, whether a
    column's remaining norm fell below ``QR_TOL`` times its original norm (rank deficiency, where
    R's ``dqrdc2`` would pivot). Both arrays are overwritten."""
    b, n, p = A.shape
    # plain products and sums (not einsum) so that a gene's numbers do not depend on its block
    col_norm = np.sqrt((A * A).sum(axis=1))
    rdiag = np.empty((b, p))
    deficient = np.zeros(b, dtype=bool)
    for k in range(p):
        x = A[:, k:, k]
        nrm = np.sqrt((x * x).sum(axis=1))
        deficient |= ~(nrm > QR_TOL * col_norm[:, k])
        nrm = np.where(nrm > 0, nrm, 1.0)
        nrmxl = np.where(x[:, 0] < 0, -nrm, nrm)  # dsign(nrmxl, x(l,l)): the sign of x(l,l), + for 0
        v = x / nrmxl[:, None]
        v[:, 0] += 1.0
        qraux = v[:, 0]
        if k + 1 < p:
            rest = A[:, k:, k + 1 :]
            t = -(v[:, :, None] * rest).sum(axis=1) / qraux[:, None]
            rest += v[:, :, None] * t[:, None, :]
        yk = Y[:, k:, :]
        t = -(v[:, :, None] * yk).sum(axis=1) / qraux[:, None]
        yk += v[:, :, None] * t[:, None, :]
        rdiag[:, k] = -nrmxl
    return Y, rdiag, deficient


def contrast_design(X: np.ndarray, contrast) -> np.ndarray:
    """The design reparameterised so that its last coefficient is the contrast (camera's and
    ``contrastAsCoef(first = FALSE)``'s column order: the other columns, then the contrast).

    ``contrast`` is a column index (the column is moved last, as R does for ``contrast = j``) or a
    vector of length ``p``: the design is rotated by the Householder reflection of the contrast
    (``qr(contrast)``) and its first column, ``X c`` up to a positive factor, moved last. Only the
    column scale differs between camera's and fry's versions, which leaves the effects unchanged."""
    X = np.asarray(X, dtype=np.float64)
    p = X.shape[1]
    if np.ndim(contrast) == 0:
        j = int(contrast)
        if not 0 <= j < p:
            raise ValueError(f"contrast column {j} is outside the design's {p} columns")
        return np.concatenate([np.delete(X, j, axis=1), X[:, [j]]], axis=1)
    c = np.asarray(contrast, dtype=np.float64).ravel()
    if c.size != p:
        raise ValueError(f"the contrast has {c.size} entries for a design of {p} columns")
    nrm = float(np.sqrt(c @ c))
    if nrm == 0:
        raise ValueError("the contrast is all zero")
    nrmxl = -nrm if c[0] < 0 else nrm
    v = c / nrmxl
    v[0] += 1.0
    H = np.eye(p) - np.outer(v, v) / v[0]
    D = X @ H
    if -nrmxl < 0:  # R flips the first column when qr(contrast)$qr[1, 1] < 0
        D[:, 0] = -D[:, 0]
    return np.concatenate([D[:, 1:], D[:, :1]], axis=1)


def _whitener(block, correlation: float, n: int) -> np.ndarray:
    """``R^{-T}`` with ``R = chol(C)``, C the intra-block correlation matrix (``.lmEffects``)."""
    codes = np.asarray(block).ravel()
    if codes.size != n:
        raise ValueError(f"block has {codes.size} entries for {n} samples")
    C = (codes[:, None] == codes[None, :]) * float(correlation)
    np.fill_diagonal(C, 1.0)
    L = np.linalg.cholesky(C)  # lower, L = R^T
    return np.linalg.solve(L, np.eye(n))


def lm_effects(
    E,
    X: np.ndarray,
    contrast,
    *,
    weights=None,
    block=None,
    correlation: float | None = None,
    block_genes: int | None = None,
) -> np.ndarray:
    """Per-gene effects of the linear model (limma's ``.lmEffects``; also camera's own QR).

    Parameters
    ----------
    E
        Expression, samples x genes (numpy, sparse or dask; read in gene blocks).
    X
        Design matrix, samples x p, full column rank.
    contrast
        Column index of the coefficient tested, or a contrast vector of length p.
    weights
        ``None``, one weight per sample (array weights: ``X`` and ``E`` scaled by their square
        root once) or samples x genes observation weights (a QR per gene).
    block, correlation
        Intra-block correlation: data and design are whitened by ``chol`` of the block
        correlation matrix (fry's ``block``/``correlation``).
    block_genes
        Genes per block (default: the block driver's rule).

    Returns
    -------
    genes x (n - p + 1): column 0 the contrast effect, signed like the contrast's coefficient;
    columns 1.. the residual effects.
    """
    Xc = contrast_design(X, contrast)
    n, p = Xc.shape
    G = E.shape[1]
    if n <= p:
        raise ValueError("no residual degrees of freedom")
    W = None if weights is None else np.asarray(weights, dtype=np.float64)
    sw_samples = None
    if W is not None and W.ndim == 1:
        sw_samples = np.sqrt(W)
        Xc = Xc * sw_samples[:, None]
        W = None
    Linv = None if block is None else _whitener(block, float(correlation), n)
    out = np.empty((G, n - p + 1))
    if W is None:
        Xw = Xc if Linv is None else Linv @ Xc
        A = Xw[None].copy()
        Q = None
    per_gene = n * (p + 1) if W is not None else n
    for sl in gene_blocks(G, per_gene, block_genes=block_genes):
        Y = read_block(E, sl)  # samples x genes
        if sw_samples is not None:
            Y = Y * sw_samples[:, None]
        if W is None:
            if Linv is not None:
                Y = Linv @ Y
            if Q is None:
                # one QR for every gene: keep the reflections by running the design with an identity
                eff, rdiag, bad = _householder_qty(A.copy(), np.eye(n)[None].copy())
                if bad[0]:
                    raise ValueError("the design is not of full rank")
                Q = eff[0]  # Q^T
                sign = np.sign(rdiag[0, p - 1:p])
            e = (Q @ Y).T
        else:
            sw = np.sqrt(W[:, sl]).T  # genes x samples
            Ab = sw[:, :, None] * Xc[None]
            Yb = (sw * Y.T)[:, :, None]
            if Linv is not None:
                Ab = np.matmul(Linv, Ab)  # one product per gene: the same numbers whatever the block
                Yb = np.matmul(Linv, Yb)
            eff, rdiag, bad = _householder_qty(Ab, Yb)
            if bad.any():
                g = int(np.flatnonzero(bad)[0]) + sl.start
                raise ValueError(f"the weighted design matrix is not of full rank for gene {g} (weights too small?)")
            e = eff[:, :, 0]
            sign = np.sign(rdiag[:, p - 1])
        blk = e[:, p - 1 :].copy()
        blk[:, 0] *= sign
        out[sl] = blk
    return out


# --------------------------------------------------------------------------------------------
# camera
# --------------------------------------------------------------------------------------------


def zscore_t_hill(t, df) -> np.ndarray:
    """z-scores equivalent in tail probability to t statistics, Hill's (1970) approximation
    (limma's ``zscoreT(approx = TRUE, method = "hill")``)."""
    x = np.asarray(t, dtype=np.float64)
    df = np.minimum(np.asarray(df, dtype=np.float64), 1e100)
    A = df - 0.5
    B = 48.0 * A * A
    z = A * np.log1p(x / df * x)
    z = (((((-0.4 * z - 3.3) * z - 24.0) * z - 85.5) / (0.8 * z * z + 100.0 + B) + z + 3.0) / B + 1.0) * np.sqrt(z)
    return z * np.sign(x)


def _binary(membership) -> sparse.csr_matrix:
    M = sparse.csr_matrix(membership, dtype=np.float64, copy=True)
    M.eliminate_zeros()
    M.data[:] = 1.0
    return M


def inter_gene_correlation(residual_effects: np.ndarray, membership) -> tuple[np.ndarray, np.ndarray]:
    """Variance inflation factor and inter-gene correlation of each set (limma's
    ``interGeneCorrelation``, as camera estimates it): with ``U`` the residual effects of each gene
    divided by their root mean square, ``vif = m * mean_k(mean_{g in set} U[g, k]^2)`` and
    ``correlation = (vif - 1) / (m - 1)``; sets of one gene give ``vif = 1`` and NaN.

    ``residual_effects`` is genes x (n - p); ``membership`` a sets x genes sparse matrix."""
    U = np.asarray(residual_effects, dtype=np.float64)
    s2 = np.mean(U * U, axis=1)
    U = U / np.sqrt(np.maximum(s2, 1e-8))[:, None]
    M = _binary(membership)
    m = np.asarray(M.sum(axis=1)).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_u = (M @ U) / m[:, None]
        vif = m * np.mean(mean_u * mean_u, axis=1)
        cor = (vif - 1) / (m - 1)
    one = m <= 1
    vif[one], cor[one] = 1.0, np.nan
    return vif, cor


@dataclass
class CameraResult:
    """Per-set results of :func:`camera`, in the order of the membership rows (unsorted)."""

    n_genes: np.ndarray
    correlation: np.ndarray  # the fixed or estimated inter-gene correlation (NaN for one gene)
    statistic: np.ndarray  # the two-sample t (parametric) or the rank-sum z (use_ranks), Up > 0
    down: np.ndarray  # one-sided p-values
    up: np.ndarray
    pvalue: np.ndarray  # two-sided (directional) or the non-directional p-value
    direction: np.ndarray  # "Up" / "Down" (directional only)
    fdr: np.ndarray
    df_camera: float
    df_prior: float
    s2_prior: float


def _rank_sum_tests(stat, M, m, correlation, df):
    """limma's ``rankSumTestWithCorrelation`` for every set: ``(less, greater, z)``."""
    G = stat.size
    r = sst.rankdata(stat)  # average ranks, as R's rank()
    n1, n2 = m, G - m
    U = n1 * n2 + n1 * (n1 + 1) / 2 - M @ r
    mu = n1 * n2 / 2
    cor = np.where(np.isnan(correlation), 0.0, correlation)
    plain = (cor == 0) | (n1 == 1)
    s_ind = n1 * n2 * (G + 1) / 12
    s_cor = (
        np.arcsin(1.0) * n1 * n2
        + np.arcsin(0.5) * n1 * n2 * (n2 - 1)
        + np.arcsin(cor / 2) * n1 * (n1 - 1) * n2 * (n2 - 1)
        + np.arcsin((cor + 1) / 2) * n1 * (n1 - 1) * n2
    ) / 2 / np.pi
    sigma2 = np.where(plain, s_ind, s_cor)
    _, counts = np.unique(r, return_counts=True)
    if counts.size < G:
        c = counts.astype(np.float64)
        sigma2 = sigma2 * (1 - np.sum(c * (c + 1) * (c - 1)) / (G * (G + 1.0) * (G - 1.0)))
    sd = np.sqrt(sigma2)
    z_low = (U + 0.5 - mu) / sd
    z_up = (U - 0.5 - mu) / sd
    less = sst.t.sf(z_up, df)
    greater = sst.t.cdf(z_low, df)
    return less, greater, (mu - U) / sd


def camera(
    E,
    X: np.ndarray,
    contrast,
    membership,
    *,
    weights=None,
    inter_gene_cor: float | None = 0.01,
    use_ranks: bool = False,
    allow_neg_cor: bool = False,
    trend_var: bool = False,
    directional: bool = True,
    block_genes: int | None = None,
) -> CameraResult:
    """Competitive gene set test accounting for inter-gene correlation (limma 3.68's ``camera``).

    ``E`` is samples x genes log-expression, ``X`` the design, ``contrast`` a column index or a
    contrast vector, ``membership`` a sets x genes sparse matrix (non-zero = member; weights are
    ignored, as camera's), ``weights`` per sample or samples x genes (voom's). ``inter_gene_cor``
    ``None`` estimates the correlation per set (R's ``NA``); ``use_ranks`` uses the rank sum test;
    ``directional=False`` tests ``|t|`` by ranks (R switches ``use.ranks`` on for it)."""
    n, G = E.shape
    if G < 3:
        raise ValueError(f"too few genes ({G}): camera needs at least 3")
    p = X.shape[1]
    df_res = n - p
    if df_res < 1:
        raise ValueError("no residual degrees of freedom: camera can not compute t statistics")
    if not directional:
        use_ranks = True
    fixed = inter_gene_cor is not None
    if fixed:
        df_camera = np.inf if use_ranks else float(G - 2)
    else:
        df_camera = float(min(df_res, G - 2))
    W = None if weights is None else np.asarray(weights, dtype=np.float64)
    if W is not None and np.any(W <= 0):
        raise ValueError("weights must be positive (camera, as limma's, needs every weight > 0)")
    eff = lm_effects(E, X, contrast, weights=W, block_genes=block_genes)
    unscaled_t = eff[:, 0]
    U = eff[:, 1:]
    sigma2 = np.mean(U * U, axis=1)
    covariate = None
    if trend_var:
        # rowMeans(y), of the data scaled by the square root of sample weights when those are per sample
        scale = np.sqrt(W) if W is not None and W.ndim == 1 else None
        covariate = np.empty(G)
        for sl in gene_blocks(G, n):
            Y = read_block(E, sl)
            covariate[sl] = (Y if scale is None else Y * scale[:, None]).mean(axis=0)
    var_post, s2_prior, df_prior = squeeze_var(sigma2, df_res, covariate=covariate)
    modt = unscaled_t / np.sqrt(var_post)
    if use_ranks:
        stat = modt if directional else np.abs(modt)
    else:
        df_total = min(df_res + float(np.min(df_prior)), G * df_res)
        stat = zscore_t_hill(modt, df_total)

    M = _binary(membership)
    m = np.asarray(M.sum(axis=1)).ravel()
    if np.any(m < 1):
        raise ValueError("every gene set needs at least one gene among the genes tested")
    if fixed:
        cor = np.full(m.size, float(inter_gene_cor))
        vif = 1 + (m - 1) * cor
    else:
        vif, cor = inter_gene_correlation(U, M)
    m2 = G - m
    if use_ranks:
        c_used = cor if allow_neg_cor else np.maximum(0.0, np.nan_to_num(cor, nan=0.0))
        down, up, z = _rank_sum_tests(stat, M, m, c_used, df_camera)
        statistic = z
    else:
        v = vif if allow_neg_cor else np.maximum(1.0, vif)
        mean_stat = float(np.mean(stat))
        var_stat = float(np.var(stat, ddof=1))
        mean_in = (M @ stat) / m
        delta = G / m2 * (mean_in - mean_stat)
        var_pooled = ((G - 1) * var_stat - delta**2 * m * m2 / G) / (G - 2)
        statistic = delta / np.sqrt(var_pooled * (v / m + 1 / m2))
        down = sst.t.cdf(statistic, df_camera)
        up = sst.t.sf(statistic, df_camera)
    if directional:
        pvalue = 2 * np.minimum(down, up)
        direction = np.where(down < up, "Down", "Up")
    else:
        pvalue = up
        direction = np.full(m.size, "", dtype=object)
    return CameraResult(
        n_genes=m.astype(np.int64),
        correlation=cor,
        statistic=statistic,
        down=down,
        up=up,
        pvalue=pvalue,
        direction=np.asarray(direction, dtype=object),
        fdr=p_adjust_bh(pvalue),
        df_camera=df_camera,
        df_prior=float(np.max(df_prior)),
        s2_prior=float(np.mean(s2_prior)) if np.ndim(s2_prior) else float(s2_prior),
    )


# --------------------------------------------------------------------------------------------
# fry
# --------------------------------------------------------------------------------------------

STANDARDIZE = ("none", "residual.sd", "posterior.sd", "p2")


def standardize_effects(
    effects: np.ndarray,
    *,
    standardize: str = "posterior.sd",
    covariate=None,
    robust: bool = False,
    winsor_tail_p=(0.05, 0.1),
) -> np.ndarray:
    """fry's standardisation of the effects by a robust residual standard deviation per gene:
    the residual variance without the largest squared effect, rescaled by its expectation
    (``Eu2max``, 128-point Gauss-Legendre), then squeezed towards the prior of the ordinary
    residual variances (``"posterior.sd"``), or by its own prior (``"p2"``), or left raw
    (``"residual.sd"``); ``"none"`` returns the effects unchanged."""
    if standardize not in STANDARDIZE:
        raise ValueError(f"standardize={standardize!r} is not one of {list(STANDARDIZE)}")
    if standardize == "none":
        return effects
    dfr = effects.shape[1] - 1
    nodes, wts = _gauss_uniform(128)
    eu2max = float(np.sum((dfr + 1) * nodes**dfr * sst.chi2.ppf(nodes, 1) * wts))
    e2 = effects * effects
    s2_robust = (e2.sum(axis=1) - e2.max(axis=1)) / (dfr + 1 - eu2max)
    if standardize == "p2":
        s2_robust, _, _ = squeeze_var(
            s2_robust, 0.92 * dfr, covariate=covariate, robust=robust, winsor_tail_p=winsor_tail_p
        )
    elif standardize == "posterior.sd":
        s2 = e2[:, 1:].mean(axis=1)
        if robust:
            fit = fit_f_dist_robustly(s2, dfr, covariate=covariate, winsor_tail_p=winsor_tail_p)
            scale, df_prior = fit["scale"], fit["df2_shrunk"]
        else:
            scale, df_prior = fit_f_dist(s2, dfr, covariate=covariate)
        s2_robust = _squeeze(s2_robust, np.float64(0.92 * dfr), scale, df_prior)
    return effects / np.sqrt(s2_robust)[:, None]


@dataclass
class FryResult:
    """Per-set results of :func:`fry`, in the order of the membership rows (unsorted)."""

    n_genes: np.ndarray
    statistic: np.ndarray  # t of the mean contrast effect against the mean residual effects
    pvalue: np.ndarray
    direction: np.ndarray
    fdr: np.ndarray
    pvalue_mixed: np.ndarray
    fdr_mixed: np.ndarray
    df: int


def fry_effects(effects: np.ndarray, membership) -> FryResult:
    """limma's ``.fryEffects`` for every set of ``membership`` (sets x genes; the stored values
    weight each gene's effects, 1 for plain sets, as R's data-frame index with weights)."""
    G, d_all = effects.shape
    dfr = d_all - 1
    M = sparse.csr_matrix(membership, dtype=np.float64)
    M.eliminate_zeros()
    M.sort_indices()
    m = np.diff(M.indptr)
    if np.any(m < 1):
        raise ValueError("every gene set needs at least one gene among the genes tested")
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = (M @ effects) / m[:, None]
        tstat = mean[:, 0] / np.sqrt(np.mean(mean[:, 1:] ** 2, axis=1))
    mixed = np.empty(m.size)
    for i in range(m.size):  # the set's singular values; vectorised within each set
        rows = slice(M.indptr[i], M.indptr[i + 1])
        Es = effects[M.indices[rows]] * M.data[rows][:, None]
        if m[i] < 2:
            mixed[i] = np.nan
            continue
        A = np.linalg.svd(Es, compute_uv=False) ** 2
        d1 = A.size
        d = d1 - 1
        beta_mean = 1 / d1
        beta_var = d / d1 / d1 / (d1 / 2 + 1)
        span = A[0] - A[-1]
        fobs = (np.sum(Es[:, 0] ** 2) - A[-1]) / span
        frb_mean = (np.sum(A) * beta_mean - A[-1]) / span
        # A' COV A with COV = beta_var on the diagonal, -beta_var / d off it
        frb_var = (beta_var * np.sum(A * A) - beta_var / d * (np.sum(A) ** 2 - np.sum(A * A))) / span**2
        apb = frb_mean * (1 - frb_mean) / frb_var - 1
        alpha = apb * frb_mean
        beta = apb - alpha
        mixed[i] = sst.beta.sf(fobs, alpha, beta)
    pvalue = 2 * sst.t.cdf(-np.abs(tstat), dfr)
    one = m == 1
    mixed[one] = pvalue[one]
    return FryResult(
        n_genes=m.astype(np.int64),
        statistic=tstat,
        pvalue=pvalue,
        direction=np.where(tstat < 0, "Down", "Up").astype(object),
        fdr=p_adjust_bh(pvalue),
        pvalue_mixed=mixed,
        fdr_mixed=p_adjust_bh(mixed),
        df=int(dfr),
    )


def fry(
    E,
    X: np.ndarray,
    contrast,
    membership,
    *,
    weights=None,
    block=None,
    correlation: float | None = None,
    standardize: str = "posterior.sd",
    trend_var: bool = False,
    robust: bool = False,
    winsor_tail_p=(0.05, 0.1),
    block_genes: int | None = None,
) -> FryResult:
    """Self-contained rotation gene set test with infinitely many rotations (limma 3.68's ``fry``).

    Arguments as :func:`camera`; ``block``/``correlation`` model repeated measures (integer block
    codes and the intra-block correlation); ``trend_var`` uses the mean expression as covariate of
    the prior variance, ``robust`` a robust prior."""
    n, G = E.shape
    if block is not None and correlation is None:
        raise ValueError("the intra-block correlation must be given with block")
    W = None if weights is None else np.asarray(weights, dtype=np.float64)
    if W is not None and np.any(W <= 0):
        raise ValueError("weights must be positive (fry, as limma's, needs every weight > 0)")
    covariate = None
    if trend_var:
        covariate = np.empty(G)
        for sl in gene_blocks(G, n):
            covariate[sl] = read_block(E, sl).mean(axis=0)
    eff = lm_effects(E, X, contrast, weights=W, block=block, correlation=correlation, block_genes=block_genes)
    eff = standardize_effects(
        eff, standardize=standardize, covariate=covariate, robust=robust, winsor_tail_p=winsor_tail_p
    )
    return fry_effects(eff, membership)


def order_sets(pvalue, n_genes, tiebreak=None) -> np.ndarray:
    """R's ``order(pvalue, -n_genes, tiebreak)`` (fry) or ``order(pvalue)`` (camera, without
    ``n_genes``): stable, missing values last."""
    keys = [np.nan_to_num(np.asarray(pvalue, dtype=np.float64), nan=np.inf)]
    if n_genes is not None:
        keys.append(-np.asarray(n_genes, dtype=np.float64))
    if tiebreak is not None:
        keys.append(np.nan_to_num(np.asarray(tiebreak, dtype=np.float64), nan=np.inf))
    return np.lexsort(keys[::-1])
