"""The gene-block driver (bulkpy._stats._blocks) and the engines that walk blocks through it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from bulkpy._stats import _blocks
from bulkpy._stats.deseq2 import deseq as D
from bulkpy._stats.deseq2.size_factors import deseq2_size_factors


def test_block_rule_covers_every_gene_once():
    for g, n, bg in [(10, 3, None), (10, 3, 3), (1, 5, None), (0, 4, None), (17, 2_000_000, None)]:
        blocks = _blocks.gene_blocks(g, n, block_genes=bg)
        covered = np.concatenate([np.arange(sl.start, sl.stop) for sl in blocks]) if g else np.empty(0)
        np.testing.assert_array_equal(covered, np.arange(g))
        assert len(blocks) == len(list(blocks))
    # the default: about BLOCK_ELEMENTS matrix elements per block, at least one gene
    assert _blocks.gene_blocks(100, 10).size == _blocks.BLOCK_ELEMENTS // 10
    assert _blocks.gene_blocks(5, 10**9).size == 1


@pytest.mark.parametrize("bad", [0, -1, True])
def test_block_genes_must_be_positive(bad):
    with pytest.raises(ValueError, match="block_genes must be a positive integer"):
        _blocks.gene_blocks(10, 3, block_genes=bad)


def _array_types():
    types = [("numpy", lambda a: a), ("csr", sparse.csr_matrix), ("csc", sparse.csc_matrix)]
    try:
        import dask.array as da

        types.append(("dask", lambda a: da.from_array(a, chunks=(a.shape[0], 7))))
    except ImportError:  # dask is optional; the Dask issue adds it to the test extra
        pass
    return types


@pytest.mark.parametrize("name,convert", _array_types(), ids=[t[0] for t in _array_types()])
def test_read_block_any_array_type(name, convert):
    rng = np.random.default_rng(1)
    a = rng.poisson(3, size=(6, 30)).astype(np.float64)
    keep = rng.random(5) > 0.4
    b = _blocks.read_block(convert(a), slice(10, 15), gene_major=True, keep=keep)
    np.testing.assert_array_equal(b, a[:, 10:15].T[keep])
    assert b.flags.c_contiguous and b.dtype == np.float64
    c = _blocks.read_block(convert(a), np.array([3, 1, 29]))
    np.testing.assert_array_equal(c, a[:, [3, 1, 29]])


def test_deseq_same_numbers_whatever_the_blocks_and_array_type(pasilla):
    # genes are independent in every per-gene pass: block size and input type change nothing.
    # Bitwise for blocks of tens of genes or more. Tiny blocks are not bitwise: the moments fit of the
    # means is one BLAS product per block, and BLAS rounds the edge rows of a small product (or a
    # single row, by its matrix-vector path) differently; DESeq2's line search can amplify one ulp
    # there to 1e-5 in a dispersion (seen with one gene per block), so blocks stay large by default.
    y = np.asarray(pasilla.layers["counts"], dtype=np.float64)[:, :1500]
    cond = (pasilla.obs["condition"] == "treated").to_numpy(float)
    X = np.column_stack([np.ones(y.shape[0]), cond])
    sf = deseq2_size_factors(y)
    ref = D.deseq(y, X, size_factors=sf, contrasts=np.array([[0.0], [1.0]]), min_replicates_for_replace=3)
    calls = []
    for convert, bg in [(lambda a: a, 97), (sparse.csc_matrix, 500), (sparse.csr_matrix, 1499)]:
        got = D.deseq(
            convert(y), X, size_factors=sf, contrasts=np.array([[0.0], [1.0]]), min_replicates_for_replace=3,
            block_genes=bg, on_block=calls.append,
        )  # fmt: skip
        for f in ("dispersion", "beta", "beta_se", "cooks", "max_cooks", "contrast_lfc", "contrast_se", "disp_fit"):
            np.testing.assert_array_equal(getattr(got, f), getattr(ref, f), err_msg=f"{f}, block_genes={bg}")
    # progress: one call per block and pass, then one for the refit
    n97 = D.n_blocks(1500, y.shape[0], 97)
    assert calls[: 2 * n97 + 1].count("gene-wise dispersions") == n97
    assert calls[2 * n97] == "refit of replaced outliers"


def test_interrupt_between_blocks_propagates(pasilla):
    y = np.asarray(pasilla.layers["counts"], dtype=np.float64)[:, :300]
    X = np.ones((y.shape[0], 1))

    def stop(stage):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        D.deseq(y, X, size_factors=deseq2_size_factors(y), block_genes=50, on_block=stop)


@pytest.mark.parametrize("chunks", [(7, 3000), (3, 5000)])
def test_large_dask_matrices_are_transposed_through_a_temporary_store(chunks, monkeypatch, tmp_path):
    """A pass over blocks of samples on a large gene-chunked dask matrix first writes a row-major
    copy to a temporary zarr store (deleted afterwards): the same size factors and TMM factors."""
    da = pytest.importorskip("dask.array")
    pytest.importorskip("zarr")
    import dask

    import bulkpy as bk
    from bulkpy._stats import _blocks

    monkeypatch.setattr(_blocks, "TRANSPOSE_BYTES", 0)
    copies = []
    real_copy = _blocks._row_major_copies._copy
    monkeypatch.setattr(_blocks._row_major_copies, "_copy", lambda self, m: copies.append(m.shape) or real_copy(self, m))
    ref = bk.datasets.pasilla()
    x = np.asarray(ref.layers["counts"], dtype=float)
    a = ref.copy()
    a.layers["counts"] = da.from_array(x, chunks=chunks)
    with dask.config.set({"temporary-directory": str(tmp_path), "scheduler": "threads"}):
        for d in (ref, a):
            bk.pp.size_factors(d)
            bk.pp.norm_factors(d)
    for col in ("size_factors", "norm_factors", "lib_size"):
        np.testing.assert_array_equal(a.obs[col].to_numpy(), ref.obs[col].to_numpy())
    assert copies and list(tmp_path.iterdir()) == []
