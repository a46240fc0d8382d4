"""DESeq2's simulation-based prior variance of log dispersions for 1-3 residual degrees of freedom.

When ``m - p <= 3`` DESeq2 (``estimateDispersionsPriorVar``) does not trust the MAD of the log
dispersion residuals. It compares the histogram of the observed residuals with histograms of
simulated ``log(chisq_{m-p}) + N(0, s2) - log(m - p)`` for 200 values of ``s2`` in [0, 8],
smooths the Kullback-Leibler divergences with ``loess(span = 0.2)`` and takes the minimiser on a
fine grid (at least 0.25). The random numbers come from ``set.seed(2)``.

To give the same number as R, this module reproduces R's default random stream: the Mersenne
Twister seeded as ``set.seed`` does (initial scrambling by the linear congruential generator
69069 x + 1), uniforms in (0, 1), normal deviates by inversion (two uniforms per deviate, the
AS 241 quantile function), exponential deviates by Ahrens & Dieter (1972) algorithm SA, gamma
deviates by Ahrens & Dieter (1982) algorithm GD (shape >= 1) or (1974) GS (shape < 1); R's
``hist`` binning; and ``loess``'s default fit (local quadratic, tricube weights on the
``floor(n span)`` nearest points, evaluated on its k-d tree with cells of at most
``floor(n span cell)`` points and cubic Hermite interpolation between the vertices).
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import inner, kernel

_N = 624
_M = 397
_I2_32M1 = 2.328306437080797e-10
_BIG = 134217728.0  # 2^27


def r_seed_state(seed: int) -> np.ndarray:
    """Mersenne-Twister state after R's ``set.seed(seed)``: 624 words (uint32)."""
    s = seed & 0xFFFFFFFF
    for _ in range(50):
        s = (69069 * s + 1) & 0xFFFFFFFF
    words = np.empty(625, dtype=np.uint32)
    for j in range(625):
        s = (69069 * s + 1) & 0xFFFFFFFF
        words[j] = s
    return words[1:].copy()  # words[0] is R's position slot, reset to 624 (regenerate first)


@inner
def _mt_next(mt, pos):
    """One tempered 32-bit output; ``pos`` is a 1-element array holding the index."""
    if pos[0] >= _N:
        for kk in range(_N - _M):
            y = (mt[kk] & np.uint32(0x80000000)) | (mt[kk + 1] & np.uint32(0x7FFFFFFF))
            mag = np.uint32(0x9908B0DF) if (y & np.uint32(1)) else np.uint32(0)
            mt[kk] = mt[kk + _M] ^ (y >> np.uint32(1)) ^ mag
        for kk in range(_N - _M, _N - 1):
            y = (mt[kk] & np.uint32(0x80000000)) | (mt[kk + 1] & np.uint32(0x7FFFFFFF))
            mag = np.uint32(0x9908B0DF) if (y & np.uint32(1)) else np.uint32(0)
            mt[kk] = mt[kk + (_M - _N)] ^ (y >> np.uint32(1)) ^ mag
        y = (mt[_N - 1] & np.uint32(0x80000000)) | (mt[0] & np.uint32(0x7FFFFFFF))
        mag = np.uint32(0x9908B0DF) if (y & np.uint32(1)) else np.uint32(0)
        mt[_N - 1] = mt[_M - 1] ^ (y >> np.uint32(1)) ^ mag
        pos[0] = 0
    y = mt[pos[0]]
    pos[0] += 1
    y ^= y >> np.uint32(11)
    y ^= (y << np.uint32(7)) & np.uint32(0x9D2C5680)
    y ^= (y << np.uint32(15)) & np.uint32(0xEFC60000)
    y ^= y >> np.uint32(18)
    return y


@kernel
def unif_rand(mt, pos):
    x = float(_mt_next(mt, pos)) * 2.3283064365386963e-10
    if x <= 0.0:
        return 0.5 * _I2_32M1
    if 1.0 - x <= 0.0:
        return 1.0 - 0.5 * _I2_32M1
    return x


