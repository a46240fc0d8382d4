from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, SHARED, roundtrip
from helpers import assert_adata_equal
from scipy import sparse

import bulkpy as bk
from bulkpy._stats import aggregate as agg

KANG = "kang2018_muscat_example_sce.h5ad"
CLUSTERS = ["B cells", "CD14+ Monocytes", "CD4 T cells", "CD8 T cells", "FCGR3A+ Monocytes"]


def _kang_path():
    full = SHARED / "kang2018_pbmc_subset" / KANG
    if full.exists():
        return full
    local = FIXTURES / "kang2018_pbmc_subset" / KANG
    if local.exists():
        return local
    pytest.skip(f"{KANG} is neither in {SHARED} nor in {FIXTURES}")


@pytest.fixture(scope="session")
def _kang():
    return ad.read_h5ad(_kang_path())


@pytest.fixture
def kang(_kang):
    return _kang.copy()


def _reference_sums(adata, keys):
    """Direct pandas group-by sum of the dense counts (the oracle)."""
    df = pd.DataFrame(adata.X.toarray().astype(np.float64), columns=adata.var_names)
    for k in keys:
        df[k] = adata.obs[k].to_numpy()
    return df.groupby(keys, observed=True, sort=True).sum()


def _toy(n=240, genes=30, seed=0):
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame(
        {
            "donor": np.repeat(["d1", "d2", "d3", "d4"], n // 4),
            "condition": np.repeat(["ctrl", "stim"], n // 2),
            "age": np.repeat([31, 45, 52, 60], n // 4),
            "cell_type": np.tile(["B", "T", "T"], n // 3),
            "pct_mito": rng.uniform(0, 5, n),
        },
        index=[f"c{i}" for i in range(n)],
    )
    X = sparse.csr_matrix(rng.poisson(0.8, (n, genes)).astype(np.float32))
    return ad.AnnData(X, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(genes)]))


# ---- real data ------------------------------------------------------------------------------------


def test_kang_per_sample_matches_groupby(kang):
    pb = bk.pp.pseudobulk(kang, sample_key="sample_id")
    ref = _reference_sums(kang, ["sample_id"])
    assert pb.obs_names.tolist() == ["ctrl101", "ctrl107", "stim101", "stim107"]
    assert pb.shape == (4, kang.n_vars)
    np.testing.assert_array_equal(pb.layers["counts"], ref.loc[pb.obs_names].to_numpy())
    np.testing.assert_array_equal(pb.X, pb.layers["counts"])
    assert pb.X is not pb.layers["counts"]
    assert pb.X.dtype == np.float64 and isinstance(pb.X, np.ndarray)
    # group_id is constant within each sample and carried; cluster_id varies and is dropped
    assert pb.obs["group_id"].tolist() == ["ctrl", "ctrl", "stim", "stim"]
    assert isinstance(pb.obs["group_id"].dtype, pd.CategoricalDtype)
    assert "cluster_id" not in pb.obs.columns
    assert pb.uns["pseudobulk"]["dropped_obs_columns"].tolist() == ["cluster_id"]
    assert pb.obs["n_cells"].tolist() == [454, 296, 500, 306]
    assert pb.obs["n_cells"].sum() == kang.n_obs
    np.testing.assert_array_equal(pb.obs["total_counts"], ref.loc[pb.obs_names].sum(axis=1))
    pd.testing.assert_frame_equal(pb.var, kang.var)
    assert list(pb.obs.columns) == ["sample_id", "group_id", "n_cells", "total_counts"]


def test_kang_sample_by_cluster(kang):
    pb = bk.pp.pseudobulk(kang, sample_key="sample_id", groups_key="cluster_id", min_cells=0)
    ref = _reference_sums(kang, ["sample_id", "cluster_id"])
    assert pb.n_obs == 20
    assert pb.obs_names[:2].tolist() == ["ctrl101_B cells", "ctrl101_CD14+ Monocytes"]
    expected_rows = [ref.loc[(s, c)].to_numpy() for s, c in zip(pb.obs["sample_id"], pb.obs["cluster_id"], strict=True)]
    np.testing.assert_array_equal(pb.layers["counts"], np.vstack(expected_rows))
    sizes = kang.obs.groupby(["sample_id", "cluster_id"], observed=True).size()
    assert pb.obs["n_cells"].tolist() == [sizes[(s, c)] for s, c in zip(pb.obs["sample_id"], pb.obs["cluster_id"], strict=True)]
    assert pb.obs["cluster_id"].cat.categories.tolist() == CLUSTERS
    assert (pb.obs["group_id"].astype(str) == pb.obs["sample_id"].astype(str).str[:4]).all()
    assert pb.uns["pseudobulk"]["dropped_obs_columns"].tolist() == []
    assert len(pb.uns["pseudobulk"]["dropped_units"]) == 0


def test_kang_min_cells_and_min_counts(kang, caplog):
    with caplog.at_level(logging.INFO, logger="bulkpy"):
        pb = bk.pp.pseudobulk(kang, sample_key="sample_id", groups_key="cluster_id", min_cells=50)
    gone = ["ctrl107_B cells", "ctrl107_CD8 T cells", "ctrl107_FCGR3A+ Monocytes", "stim107_CD8 T cells", "stim107_FCGR3A+ Monocytes"]
    assert pb.n_obs == 15
    assert (pb.obs["n_cells"] >= 50).all()
    dropped = pb.uns["pseudobulk"]["dropped_units"]
    assert dropped.index.tolist() == gone
    assert dropped["n_cells"].tolist() == [44, 20, 32, 15, 37]
    assert set(dropped["reason"]) == {"min_cells"}
    assert not set(gone) & set(pb.obs_names)
    assert "dropped 5 of 20 units" in caplog.text
    params = pb.uns["pseudobulk"]["params"]
    assert params["min_cells"] == 50 and params["n_units_observed"] == 20 and params["n_units_kept"] == 15
    # kept units are unchanged by the filter
    full = bk.pp.pseudobulk(kang, sample_key="sample_id", groups_key="cluster_id", min_cells=0)
    np.testing.assert_array_equal(pb.layers["counts"], full[pb.obs_names].layers["counts"])
    # min_counts: the units with fewer than 60,000 counts
    pc = bk.pp.pseudobulk(kang, sample_key="sample_id", groups_key="cluster_id", min_cells=0, min_counts=60_000)
    low = full.obs_names[full.obs["total_counts"] < 60_000].tolist()
    assert low == ["ctrl101_CD8 T cells", "ctrl107_B cells", "ctrl107_CD8 T cells", "stim107_B cells", "stim107_CD8 T cells"]
    assert pc.uns["pseudobulk"]["dropped_units"].index.tolist() == low
    both = bk.pp.pseudobulk(kang, sample_key="sample_id", groups_key="cluster_id", min_cells=50, min_counts=60_000)
    reasons = both.uns["pseudobulk"]["dropped_units"]["reason"]
    assert reasons["ctrl107_CD8 T cells"] == "min_cells,min_counts"
    assert reasons["stim107_B cells"] == "min_counts"  # 54 cells but 57,823 counts
    assert reasons["ctrl107_FCGR3A+ Monocytes"] == "min_cells"
    assert len(reasons) == 7


def test_kang_sparse_csc_dense_identical(kang):
    a = bk.pp.pseudobulk(kang, sample_key="sample_id", groups_key="cluster_id")
    for X in (kang.X.tocsc(), kang.X.toarray(), kang.X.astype(np.int32), sparse.csr_array(kang.X)):
        other = kang.copy()
        other.X = X
        b = bk.pp.pseudobulk(other, sample_key="sample_id", groups_key="cluster_id")
        np.testing.assert_array_equal(a.X, b.X)
        pd.testing.assert_frame_equal(a.obs, b.obs)


def test_kang_roundtrip(kang, tmp_h5ad):
    pb = bk.pp.pseudobulk(kang, sample_key="sample_id", groups_key="cluster_id", min_cells=50)
    back = roundtrip(pb, tmp_h5ad)
    np.testing.assert_array_equal(back.X, pb.X)
    np.testing.assert_array_equal(back.layers["counts"], pb.layers["counts"])
    pd.testing.assert_frame_equal(back.obs, pb.obs)
    assert back.obs_names.tolist() == pb.obs_names.tolist()
    u, v = back.uns["pseudobulk"], pb.uns["pseudobulk"]
    assert u["params"]["groups_key"] == "cluster_id" and u["params"]["layer"] == "None"
    assert u["params"]["min_counts"] == "None"
    pd.testing.assert_frame_equal(u["dropped_units"], v["dropped_units"], check_dtype=False)
    assert list(u["dropped_obs_columns"]) == []


def test_kang_input_untouched(kang):
    before = kang.copy()
    bk.pp.pseudobulk(kang, sample_key="sample_id", groups_key="cluster_id")
    assert_adata_equal(kang, before)
    assert kang.uns.keys() == before.uns.keys() and "pseudobulk" not in kang.uns


def test_kang_scanpy_and_bulkpy_downstream(kang):
    sc = pytest.importorskip("scanpy")
    pb = bk.pp.pseudobulk(kang, sample_key="sample_id", groups_key="cluster_id")
    bk.pp.size_factors(pb, method="poscounts")
    assert np.isfinite(pb.obs["size_factors"]).all() and (pb.obs["size_factors"] > 0).all()
    sc.pp.normalize_total(pb, target_sum=1e6)
    sc.pp.log1p(pb)
    sc.pp.pca(pb, n_comps=3)
    assert pb.obsm["X_pca"].shape == (pb.n_obs, 3)
    # cell type, not sample, drives the first component: B cells and monocytes apart
    pc1 = pd.Series(pb.obsm["X_pca"][:, 0], index=pb.obs_names).groupby(pb.obs["cluster_id"], observed=True).mean()
    assert abs(pc1["B cells"] - pc1["CD14+ Monocytes"]) > 5
    np.testing.assert_array_equal(pb.layers["counts"].sum(axis=1), pb.obs["total_counts"])


def test_layer_counts_with_lognormalised_x(kang):
    raw = bk.pp.pseudobulk(kang, sample_key="sample_id")
    kang.layers["counts"] = kang.X.copy()
    X = kang.X.multiply(1e4 / kang.X.sum(axis=1)).tocsr()
    X.data = np.log1p(X.data)
    kang.X = X
    with pytest.raises(ValueError, match=r"adata.X does not hold raw counts.*non-integer.*log-normalised.*layer='counts'"):
        bk.pp.pseudobulk(kang, sample_key="sample_id")
    pb = bk.pp.pseudobulk(kang, sample_key="sample_id", layer="counts")
    np.testing.assert_array_equal(pb.X, raw.X)
    assert pb.uns["pseudobulk"]["params"]["layer"] == "counts"


def test_mode_mean(kang):
    pb = bk.pp.pseudobulk(kang, sample_key="sample_id", groups_key="cluster_id", mode="mean")
    ref = _reference_sums(kang, ["sample_id", "cluster_id"])
    sizes = kang.obs.groupby(["sample_id", "cluster_id"], observed=True).size()
    means = (ref.T / sizes).T
    keys = list(zip(pb.obs["sample_id"], pb.obs["cluster_id"], strict=True))
    np.testing.assert_allclose(pb.X, means.loc[keys].to_numpy(), rtol=1e-14)
    np.testing.assert_array_equal(pb.layers["counts"], ref.loc[keys].to_numpy())


def test_unused_categories_and_order(kang):
    base = bk.pp.pseudobulk(kang, sample_key="sample_id", groups_key="cluster_id")
    obs = kang.obs
    obs["sample_id"] = obs["sample_id"].cat.add_categories(["zz_unused"]).cat.reorder_categories(
        ["stim107", "zz_unused", "ctrl101", "ctrl107", "stim101"]
    )
    obs["cluster_id"] = obs["cluster_id"].cat.add_categories(["Megakaryocytes"])
    obs["group_id"] = obs["group_id"].cat.add_categories(["other"])
    pb = bk.pp.pseudobulk(kang, sample_key="sample_id", groups_key="cluster_id")
    # category order is respected, unused categories make no unit and are removed
    assert pb.obs["sample_id"].cat.categories.tolist() == ["stim107", "ctrl101", "ctrl107", "stim101"]
    assert pb.obs_names[0] == "stim107_B cells"
    assert "Megakaryocytes" not in pb.obs["cluster_id"].cat.categories
    assert pb.obs["group_id"].cat.categories.tolist() == ["ctrl", "stim"]
    np.testing.assert_array_equal(pb[base.obs_names].X, base.X)


def test_view_input(kang):
    view = kang[kang.obs["cluster_id"] != "B cells"]
    pb = bk.pp.pseudobulk(view, sample_key="sample_id", groups_key="cluster_id")
    assert view.is_view  # not actualised by the call
    ref = bk.pp.pseudobulk(view.copy(), sample_key="sample_id", groups_key="cluster_id")
    np.testing.assert_array_equal(pb.X, ref.X)
    pd.testing.assert_frame_equal(pb.obs, ref.obs)
    assert pb.obs["cluster_id"].cat.categories.tolist() == CLUSTERS[1:]


# ---- synthetic data: obs columns and edge cases ---------------------------------------------------


def test_obs_columns_carried_with_dtypes():
    cells = _toy()
    cells.obs["batch"] = np.where(cells.obs["donor"].isin(["d1", "d3"]), np.nan, 1.0)  # NaN constant per donor
    cells.obs["flag"] = cells.obs["donor"] == "d2"
    pb = bk.pp.pseudobulk(cells, sample_key="donor", min_cells=0)
    assert list(pb.obs.columns) == ["donor", "condition", "age", "batch", "flag", "n_cells", "total_counts"]
    assert pb.obs["age"].dtype == np.int64 and pb.obs["age"].tolist() == [31, 45, 52, 60]
    assert pb.obs["flag"].dtype == bool and pb.obs["flag"].tolist() == [False, True, False, False]
    assert pb.obs["batch"].isna().tolist() == [True, False, True, False]
    assert isinstance(pb.obs["condition"].dtype, pd.CategoricalDtype)
    assert sorted(pb.uns["pseudobulk"]["dropped_obs_columns"]) == ["cell_type", "pct_mito"]
    # with a cell type grouping, the columns constant within donor x cell type are kept
    pg = bk.pp.pseudobulk(cells, sample_key="donor", groups_key="cell_type", min_cells=0)
    assert pg.obs_names.tolist() == ["d1_B", "d1_T", "d2_B", "d2_T", "d3_B", "d3_T", "d4_B", "d4_T"]
    assert "age" in pg.obs.columns and "pct_mito" not in pg.obs.columns


def test_numeric_sample_key_and_existing_qc_columns(caplog):
    cells = _toy()
    cells.obs["donor_no"] = cells.obs["donor"].map({"d1": 10, "d2": 2, "d3": 33, "d4": 4})
    cells.obs["total_counts"] = np.asarray(cells.X.sum(axis=1)).ravel()  # per-cell QC column
    with caplog.at_level(logging.INFO, logger="bulkpy"):
        pb = bk.pp.pseudobulk(cells, sample_key="donor_no", min_cells=0)
    assert pb.obs_names.tolist() == ["2", "4", "10", "33"]  # numeric order
    assert pb.obs["donor_no"].tolist() == [2, 4, 10, 33]
    assert pb.obs["donor"].tolist() == ["d2", "d4", "d1", "d3"]
    np.testing.assert_array_equal(pb.obs["total_counts"], pb.X.sum(axis=1))
    assert "total_counts" in caplog.text and "pct_mito" in caplog.text


def test_float32_sums_are_exact():
    # float32 accumulation would round these sums (> 2**24); bulkpy sums in float64
    n = 40
    X = sparse.csr_matrix(np.full((n, 2), 999_999, dtype=np.float32))
    cells = ad.AnnData(X, obs=pd.DataFrame({"s": ["a"] * n}, index=[f"c{i}" for i in range(n)]))
    pb = bk.pp.pseudobulk(cells, sample_key="s", min_cells=1)
    assert pb.X[0, 0] == 999_999 * n
    assert pb.X[0, 0] != np.float32(X.sum(axis=0, dtype=np.float32)[0, 0])


# ---- engine ----------------------------------------------------------------------------------------


class _NoDenseCSR(sparse.csr_matrix):
    def toarray(self, *a, **k):
        raise AssertionError("the cell matrix was densified")

    todense = toarray


class _NoDenseCSC(sparse.csc_matrix):
    def toarray(self, *a, **k):
        raise AssertionError("the cell matrix was densified")

    todense = toarray


@pytest.mark.parametrize("fmt", ["csr", "csc", "dense", "coo"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
@pytest.mark.parametrize("block_size", [7, agg.BLOCK_SIZE])
def test_engine_formats_dtypes_and_excluded_cells(fmt, dtype, block_size):
    rng = np.random.default_rng(1)
    dense = rng.poisson(0.3, (203, 17)).astype(dtype)
    dense[5] = 0  # an empty row
    codes = rng.integers(-1, 6, 203)
    ref = np.zeros((6, 17))
    for u in range(6):
        ref[u] = dense[codes == u].sum(axis=0, dtype=np.float64)
    x = {"csr": _NoDenseCSR(dense), "csc": _NoDenseCSC(dense), "dense": dense, "coo": sparse.coo_matrix(dense)}[fmt]
    for check in (True, False):
        out = agg.sum_by_unit(x, codes, 6, block_size=block_size, check_counts=check)
        assert out.dtype == np.float64
        np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(agg.count_cells(codes, 6), [(codes == u).sum() for u in range(6)])


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_engine_float32_overflow_falls_back_to_float64(fmt):
    # sums beyond 2**24 are not exact in float32; the engine notices and sums again in float64
    rng = np.random.default_rng(2)
    dense = rng.integers(0, 2_000_000, (60, 5)).astype(np.float32)
    dense[:, 0] = 999_999  # 60 * 999,999 = 59,999,940, odd multiples: rounding in float32
    codes = np.repeat([0, 1], 30)
    ref = np.vstack([dense[:30].sum(0, dtype=np.float64), dense[30:].sum(0, dtype=np.float64)])
    x = sparse.csr_matrix(dense) if fmt == "csr" else sparse.csc_matrix(dense)
    f32 = (agg.indicator(codes, 2, dtype=np.float32) @ sparse.csr_matrix(dense)).toarray()
    assert not np.array_equal(f32, ref)  # the plain float32 product is off
    np.testing.assert_array_equal(agg.sum_by_unit(x, codes, 2), ref)
    np.testing.assert_array_equal(agg.sum_by_unit(x, codes, 2, block_size=11), ref)


def test_engine_check_strided_dense():
    x = np.arange(40, dtype=np.float64).reshape(4, 10)
    agg.check_counts_matrix(x[:, ::2], block_size=3)
    y = x.copy()
    y[3, 4] = 0.5
    with pytest.raises(agg.NotCountsError, match="non-integer"):
        agg.check_counts_matrix(y[:, ::2], block_size=3)
    with pytest.raises(agg.NotCountsError, match="non-integer"):
        agg.check_counts_matrix(y, block_size=3)


def test_engine_count_checks():
    codes = np.zeros(3, dtype=int)
    for values, kind in (([0.0, 1.5, 2.0], "non-integer"), ([0.0, -1.0, 2.0], "negative"), ([0.0, np.nan, 2.0], "non-finite"),
                         ([0.0, np.inf, 2.0], "non-finite")):
        x = sparse.csr_matrix(np.asarray(values, dtype=np.float32)[:, None])
        with pytest.raises(agg.NotCountsError) as e:
            agg.sum_by_unit(x, codes, 1)
        assert e.value.kind == kind
        with pytest.raises(agg.NotCountsError):
            agg.check_counts_matrix(x)
    neg_int = np.array([[1], [-2], [3]], dtype=np.int64)
    with pytest.raises(agg.NotCountsError, match="negative"):
        agg.sum_by_unit(neg_int, codes, 1)
    np.testing.assert_array_equal(agg.sum_by_unit(np.array([[0.5], [1.0], [2.0]]), codes, 1, check_counts=False), [[3.5]])
    with pytest.raises(ValueError, match="one entry per cell"):
        agg.sum_by_unit(neg_int, codes[:2], 1)


def test_engine_constant_within():
    unit = np.array([1, 0, 1, 0, 2, -1])
    order, starts = agg.unit_segments(unit, 3)
    assert order.tolist() == [1, 3, 0, 2, 4]
    np.testing.assert_array_equal(agg.constant_within(np.array([5, 7, 5, 7, 1, 9]), order, starts), [True, True, True])
    np.testing.assert_array_equal(agg.constant_within(np.array([5, 7, 6, 7, 1, 9]), order, starts), [True, False, True])


# ---- bad input ------------------------------------------------------------------------------------


def test_errors_leave_input_untouched(kang):
    before = kang.copy()
    with pytest.raises(KeyError, match=r"sample_key 'donor' is not a column of adata.obs; columns are: \['cluster_id', 'sample_id', 'group_id'\]"):
        bk.pp.pseudobulk(kang, sample_key="donor")
    with pytest.raises(KeyError, match=r"groups_key 'cell_type'.*cluster_id"):
        bk.pp.pseudobulk(kang, sample_key="sample_id", groups_key="cell_type")
    with pytest.raises(ValueError, match="groups_key and sample_key are both 'sample_id'"):
        bk.pp.pseudobulk(kang, sample_key="sample_id", groups_key="sample_id")
    with pytest.raises(KeyError, match="layer 'counts' not found"):
        bk.pp.pseudobulk(kang, sample_key="sample_id", layer="counts")
    with pytest.raises(ValueError, match=r"mode='median' is not supported; choose one of \['sum', 'mean'\]"):
        bk.pp.pseudobulk(kang, sample_key="sample_id", mode="median")
    with pytest.raises(ValueError, match="min_cells must be >= 0"):
        bk.pp.pseudobulk(kang, sample_key="sample_id", min_cells=-1)
    with pytest.raises(TypeError, match="min_cells must be a non-negative number"):
        bk.pp.pseudobulk(kang, sample_key="sample_id", min_cells=True)
    with pytest.raises(TypeError, match="min_counts must be a non-negative number or None"):
        bk.pp.pseudobulk(kang, sample_key="sample_id", min_counts="1000")
    with pytest.raises(TypeError, match="sample_key must be the name of an obs column"):
        bk.pp.pseudobulk(kang, sample_key=["sample_id"])
    with pytest.raises(ValueError, match=r"no pseudobulk is left: all 4 have fewer than min_cells=1000 cells \(largest: 500\)"):
        bk.pp.pseudobulk(kang, sample_key="sample_id", min_cells=1000)
    assert_adata_equal(kang, before)


def test_nan_keys():
    cells = _toy()
    cells.obs.loc[cells.obs_names[:3], "donor"] = np.nan
    with pytest.raises(ValueError, match=r"sample_key obs\['donor'\] is missing \(NaN\) for 3 of 240 cells"):
        bk.pp.pseudobulk(cells, sample_key="donor")
    cells = _toy()
    cells.obs["cell_type"] = pd.Categorical(cells.obs["cell_type"])
    cells.obs.loc[cells.obs_names[-1], "cell_type"] = np.nan
    with pytest.raises(ValueError, match=r"groups_key obs\['cell_type'\] is missing \(NaN\) for 1 of 240"):
        bk.pp.pseudobulk(cells, sample_key="donor", groups_key="cell_type")


def test_not_counts_messages():
    cells = _toy()
    before = cells.copy()
    scaled = cells.copy()
    scaled.X = cells.X.toarray() - 1.0
    with pytest.raises(ValueError, match=r"adata.X does not hold raw counts: it holds negative values.*scaled or centred.*layers: none"):
        bk.pp.pseudobulk(scaled, sample_key="donor")
    cells.layers["lognorm"] = cells.X.copy()
    cells.layers["lognorm"].data = np.log1p(cells.layers["lognorm"].data)
    cells.raw = cells
    with pytest.raises(ValueError, match=r"adata.layers\['lognorm'\] does not hold raw counts.*adata.raw.to_adata\(\)"):
        bk.pp.pseudobulk(cells, sample_key="donor", layer="lognorm")
    with pytest.raises(ValueError, match=r"adata.X does not hold raw counts: it holds non-finite"):
        nan = before.copy()
        nan.X.data[0] = np.nan
        bk.pp.pseudobulk(nan, sample_key="donor")
    strings = before.copy()
    strings.layers["s"] = np.full(strings.shape, "1", dtype=object)
    with pytest.raises(TypeError, match="must be numeric"):
        bk.pp.pseudobulk(strings, sample_key="donor", layer="s")


def test_ambiguous_names():
    cells = _toy()
    cells.obs["a"] = np.repeat(["x_y", "x"], 120)
    cells.obs["b"] = np.tile(["z", "y_z"], 120)
    with pytest.raises(ValueError, match=r"pseudobulk names are not unique: \['x_y_z'\]"):
        bk.pp.pseudobulk(cells, sample_key="a", groups_key="b")
