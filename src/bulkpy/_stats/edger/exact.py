"""edgeR's classic analysis of one factor (edgeR 4.10, Bioconductor 3.23): ``estimateDisp`` without
a design (classic mode) and ``exactTest``.

:func:`estimate_disp_classic` — ``estimateDisp(y)`` on a ``DGEList`` with a ``group``:

1. ``equalizeLibSizes`` with dispersion 0.01: per group, the one-group NB fit of each gene's
   abundance (``mglmOneGroup``), and the counts mapped by quantiles (``q2qnbinom``: the average of
   a normal and a gamma quantile-to-quantile map) from their library size to the geometric mean
   library size ("pseudo-counts");
2. a first common dispersion: R's ``optimize`` (tolerance 1e-6) of the summed conditional
   log-likelihood of the pseudo-counts given each group's total (``condLogLikDerDelta``) over
   ``delta = phi / (1 + phi)`` in ``[1e-4, 100 / 101]`` (genes with a total count of at least 5);
3. pseudo-counts again with that dispersion, and their conditional log-likelihood on the
   dispersion grid ``0.1 * 2^seq(-10, 10, length = 21)``; the common dispersion reported is the
   maximum of the spline through the summed grid values (``maximizeInterpolant``), as in the
   design mode;
4. the trend, prior df and tagwise dispersions as in the design mode (locfit trend in AveLogCPM,
   the prior df from a GLM on ``model.matrix(~ group)``, weighted likelihood empirical Bayes):
   :func:`bulkpy._stats.edger.glm.trend_and_tagwise`.

:func:`exact_test` — ``exactTest(y, pair)`` with ``rejection.region = "doubletail"``: the two
groups' counts are mapped to the geometric mean library size of the pair (``q2qnbinom`` at the
one-group abundance); with the rounded totals ``s1`` and ``s2`` of the two groups the p-value is
twice the NB probability of a split as far from the expected one on the observed side, given the
total (``exactTestDoubleTail``: the sum of ``dnbinom(x, n1 / phi, n1 mu) dnbinom(s - x, n2 / phi,
n2 mu)`` over ``x`` from 0 to ``s1`` or from ``s1`` to ``s``, over the probability of ``s``),
capped at 1; when both totals exceed ``big_count`` (900) the beta approximation
(``exactTestBetaApprox``). The log fold change is that of the one-group fits of each group with
the prior count 0.125 (scaled by library size).

The sums over ``x`` run in compiled code (:func:`bulkpy._stats.edger._kernels.double_tail_kernel`)
in log space, all genes at once.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from .._optimize import fmin
from ..deseq2._kernels import n_chunks, run_chunks
from . import glm as _glm
from . import nb

_GRID_LENGTH = 21
_GRID_RANGE = (-10.0, 10.0)


_TINY = 1e-280  # below this the regularised incomplete gamma is taken in log space


def _log_gamma_tail(a, x, upper: bool):
    """``log`` of the regularised incomplete gamma ``Q(a, x)`` (``upper``) or ``P(a, x)``,
    accurate where it underflows (R's ``pgamma(log.p = TRUE)``): a continued fraction (upper,
    Lentz) or the power series (lower) in log space there."""
    a = np.asarray(a, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore"):
        v = special.gammaincc(a, x) if upper else special.gammainc(a, x)
        w = special.gammainc(a, x) if upper else special.gammaincc(a, x)
        out = np.where(v > 0.5, np.log1p(-w), np.log(v))  # near 1: from the other tail
    far = (v < _TINY) & (x > 0) & np.isfinite(x)
    if far.any():
        aa, xx = a[far], x[far]
        pre = aa * np.log(xx) - xx - special.gammaln(aa)
        if upper:  # Q = pre * 1 / (x + 1 - a - 1 (1 - a) / (x + 3 - a - ...)), modified Lentz
            b = xx + 1.0 - aa
            c = np.full(b.shape, 1e300)
            d = 1.0 / b
            h = d.copy()
            for i in range(1, 300):
                an = -i * (i - aa)
                b = b + 2.0
                d = an * d + b
                d = np.where(np.abs(d) < 1e-300, 1e-300, d)
                c = b + an / c
                c = np.where(np.abs(c) < 1e-300, 1e-300, c)
                d = 1.0 / d
                h = h * d * c
            out[far] = pre + np.log(h)
        else:  # P = pre / a * (1 + x / (a + 1) + x^2 / ((a + 1)(a + 2)) + ...)
            term = np.ones(aa.shape)
            tot = np.ones(aa.shape)
            for i in range(1, 300):
                term = term * xx / (aa + i)
                tot = tot + term
            out[far] = pre - np.log(aa) + np.log(tot)
    return out


def _gamma_quantile(a, logp, upper: bool):
    """R's ``qgamma(logp, a, log.p = TRUE, lower.tail = !upper)`` with scale 1: scipy's inverse
    where ``exp(logp)`` is representable, Newton steps on the log tail probability beyond."""
    a = np.asarray(a, dtype=np.float64)
    logp = np.asarray(logp, dtype=np.float64)
    with np.errstate(under="ignore"):
        e = np.exp(logp)
    with np.errstate(under="ignore"):
        other = -np.expm1(logp)  # the other tail's probability, exact when e is near 1
    if upper:
        q = np.where(e > 0.5, special.gammaincinv(a, other), special.gammainccinv(a, e))
    else:
        q = np.where(e > 0.5, special.gammainccinv(a, other), special.gammaincinv(a, e))
    far = (e < _TINY) & np.isfinite(logp)
    if far.any():
        aa, lp = a[far], logp[far]
        if upper:  # start from log Q ~ -q + (a - 1) log q - lgamma(a)
            t = np.maximum(-lp, 1.0)
            for _ in range(5):
                t = np.maximum(-lp + (aa - 1) * np.log(t) - special.gammaln(aa), 1e-300)
        else:  # log P ~ a log q - lgamma(a + 1)
            t = np.exp((lp + special.gammaln(aa + 1)) / aa)
        for _ in range(50):  # Newton on log tail(t) = logp
            lt = _log_gamma_tail(aa, t, upper)
            dens = np.exp((aa - 1) * np.log(t) - t - special.gammaln(aa) - lt)  # d log tail / dt (abs)
            step = (lt - lp) / (-dens if upper else dens)
            t_new = np.maximum(t - step, t / 10)
            if np.all(np.abs(t_new - t) <= 1e-14 * t):
                t = t_new
                break
            t = t_new
        q[far] = t
    return q


def q2qnbinom(x, input_mean, output_mean, dispersion):
    """edgeR's ``q2qnbinom``: quantiles of NB(``input_mean``, ``dispersion``) mapped to
    NB(``output_mean``, ``dispersion``) by averaging the normal and the gamma approximations.
    ``dispersion`` broadcasts against ``x`` (per gene: a column)."""
    x = np.asarray(x, dtype=np.float64)
    im = np.array(np.broadcast_to(input_mean, x.shape), dtype=np.float64)
    om = np.array(np.broadcast_to(output_mean, x.shape), dtype=np.float64)
    phi = np.broadcast_to(np.asarray(dispersion, dtype=np.float64), x.shape)
    zero = (im < 1e-14) | (om < 1e-14)
    im[zero] += 0.25
    om[zero] += 0.25
    ri = 1 + phi * im
    vi = im * ri
    ro = 1 + phi * om
    vo = om * ro
    upper = x >= im
    sgn = np.where(upper, -1.0, 1.0)  # the normal deviate of a lower-tail probability
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        p1 = special.log_ndtr(sgn * (x - im) / np.sqrt(vi))
        a_in = im / ri
        a_out = om / ro
        p2 = np.empty(x.shape)
        q2 = np.empty(x.shape)
        lo = ~upper
        p2[upper] = _log_gamma_tail(a_in[upper], x[upper] / ri[upper], True)
        p2[lo] = _log_gamma_tail(a_in[lo], x[lo] / ri[lo], False)
        q1 = om + sgn * np.sqrt(vo) * special.ndtri_exp(p1)
        q2[upper] = ro[upper] * _gamma_quantile(a_out[upper], p2[upper], True)
        q2[lo] = ro[lo] * _gamma_quantile(a_out[lo], p2[lo], False)
    return (q1 + q2) / 2


def equalize_lib_sizes(y, codes, n_groups: int, dispersion, lib_size):
    """edgeR's ``equalizeLibSizes``: genes × samples pseudo-counts at the geometric mean library
    size (negative values set to 0), and that library size. ``codes``: group of each sample."""
    y = np.asarray(y, dtype=np.float64)
    lib = np.asarray(lib_size, dtype=np.float64)
    common = float(np.exp(np.mean(np.log(lib))))
    disp = np.broadcast_to(np.asarray(dispersion, dtype=np.float64), (y.shape[0],))
    input_mean = np.zeros(y.shape)
    output_mean = np.zeros(y.shape)
    for k in range(n_groups):
        j = codes == k
        if not j.any():
            continue
        lam = np.exp(_glm.fit_one_group(np.ascontiguousarray(y[:, j]), np.log(lib[j]), disp))
        input_mean[:, j] = lam[:, None] * lib[j][None, :]
        output_mean[:, j] = lam[:, None] * common
    pseudo = q2qnbinom(y, input_mean, output_mean, disp[:, None])
    return np.maximum(pseudo, 0.0), common


def _cond_log_lik(y, codes, n_groups: int, r):
    """Sum over groups of edgeR's ``condLogLikDerSize(y, r, der = 0)`` per gene (rows of ``y``);
    ``r`` = 1 / dispersion, a number or one per gene."""
    r = np.asarray(r, dtype=np.float64)
    rr = r[:, None] if r.ndim == 1 else r
    out = np.zeros(y.shape[0])
    for k in range(n_groups):
        j = codes == k
        n = int(j.sum())
        if n == 0:
            continue
        yk = y[:, j]
        m = yk.mean(axis=1)
        out += (
            special.gammaln(yk + rr).sum(axis=1)
            + special.gammaln(n * r)
            - special.gammaln(n * (m + r))
            - n * special.gammaln(r)
        )
    return out


def estimate_disp_classic(
    counts,
    group_codes,
    lib_size,
    *,
    min_row_sum: float = 5,
    robust: bool = False,
    winsor_tail_p=(0.05, 0.1),
    tol: float = 1e-6,
) -> _glm.Dispersions:
    """edgeR 4.10's ``estimateDisp`` in classic mode (a ``DGEList`` with groups, no design); see
    the module docstring. ``counts`` samples × genes, ``group_codes`` the group (0, 1, ...) of
    each sample, ``lib_size`` the effective library sizes (``lib.size * norm.factors``)."""
    y = np.ascontiguousarray(np.asarray(counts, dtype=np.float64).T)
    codes = np.asarray(group_codes, dtype=np.intp)
    G, n = y.shape
    k = int(codes.max()) + 1
    sizes = np.bincount(codes, minlength=k)
    if np.all(sizes <= 1):
        raise ValueError(
            "no group has more than one sample: there is no replication to estimate the dispersion"
        )
    X = (codes[:, None] == np.arange(k)[None, :]).astype(np.float64)
    X[:, 0] = 1.0  # model.matrix(~ group)
    lib = np.asarray(lib_size, dtype=np.float64)
    sel = y.sum(axis=1) >= min_row_sum
    if not sel.any():
        raise ValueError(
            f"no gene has a total count of at least {min_row_sum}; the dispersion can not be estimated"
        )
    pseudo, _ = equalize_lib_sizes(y, codes, k, 0.01, lib)
    ps = pseudo[sel]

    def minus_loglik(delta):
        return -float(np.sum(_cond_log_lik(ps, codes, k, 1.0 / delta - 1.0)))

    delta = fmin(minus_loglik, 1e-4, 100 / 101, tol=tol)
    pseudo, _ = equalize_lib_sizes(y, codes, k, delta / (1 - delta), lib)
    ps = pseudo[sel]
    pts = np.linspace(_GRID_RANGE[0], _GRID_RANGE[1], _GRID_LENGTH)
    disp_grid = 0.1 * 2.0**pts
    l0 = np.column_stack([_cond_log_lik(ps, codes, k, np.full(ps.shape[0], 1.0 / d)) for d in disp_grid])
    # the common dispersion is the maximum of the spline through the summed grid likelihoods
    common = 0.1 * 2.0 ** nb.maximize_interpolant(pts, l0.sum(axis=0)[None, :])[0]
    off = _glm.offsets(np.log(lib), G, n)
    return _glm.trend_and_tagwise(
        y, X, off, sel, l0, pts, float(common), np.log(lib),
        prior_df=None, robust=robust, winsor_tail_p=winsor_tail_p, span=None, legacy_span=False,
        squeeze_legacy=None,
    )  # fmt: skip


def _beta_approx(y1, y2, n1: int, n2: int, disp):
    """edgeR's ``exactTestBetaApprox`` on the group totals ``y1``, ``y2`` (not rounded)."""
    y = y1 + y2
    mu = y / (n1 + n2)
    p = np.ones(y.shape)
    ok = y > 0
    a1 = n1 * mu / (1 + disp * mu)
    a2 = n2 / n1 * a1
    med = np.zeros(y.shape)
    med[ok] = special.betaincinv(a1[ok], a2[ok], 0.5)
    with np.errstate(divide="ignore", invalid="ignore"):
        left = ((y1 + 0.5) / y < med) & ok
        right = ((y1 - 0.5) / y > med) & ok
    p[left] = 2 * special.betainc(a1[left], a2[left], (y1[left] + 0.5) / y[left])
    p[right] = 2 * special.betaincc(a1[right], a2[right], (y1[right] - 0.5) / y[right])
    return p