@inner
def qnorm_std(p):
    """Standard normal quantile, Wichura's AS 241 (PPND16)."""
    q = p - 0.5
    if abs(q) <= 0.425:
        r = 0.180625 - q * q
        num = (
            ((((((r * 2509.0809287301226727 + 33430.575583588128105) * r + 67265.770927008700853) * r
                + 45921.953931549871457) * r + 13731.693765509461125) * r + 1971.5909503065514427) * r
             + 133.14166789178437745) * r + 3.387132872796366608
        )  # fmt: skip
        den = (
            ((((((r * 5226.495278852854561 + 28729.085735721942674) * r + 39307.89580009271061) * r
                + 21213.794301586595867) * r + 5394.1960214247511077) * r + 687.1870074920579083) * r
             + 42.313330701600911252) * r + 1.0
        )  # fmt: skip
        return q * num / den
    r = 1.0 - p if q > 0 else p
    r = math.sqrt(-math.log(r))
    if r <= 5.0:
        r -= 1.6
        num = (
            ((((((r * 7.7454501427834140764e-4 + 0.0227238449892691845833) * r + 0.24178072517745061177) * r
                + 1.27045825245236838258) * r + 3.64784832476320460504) * r + 5.7694972214606914055) * r
             + 4.6303378461565452959) * r + 1.42343711074968357734
        )  # fmt: skip
        den = (
            ((((((r * 1.05075007164441684324e-9 + 5.475938084995344946e-4) * r + 0.0151986665636164571966) * r
                + 0.14810397642748007459) * r + 0.68976733498510000455) * r + 1.6763848301838038494) * r
             + 2.05319162663775882187) * r + 1.0
        )  # fmt: skip
    else:
        r -= 5.0
        num = (
            ((((((r * 2.01033439929228813265e-7 + 2.71155556874348757815e-5) * r + 0.0012426609473880784386) * r
                + 0.026532189526576123093) * r + 0.29656057182850489123) * r + 1.7848265399172913358) * r
             + 5.4637849111641143699) * r + 6.6579046435011037772
        )  # fmt: skip
        den = (
            ((((((r * 2.04426310338993978564e-15 + 1.4215117583164458887e-7) * r + 1.8463183175100546818e-5) * r
                + 7.868691311456132591e-4) * r + 0.0148753612908506148525) * r + 0.13692988092273580531) * r
             + 0.59983220655588793769) * r + 1.0
        )  # fmt: skip
    val = num / den
    return -val if q < 0.0 else val


@kernel
def norm_rand(mt, pos):
    """R's default normal generator (inversion of a 2^27-refined uniform)."""
    u = unif_rand(mt, pos)
    u = float(int(_BIG * u)) + unif_rand(mt, pos)
    return qnorm_std(u / _BIG)


# q[k-1] = sum_{j<=k} log(2)^j / j!  (Ahrens & Dieter 1972, algorithm SA)
_EXP_Q = np.array(
    [
        0.6931471805599453, 0.9333736875190459, 0.9888777961838675, 0.9984959252914960,
        0.9998292811061389, 0.9999833164100727, 0.9999985691438767, 0.9999998906925558,
        0.9999999924734159, 0.9999999995283275, 0.9999999999728814, 0.9999999999985598,
        0.9999999999999289, 0.9999999999999968, 0.9999999999999999, 1.0000000000000000,
    ]
)  # fmt: skip


@kernel
def exp_rand(mt, pos):
    a = 0.0
    u = unif_rand(mt, pos)
    while u <= 0.0 or u >= 1.0:
        u = unif_rand(mt, pos)
    while True:
        u += u
        if u > 1.0:
            break
        a += _EXP_Q[0]
    u -= 1.0
    if u <= _EXP_Q[0]:
        return a + u
    i = 0
    ustar = unif_rand(mt, pos)
    umin = ustar
    while True:
        ustar = unif_rand(mt, pos)
        if umin > ustar:
            umin = ustar
        i += 1
        if not u > _EXP_Q[i]:
            break
    return a + umin * _EXP_Q[0]


@inner
def _gd_q(t, s, s2, q0):
    # log density ratio used by algorithm GD (Ahrens & Dieter 1982, steps 6 and 10)
    v = t / (s + s)
    if abs(v) <= 0.25:
        poly = (
            (((((0.1233795 * v - 0.1367177) * v + 0.1423657) * v - 0.1662921) * v + 0.2000062) * v - 0.250003) * v
            + 0.3333333
        )
        return q0 + 0.5 * t * t * poly * v
    return q0 - s * t + 0.25 * t * t + (s2 + s2) * math.log(1.0 + v)


