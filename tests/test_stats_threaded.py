"""Steps that run on blocks of rows in threads give the numbers of the one-block computation.

Issue 18 moved TMM, DESeq2's R-exact row reductions, size factors and normalised counts, and edgeR's QL
leverages and Levenberg start onto blocks of samples or genes in a thread pool when the matrix is
large. Each block's arithmetic is its rows' own, so the results are bit-identical to the
single-block path; these tests force both paths on the same data (thresholds patched) and compare
exactly. TMM is the exception: numpy's ``log2`` can differ in the last bit with an element's
position in memory (SIMD body or scalar edge of a loop), so its blocks are a function of the
matrix's size alone, never of the thread count, and agree with the one-block result to an ulp.
The QL deviance weights evaluate the dispersion's part of the moment tables once per dispersion:
a matrix whose dispersion changes from gene to gene must give each gene the numbers it gets alone.
"""

from __future__ import annotations

import numpy as np
import pytest

from bulkpy._stats import normalization as norm
from bulkpy._stats.deseq2 import deseq as d2
from bulkpy._stats.deseq2 import dispersion as disp
from bulkpy._stats.edger import glm, ql


@pytest.fixture(scope="module")
def counts():
    """Genes × samples NB counts, varying depth (large enough for the threaded paths)."""
    rng = np.random.default_rng(7)
    base = np.exp(rng.normal(2.5, 1.8, 4000))
    depth = rng.uniform(0.5, 1.5, 300)
    mu = base[:, None] * depth[None, :]
    y = rng.negative_binomial(5, 5 / (5 + mu)).astype(np.float64)
    y[:40] = 0.0  # all-zero genes
    return np.ascontiguousarray(y)


def _both(monkeypatch, module, name, small, large, fn):
    monkeypatch.setattr(module, name, small)
    threaded = fn()
    monkeypatch.setattr(module, name, large)
    single = fn()
    return threaded, single


def test_tmm_threaded_agrees_with_one_block_and_ignores_thread_count(monkeypatch, counts):
    import numba

    x = counts.T  # samples × genes (a transposed view, as a user's matrix may be)
    monkeypatch.setattr(norm, "_TMM_BLOCK_SIZE", 50_000)  # 24 blocks of samples
    a, b = _both(monkeypatch, norm, "_TMM_THREADED_SIZE", 1_000, 10**12, lambda: norm.calc_norm_factors(x)[0])
    # measured: up to 4e-16 (one ulp of log2 in a few sums)
    np.testing.assert_allclose(a, b, rtol=2e-15, atol=0)
    assert np.all(np.isfinite(a)) and not np.all(a == 1.0)
    monkeypatch.setattr(norm, "_TMM_THREADED_SIZE", 1_000)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = norm.calc_norm_factors(x)[0]
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(one, a)


@pytest.mark.parametrize("fn", [disp.row_means_r, disp.row_vars_r, disp._r_row_sums])
def test_r_exact_row_reductions_threaded_equal_one_block(monkeypatch, counts, fn):
    a, b = _both(monkeypatch, disp, "_ROWS_THREADED_SIZE", 1_000, 10**12, lambda: fn(counts))
    np.testing.assert_array_equal(a, b)


def test_deseq_size_factors_threaded_equal_one_block(monkeypatch, counts):
    from bulkpy._stats.deseq2.size_factors import deseq2_size_factors

    x = np.ascontiguousarray(counts.T[:, 40:])  # samples × genes, no all-zero genes
    for xn in (x[:, :300], x[:, :299]):  # 123 and 122 genes without zeros: odd and even medians
        a, b = _both(monkeypatch, disp, "_ROWS_THREADED_SIZE", 1_000, 10**12, lambda xn=xn: deseq2_size_factors(xn))
        np.testing.assert_array_equal(a, b)
        assert np.all(np.isfinite(a)) and np.ptp(a) > 0


def test_deseq_normalised_counts_are_the_divisions(counts):
    sf = np.random.default_rng(1).uniform(0.5, 2.0, counts.shape[1])
    np.testing.assert_array_equal(d2._normalised(counts, sf, None), counts / sf)
    nf = np.random.default_rng(2).uniform(0.5, 2.0, counts.shape)
    np.testing.assert_array_equal(d2._normalised(counts, sf, nf), counts / nf)


def _design(n):
    rng = np.random.default_rng(3)
    return np.column_stack([np.ones(n), np.arange(n) % 2, rng.normal(size=n)])


def test_edger_leverages_and_null_start_threaded_equal_one_block(monkeypatch, counts):
    X = _design(counts.shape[1])
    mu = counts + 0.5
    phi = np.random.default_rng(4).uniform(0.01, 1.0, counts.shape[0])
    off = np.log(counts.sum(axis=0) + 1.0)[None, :]
    a, b = _both(monkeypatch, glm, "PARALLEL_MIN_SIZE", 1_000, 10**12, lambda: ql.leverages(mu, X, phi, 1.3))
    np.testing.assert_array_equal(a, b)
    s1, s2 = _both(
        monkeypatch, glm, "PARALLEL_MIN_SIZE", 1_000, 10**12, lambda: glm._levenberg_start(counts, X, off, phi)
    )
    np.testing.assert_array_equal(s1, s2)


def test_ql_adjustment_per_gene_dispersions_match_one_gene_at_a_time(counts):
    """The per-dispersion tables are refreshed whenever the dispersion changes: each gene of a
    matrix with alternating case-1 / case-2 / summed dispersions gets its numbers alone."""
    y = counts[40:100]
    X = _design(y.shape[1])
    mu = y * np.random.default_rng(5).uniform(0.8, 1.2, y.shape) + 0.05
    phi = np.tile([0.2, 1.5, 0.2, 0.2, 4.5, 0.7359], 10)  # repeats and changes, all three cases
    dev, df, s2 = ql.adjusted_deviance(y, mu, X, phi, 1.3)
    for g in range(y.shape[0]):
        d1, f1, _ = ql.adjusted_deviance(y[g : g + 1], mu[g : g + 1], X, phi[g : g + 1], 1.3)
        assert dev[g] == d1[0] and df[g] == f1[0]
    assert np.all(np.isfinite(dev)) and np.all(df > 0)