def exact_test_double_tail(y1, y2, dispersion, *, big_count: float = 900) -> np.ndarray:
    """edgeR's ``exactTestDoubleTail`` on genes × samples pseudo-counts of two groups (positive
    dispersions, one per gene)."""
    from ._kernels import double_tail_kernel

    y1 = np.asarray(y1, dtype=np.float64)
    y2 = np.asarray(y2, dtype=np.float64)
    n1, n2 = y1.shape[1], y2.shape[1]
    disp = np.ascontiguousarray(np.broadcast_to(np.asarray(dispersion, dtype=np.float64), (y1.shape[0],)))
    if np.any(disp <= 0):
        raise ValueError("the exact test needs positive dispersions")
    t1 = y1.sum(axis=1)
    t2 = y2.sum(axis=1)
    s1 = np.round(t1)
    s2 = np.round(t2)
    p = np.ones(y1.shape[0])
    big = (s1 > big_count) & (s2 > big_count)
    if big.any():
        p[big] = _beta_approx(t1[big], t2[big], n1, n2, disp[big])
    use = ~big
    run_chunks(
        lambda lo, hi: double_tail_kernel(s1[lo:hi], s2[lo:hi], float(n1), float(n2), disp[lo:hi], use[lo:hi], p[lo:hi]),
        p.size, n_chunks(p.size),
    )  # fmt: skip
    return np.minimum(p, 1.0)