@inner
def rgamma(mt, pos, a, scale):
    """Gamma(shape a, scale) deviate as R's ``rgamma``."""
    if a < 1.0:  # algorithm GS
        e = 1.0 + 0.36787944117144232159 * a
        while True:
            p = e * unif_rand(mt, pos)
            if p >= 1.0:
                x = -math.log((e - p) / a)
                if exp_rand(mt, pos) >= (1.0 - a) * math.log(x):
                    break
            else:
                x = math.exp(math.log(p) / a)
                if exp_rand(mt, pos) >= x:
                    break
        return scale * x
    # algorithm GD
    s2 = a - 0.5
    s = math.sqrt(s2)
    d = 5.656854 - s * 12.0
    t = norm_rand(mt, pos)
    x = s + 0.5 * t
    ret = x * x
    if t >= 0.0:
        return scale * ret
    u = unif_rand(mt, pos)
    if d * u <= t * t * t:
        return scale * ret
    r = 1.0 / a
    q0 = ((((((2.424e-4 * r + 2.4511e-4) * r - 7.388e-5) * r + 0.00144121) * r + 0.00801191) * r + 0.02083148) * r
          + 0.04166669) * r  # fmt: skip
    if a <= 3.686:
        b = 0.463 + s + 0.178 * s2
        si = 1.235
        c = 0.195 / s - 0.079 + 0.16 * s
    elif a <= 13.022:
        b = 1.654 + 0.0076 * s2
        si = 1.68 / s + 0.275
        c = 0.062 / s + 0.024
    else:
        b = 1.77
        si = 0.75
        c = 0.1515 / s
    if x > 0.0:
        q = _gd_q(t, s, s2, q0)
        if math.log(1.0 - u) <= q:
            return scale * ret
    while True:
        e = exp_rand(mt, pos)
        u = unif_rand(mt, pos)
        u = u + u - 1.0
        t = b - si * e if u < 0.0 else b + si * e
        if t >= -0.71874483771719:
            q = _gd_q(t, s, s2, q0)
            if q > 0.0:
                w = math.expm1(q)
                if c * abs(u) <= w * math.exp(e - 0.5 * t * t):
                    break
    x = s + 0.5 * t
    return scale * x * x


@kernel
def _simulate(mt, pos, df, variances, n):
    """For each variance: n draws of log(chisq_df), then n of N(0, sd) (none when sd = 0)."""
    out = np.empty((variances.shape[0], n))
    ldf = math.log(df)
    for k in range(variances.shape[0]):
        for i in range(n):
            out[k, i] = math.log(rgamma(mt, pos, df / 2.0, 2.0))
        sd = math.sqrt(variances[k])
        if sd > 0.0:
            for i in range(n):
                out[k, i] = out[k, i] + (0.0 + sd * norm_rand(mt, pos))
        else:
            for i in range(n):
                out[k, i] = out[k, i] + 0.0
        for i in range(n):
            out[k, i] = out[k, i] - ldf
    return out


def r_random_stream(seed: int):
    """(mt, pos) state arrays for the kernels after ``set.seed(seed)``."""
    return r_seed_state(seed), np.array([_N], dtype=np.int64)


def r_hist_density(x: np.ndarray, breaks: np.ndarray) -> np.ndarray:
    """``hist(x, breaks, plot=FALSE)$density`` (right-closed bins, lowest included, R's fuzz)."""
    h = np.diff(breaks)
    fuzz = 1e-7 * np.median(h)
    fb = breaks + np.concatenate([[-fuzz], np.full(breaks.size - 1, fuzz)])
    idx = np.searchsorted(fb, x, side="left") - 1
    ok = (idx >= 0) & (idx < h.size)
    counts = np.bincount(idx[ok], minlength=h.size).astype(np.float64)
    return counts / (x.size * h)