def exact_test(counts, group_codes, pair: tuple[int, int], lib_size, dispersion, ave_log_cpm, *,
               big_count: float = 900, prior_count: float = 0.125) -> _glm.DETable:  # fmt: skip
    """edgeR's ``exactTest(y, pair = c(first, second))``: the second group against the first
    (``logFC`` = second - first). ``counts`` samples × genes, ``group_codes`` per sample,
    ``lib_size`` the effective library sizes, ``dispersion`` per gene (the tagwise ones)."""
    from ..multitest import p_adjust_bh

    y = np.asarray(counts, dtype=np.float64).T
    codes = np.asarray(group_codes)
    G = y.shape[0]
    disp = np.broadcast_to(np.asarray(dispersion, dtype=np.float64), (G,))
    j = (codes == pair[0]) | (codes == pair[1])
    y, codes = y[:, j], codes[j]
    lib = np.asarray(lib_size, dtype=np.float64)[j]
    off = np.log(lib)
    lib_average = float(np.exp(np.mean(off)))
    prior = prior_count * lib / lib.mean()
    off_aug = np.log(lib + 2 * prior)
    j1 = codes == pair[0]
    j2 = codes == pair[1]
    ab = [
        _glm.fit_one_group(np.ascontiguousarray(y[:, jj] + prior[jj][None, :]), off_aug[jj], disp)
        for jj in (j1, j2)
    ]
    logfc = (ab[1] - ab[0]) / np.log(2.0)
    e = np.exp(_glm.fit_one_group(np.ascontiguousarray(y), off, disp))
    pseudo = [q2qnbinom(y[:, jj], e[:, None] * lib[jj][None, :], (e * lib_average)[:, None], disp[:, None])
              for jj in (j1, j2)]  # fmt: skip
    p = exact_test_double_tail(pseudo[0], pseudo[1], disp, big_count=big_count)
    return _glm.DETable(logfc, np.asarray(ave_log_cpm, dtype=np.float64), logfc, p, p_adjust_bh(p))