def _loess_vertex_fit(x, y, q, nf):
    """loess's local quadratic fit at ``q`` (ehg127): value and slope."""
    d2 = (x - q) ** 2
    rho = np.partition(d2, nf - 1)[nf - 1]
    order = np.argsort(d2, kind="stable")[:nf]
    u = np.sqrt(d2[order] / rho)
    w = np.sqrt((1.0 - u**3) ** 3)
    dx = x[order] - q
    basis = np.column_stack([np.ones(nf), dx, dx * dx]) * w[:, None]
    coef, *_ = np.linalg.lstsq(basis, y[order] * w, rcond=None)
    return coef[0], coef[1]


def r_loess_1d(x, y, new_x, *, span: float = 0.75, cell: float = 0.2) -> np.ndarray:
    """``predict(loess(y ~ x, span = span), new_x)``: degree 2, gaussian, surface 'interpolate'."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.size
    nf = min(n, int(np.floor(n * span)))
    fc = int(np.floor(n * span * cell))
    lo, hi = x.min(), x.max()
    margin = 0.005 * max(hi - lo, 1e-10 * max(abs(lo), abs(hi)) + 1e-30)
    xs = np.sort(x)
    # k-d tree on the sorted points: a cell with more than fc points splits at its median point
    leaves: list[tuple[float, float]] = []
    stack = [(0, n - 1, lo - margin, hi + margin)]
    while stack:
        l_i, u_i, v0, v1 = stack.pop()
        leaf = (u_i - l_i + 1) <= fc
        if not leaf:
            m = (l_i + u_i) // 2  # 0-based version of floor((l + u) / 2) on 1-based indices
            while m + 1 <= u_i and xs[m] == xs[m + 1] and m < u_i:
                m += 1
            xi = xs[m]
            if m >= u_i or xi == v0 or xi == v1:
                leaf = True
        if leaf:
            leaves.append((v0, v1))
        else:
            stack.append((m + 1, u_i, xi, v1))
            stack.append((l_i, m, v0, xi))
    leaves.sort()
    verts = sorted({v for c in leaves for v in c})
    fits = {v: _loess_vertex_fit(x, y, v, nf) for v in verts}
    new_x = np.asarray(new_x, dtype=np.float64)
    lows = np.array([c[0] for c in leaves])
    highs = np.array([c[1] for c in leaves])
    # a point on a split goes to the lower cell (loess descends with z <= xi)
    k = np.clip(np.searchsorted(highs, new_x, side="left"), 0, len(leaves) - 1)
    a, b = lows[k], highs[k]
    g0 = np.array([fits[v][0] for v in lows])[k]
    s0 = np.array([fits[v][1] for v in lows])[k]
    g1 = np.array([fits[v][0] for v in highs])[k]
    s1 = np.array([fits[v][1] for v in highs])[k]
    h = (new_x - a) / (b - a)
    phi0 = (1 - h) ** 2 * (1 + 2 * h)
    phi1 = h**2 * (3 - 2 * h)
    psi0 = h * (1 - h) ** 2
    psi1 = h**2 * (h - 1)
    return phi0 * g0 + phi1 * g1 + (psi0 * s0 + psi1 * s1) * (b - a)


def simulated_prior_variance(residuals: np.ndarray, df: int, *, seed: int = 2) -> float:
    """DESeq2's prior variance of log dispersions for ``df = m - p`` in 1..3 (see module doc)."""
    obs = np.asarray(residuals, dtype=np.float64)
    brks = np.arange(-20, 21) / 2.0
    obs = obs[(obs > brks[0]) & (obs < brks[-1])]
    obs_dens = r_hist_density(obs, brks)
    grid = np.linspace(0.0, 8.0, 200)
    mt, pos = r_random_stream(seed)
    sims = _simulate(mt, pos, float(df), grid, 10000)
    kl = np.empty(grid.size)
    for k in range(grid.size):
        rd = sims[k]
        rd = rd[(rd > brks[0]) & (rd < brks[-1])]
        rand_dens = r_hist_density(rd, brks)
        z = np.concatenate([obs_dens, rand_dens])
        small = z[z > 0].min()
        kl[k] = np.sum(obs_dens * (np.log(obs_dens + small) - np.log(rand_dens + small)))
    fine = np.linspace(0.0, 8.0, 1000)
    fitted = r_loess_1d(grid, kl, fine, span=0.2)
    arg = fine[int(np.argmin(fitted))]
    return float(max(arg, 0.25))
