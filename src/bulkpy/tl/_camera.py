"""limma's gene set tests on a linear model: ``bk.tl.camera`` (competitive) and ``bk.tl.fry``
(self-contained), limma 3.68.5 (Bioconductor 3.23).

Both test every set of a collection for one or more contrasts of a linear model and need the
expression matrix, its observation weights, the design and the contrast. They read them from a
stored :func:`bulkpy.tl.voom` or :func:`bulkpy.tl.limma` result (``key=``: voom's ``E`` and
``weights`` layers, the formula and contrasts in ``params``), or take them directly (``layer=``,
``weights=``, ``design=``, ``contrast=``). Results are stored like ``bk.tl.gsea``'s: one table
per contrast under ``uns[key_added]``, read by :func:`bulkpy.get.enrichment` and drawn by
:func:`bulkpy.pl.enrichment`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd
from anndata import AnnData

from .._docs import doc_params
from .._genesets import as_gene_sets, sets_for_genes
from .._slots import check_key, h5ad_safe_frame, write_params
from .._stats.limma import camera as _cam
from .._utils import finish, start
from .._validate import check_adata, check_bool, dense, get_matrix, obs_column
from ._contrasts import parse_contrasts, parse_design
from ._enrichment import _check_int, _joined, _labels
from ._limma import LIMMA_VERSION, R_RELEASE

logger = logging.getLogger(__name__)

_LIMMA_METHODS = ("voom", "limma", "limma-trend")

_doc_common = """\
adata
    Annotated data matrix, samples in ``obs`` and genes in ``var``.
gene_sets
    Gene sets: a ``dict`` of set name -> list of genes (e.g. :func:`bulkpy.datasets.reactome`,
    :func:`bulkpy.io.read_gmt`), a GMT file path, or decoupler's long DataFrame (``source``,
    ``target``).
key
    The ``key_added`` of a :func:`bulkpy.tl.voom` or :func:`bulkpy.tl.limma` run to read the
    expression (voom's ``E`` layer, or the layer limma used), the observation weights (voom's
    ``weights`` layer, or limma's ``weights=``/sample weights), the design formula and the
    contrasts from. May be omitted when the object holds a single limma/voom result and
    ``design`` is not given.
contrast
    With ``key``: the name of a stored contrast, or a list of them (all by default). With
    ``design``: a contrast as :func:`bulkpy.tl.limma` takes it (``[factor, test, reference]``, a
    coefficient name, a numeric vector, or a dict of them). A contrast equal to one coefficient
    is tested as R's ``contrast = <coefficient>`` (that column moved last), any other as R's
    contrast vector (the design rotated by the contrast's Householder reflection).
layer
    Without ``key``: layer of log-expression (e.g. voom's ``E``, log-CPM); ``None`` uses ``X``.
weights
    Without ``key``: observation weights, a layer (samples x genes, e.g. voom's) or an ``obs``
    column of sample weights; ``None``: unweighted.
design
    Without ``key``: the design, a formula over ``obs`` columns (``"~ cell + dex"``) or a numeric
    matrix. The column order matters with observation weights (see the notes)."""

_doc_sets = """\
gene_symbols
    Column of ``adata.var`` holding the ids the gene sets use (e.g. ``"symbol"``); a symbol
    shared by several genes counts once, as the first of them. ``None`` matches ``var_names``.
min_size
    Test only sets with at least this many genes in the data (at least 2: a set of one gene is
    a gene-level test). limma itself has no size filter.
max_size
    Test only sets with at most this many genes; ``None``: no upper bound.
key_added
    Where to store the results in ``uns``; default ``f"{method}_{key}"`` (``"camera"``/``"fry"``
    without ``key``).
copy
    Return a modified copy instead of writing into ``adata``."""

_doc_notes_basis = """\
With observation weights (voom) limma computes each gene's effects from its own QR
decomposition, so camera's estimated correlation (``inter_gene_cor=None``) and all of fry's
statistics depend on the parameterisation of the design (column order, reference levels), as in
R. To reproduce an R run, give the factors the levels R used (R sorts them; ``relevel`` sets the
reference) and test the same coefficient or vector. camera with a fixed correlation does not
depend on it."""


# --------------------------------------------------------------------------------------------
# the model: from a stored limma/voom result or given directly
# --------------------------------------------------------------------------------------------


class _Model:
    """What the engines need: expression, weights, design, and the contrasts to test."""

    def __init__(self):
        self.E = None
        self.W = None
        self.X = None
        self.cols: list[str] = []
        self.contrasts: dict[str, np.ndarray] = {}
        self.block = None
        self.correlation = None
        self.record: dict = {}


def _limma_keys(adata: AnnData) -> list[str]:
    out = []
    for k, v in adata.uns.items():
        params = v.get("params") if isinstance(v, Mapping) else None
        if isinstance(params, Mapping) and params.get("method") in _LIMMA_METHODS and "contrasts" in v:
            out.append(str(k))
    return out


def _stored(value):
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value) == "None":
        return None
    return value


def _weights_from_description(adata: AnnData, desc: str, key: str):
    desc = str(desc)
    if desc == "None":
        return None
    for kind, store in (("layers", adata.layers), ("obs", adata.obs)):
        prefix = f"{kind}['"
        if desc.startswith(prefix) and desc.endswith("']"):
            name = desc[len(prefix) : -2]
            if name not in store:
                raise KeyError(f"the weights of result {key!r} ({desc}) are no longer in the object")
            if kind == "layers":
                return dense(get_matrix(adata, name))
            return adata.obs[name].to_numpy(dtype=np.float64)
    raise ValueError(
        f"result {key!r} was fitted with weights given as an array ({desc}), which is not stored; "
        "pass layer=, weights=, design= and contrast= instead of key="
    )


def _from_result(adata: AnnData, key, contrast, method: str) -> _Model:
    found = _limma_keys(adata)
    if key is None:
        if len(found) != 1:
            raise (KeyError if not found else ValueError)(
                f"{method} needs a linear model: this object holds "
                + (f"several limma/voom results {found}; pass key= one of them" if found else
                   "no limma/voom result; run bk.tl.voom (or bk.tl.limma) first, or pass layer=, design= and contrast=")
            )
        key = found[0]
    if not isinstance(key, str):
        raise TypeError(f"key must be the key_added of a bk.tl.voom / bk.tl.limma run (a string), got {key!r}")
    if key not in found:
        raise KeyError(
            f"no limma/voom result under key {key!r}; results in this object: {found or 'none'} "
            "(camera and fry need bk.tl.voom or bk.tl.limma; or pass layer=, design= and contrast=)"
        )
    entry = adata.uns[key]
    params = entry["params"]
    m = _Model()
    formula = str(params.get("design", ""))
    if "~" not in formula:
        raise ValueError(
            f"result {key!r} was fitted with a design matrix ({formula}), which is not stored; pass layer=, "
            "weights=, design= and contrast= instead of key="
        )
    m.X, m.cols = parse_design(adata, formula)
    stored_cols = [str(c) for c in np.atleast_1d(params.get("design_columns", []))]
    if stored_cols and stored_cols != list(m.cols):
        raise ValueError(
            f"the design {formula!r} now gives columns {m.cols}, but result {key!r} was fitted with {stored_cols} "
            "(obs changed since?); rerun the fit"
        )
    if params["method"] == "voom":
        for suffix in ("E", "weights"):
            if f"{key}_{suffix}" not in adata.layers:
                raise KeyError(f"layer {key}_{suffix} of the voom result {key!r} is missing")
        m.E = dense(get_matrix(adata, f"{key}_E"))
        m.W = dense(get_matrix(adata, f"{key}_weights"))
        m.record.update(expression=f"layers['{key}_E']", weights=f"layers['{key}_weights']")
    else:
        layer = _stored(params.get("layer"))
        m.E = dense(get_matrix(adata, layer))
        W = _weights_from_description(adata, params.get("weights", "None"), key)
        aw = params.get("sample_weights")
        if aw is not None and not isinstance(aw, str):
            aw = np.asarray(aw, dtype=np.float64)
            W = aw if W is None else (aw * W if W.ndim == 1 else aw[:, None] * W)
        m.W = W
        m.record.update(
            expression="X" if layer is None else f"layers[{layer!r}]",
            weights=str(params.get("weights", "None")) + (" x sample weights" if aw is not None else ""),
        )
    names = [str(c) for c in np.atleast_1d(entry["contrasts"])]
    if contrast is None:
        wanted = names
    else:
        wanted = [contrast] if isinstance(contrast, str) else list(contrast)
        for c in wanted:
            if not isinstance(c, str) or c not in names:
                raise KeyError(f"contrast {c!r} not in result {key!r}; contrasts: {names}")
    vectors = params["contrasts"]
    m.contrasts = {c: np.asarray(vectors[c], dtype=np.float64) for c in dict.fromkeys(wanted)}
    block = _stored(params.get("block"))
    if block is not None:
        m.block = block
        m.correlation = float(params["correlation"])
    m.record.update(key=key, design=formula, design_columns=list(m.cols))
    return m


def _given(adata: AnnData, layer, weights, design, contrast) -> _Model:
    from ._limma import _expression, _weights

    m = _Model()
    m.E = _expression(adata, layer)
    m.X, m.cols = parse_design(adata, design)
    names, C, _ = parse_contrasts(adata, design, m.cols, contrast)
    m.contrasts = {n: C[:, j] for j, n in enumerate(names)}
    m.W, wdesc = _weights(adata, weights, m.E.shape)
    from .._design import describe_design

    m.record.update(
        key="None", expression="X" if layer is None else f"layers[{layer!r}]", weights=wdesc,
        design=describe_design(design), design_columns=list(m.cols),
    )  # fmt: skip
    return m


def _model(adata, key, contrast, layer, weights, design, method: str) -> _Model:
    if design is None:
        for name, val in (("layer", layer), ("weights", weights)):
            if val is not None:
                raise ValueError(
                    f"{name}= is read from the stored limma/voom result; pass it only with design= (and no key=)"
                )
        m = _from_result(adata, key, contrast, method)
    else:
        if key is not None:
            raise ValueError("pass either key= (read the model of a limma/voom result) or design= (and layer=, contrast=), not both")
        if contrast is None:
            raise TypeError("contrast is required with design=: e.g. ['dex', 'trt', 'untrt'] or a coefficient name")
        m = _given(adata, layer, weights, design, contrast)
    if m.E.ndim != 2 or m.E.shape[1] < 3:
        raise ValueError(f"{method} needs at least 3 genes, got {m.E.shape[1]}")
    if not np.all(np.isfinite(m.E)):
        raise ValueError(
            f"the expression matrix has {int((~np.isfinite(m.E)).sum())} missing or infinite values; limma's {method} "
            "needs complete data (drop or impute those genes)"
        )
    if m.W is not None and np.any(m.W <= 0):
        raise ValueError(f"{method} needs positive weights (limma's {method} stops on weights <= 0)")
    return m


def _engine_contrast(vec: np.ndarray):
    """A contrast that is one coefficient (+1 on one column) goes as its column index."""
    nz = np.flatnonzero(vec)
    if nz.size == 1 and vec[nz[0]] == 1.0:
        return int(nz[0])
    return vec


def _sets(adata, gene_sets, gene_symbols, min_size, max_size):
    min_size = _check_int(min_size, "min_size", minimum=1)
    if min_size < 2:
        raise ValueError(
            f"min_size must be at least 2, got {min_size}: a set of one gene is a test of that gene "
            "(see bk.get.de_df); camera's correlation and fry's mixed test need two"
        )
    max_size = _check_int(max_size, "max_size", minimum=1, allow_none=True)
    net = as_gene_sets(gene_sets)
    genes = adata.var_names
    member, names, _ = sets_for_genes(
        net, genes, var=adata.var, gene_symbols=gene_symbols, min_size=min_size, max_size=max_size, validated=True,
    )  # fmt: skip
    member.sort_indices()
    n_all = int(net["source"].nunique())
    if len(names) < n_all:
        logger.info("%d of %d gene sets have %d to %s genes in the data and are tested", len(names), n_all,
                    min_size, max_size)
    labels = _labels(adata.var, gene_symbols, pd.Index(genes, dtype=object))
    return member, names, _joined(member.indptr, member.indices, labels), min_size, max_size, n_all


def _store(adata, key_added, tables, params) -> None:
    adata.uns.pop(key_added, None)
    adata.uns[key_added] = {c: h5ad_safe_frame(t) for c, t in tables.items()}
    write_params(adata, key_added, params)


def _key_added(key_added, method: str, m: _Model) -> str:
    if key_added is None:
        key_added = method if m.record["key"] == "None" else f"{method}_{m.record['key']}"
    return check_key(key_added, "key_added")


def _check_names(contrasts: Mapping) -> None:
    if "params" in contrasts:
        raise ValueError("a contrast named 'params' would clash with the parameters entry; rename it")


# --------------------------------------------------------------------------------------------
# camera
# --------------------------------------------------------------------------------------------


@doc_params(common=_doc_common, sets=_doc_sets, basis=_doc_notes_basis)
def camera(
    adata: AnnData,
    gene_sets=None,
    *,
    key: str | None = None,
    contrast=None,
    layer: str | None = None,
    weights=None,
    design=None,
    inter_gene_cor: float | None = 0.01,
    use_ranks: bool = False,
    allow_neg_cor: bool = False,
    trend_var: bool = False,
    gene_symbols: str | None = None,
    min_size: int = 2,
    max_size: int | None = None,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Competitive gene set test accounting for inter-gene correlation: limma's ``camera``.

    Are the genes of a set more differentially expressed than the other genes? limma 3.68's
    ``camera.default``: moderated t statistics of the contrast for every gene (the residual
    variances squeezed by ``squeezeVar``), converted to z-scores (Hill's approximation, as
    ``zscoreT``), and per set a two-sample t test of the set's mean z-score against the other
    genes, its variance inflated by ``1 + (m - 1) * correlation`` for a set of ``m`` genes. The
    inter-gene correlation is 0.01 by default (limma's ``inter.gene.cor``; ``None`` estimates it
    per set from the residuals, R's ``NA``, with ``min(residual df, genes - 2)`` degrees of
    freedom instead of ``genes - 2``); ``use_ranks=True`` uses a rank sum test with the
    correlation instead. Benjamini-Hochberg adjusted over the sets of a contrast.

    {basis}

    Parameters
    ----------
    {common}
    inter_gene_cor
        The inter-gene correlation assumed within every set (limma's default 0.01), or ``None``
        to estimate it per set (limma's ``inter.gene.cor = NA``).
    use_ranks
        Wilcoxon rank sum test of the moderated t statistics with the correlation
        (``rankSumTestWithCorrelation``) instead of the parametric test.
    allow_neg_cor
        Let negative correlations (estimated) reduce the variance (limma's ``allow.neg.cor``);
        by default they are set to 0.
    trend_var
        Squeeze the residual variances towards a trend in mean expression (limma's
        ``trend.var``, as limma-trend).
    {sets}

    Returns
    -------
    ``None`` (``adata`` modified in place) or, with ``copy=True``, the modified copy, with

    * ``uns[key_added][contrast]``: a DataFrame per contrast indexed by gene set (``gene_set``),
      sorted by p-value as limma sorts it, with ``size`` (genes of the set in the data, R's
      ``NGenes``), ``correlation`` (the inter-gene correlation used: the fixed value or the
      estimate, R's ``Correlation``), ``direction`` (``"Up"``/``"Down"``, R's ``Direction``),
      ``stat`` (the two-sample t, or the rank-sum z, positive for ``"Up"``), ``pvalue``
      (two-sided, R's ``PValue``), ``padj`` (R's ``FDR``) and ``genes`` (``;``-joined, in the
      sets' ids);
    * ``uns[key_added]["params"]``: method, the model's source (``key``, expression, weights,
      design and its columns, the contrast vectors), the options, ``df_camera`` (degrees of
      freedom of the test), ``s2_prior``/``df_prior`` of the squeezed variances, the set sizes,
      ``r_columns`` (bulkpy column -> R column, to rename a table as limma prints it), the R
      release followed (``r_release``, ``limma_version``) and the Python versions.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.airway()
    >>> adata = adata[:, adata.X.sum(axis=0) >= 200].copy()
    >>> bk.pp.annotate_genes(adata)
    >>> bk.tl.voom(adata, design="~ cell + dex", contrast=["dex", "trt", "untrt"])
    >>> sets = {{k: v for k, v in bk.datasets.reactome().items() if "nterferon" in k or "Glycoly" in k}}
    >>> bk.tl.camera(adata, sets, key="voom", gene_symbols="symbol")
    >>> res = bk.get.enrichment(adata, "camera_voom")
    >>> list(res.columns)
    ['size', 'correlation', 'direction', 'stat', 'pvalue', 'padj', 'genes']

    The same with limma's column names, and with the correlation estimated per set:

    >>> r_names = adata.uns["camera_voom"]["params"]["r_columns"]
    >>> list(res.drop(columns="genes").rename(columns=r_names).columns)
    ['NGenes', 'Correlation', 'Direction', 'statistic', 'PValue', 'FDR']
    >>> bk.tl.camera(adata, sets, key="voom", gene_symbols="symbol", inter_gene_cor=None, key_added="camera_est")
    >>> bool((bk.get.enrichment(adata, "camera_est")["correlation"].abs() < 1).all())
    True
    """
    check_adata(adata)
    if gene_sets is None:
        raise TypeError("gene_sets is required: a dict of set name -> genes, a GMT path or a long DataFrame")
    use_ranks = check_bool(use_ranks, "use_ranks")
    allow_neg_cor = check_bool(allow_neg_cor, "allow_neg_cor")
    trend_var = check_bool(trend_var, "trend_var")
    if inter_gene_cor is not None:
        if isinstance(inter_gene_cor, bool) or not isinstance(inter_gene_cor, int | float | np.integer | np.floating):
            raise TypeError(f"inter_gene_cor must be a number in (-1, 1) or None (estimate it), got {inter_gene_cor!r}")
        inter_gene_cor = float(inter_gene_cor)
        if not -1 < inter_gene_cor < 1:
            raise ValueError(f"inter_gene_cor must be in (-1, 1), got {inter_gene_cor}")
    m = _model(adata, key, contrast, layer, weights, design, "camera")
    if m.block is not None:
        raise ValueError(
            f"result {m.record['key']!r} was fitted with block={m.block!r} (correlated samples); limma's camera "
            "has no block and would treat the samples as independent. Use bk.tl.fry (which takes the block and its "
            "correlation), or pass layer=, weights=, design= (with the block as a fixed effect) and contrast="
        )
    _check_names(m.contrasts)
    key_added = _key_added(key_added, "camera", m)
    member, names, genes, min_size, max_size, n_all = _sets(adata, gene_sets, gene_symbols, min_size, max_size)

    tables, df_camera, priors = {}, None, {}
    for c, vec in m.contrasts.items():
        r = _cam.camera(
            m.E, m.X, _engine_contrast(vec), member, weights=m.W, inter_gene_cor=inter_gene_cor,
            use_ranks=use_ranks, allow_neg_cor=allow_neg_cor, trend_var=trend_var,
        )  # fmt: skip
        table = pd.DataFrame(
            {
                "size": r.n_genes,
                "correlation": r.correlation,
                "direction": r.direction.astype(str),
                "stat": r.statistic,
                "pvalue": r.pvalue,
                "padj": r.fdr,
                "genes": genes,
            },
            index=pd.Index(np.asarray(names, dtype=object), name="gene_set"),
        )
        tables[c] = table.iloc[_cam.order_sets(r.pvalue, None)]
        df_camera = r.df_camera
        priors[c] = {"s2_prior": r.s2_prior, "df_prior": r.df_prior}

    params = {
        "method": "camera",
        "test": "rank sum with correlation" if use_ranks else "two-sample t with variance inflation",
        **m.record,
        "contrasts": list(m.contrasts),
        "contrast_vectors": dict(m.contrasts),
        "inter_gene_cor": "estimated" if inter_gene_cor is None else inter_gene_cor,
        "use_ranks": use_ranks,
        "allow_neg_cor": allow_neg_cor,
        "trend_var": trend_var,
        "df_camera": float(df_camera) if np.isfinite(df_camera) else "Inf",
        "prior": priors,
        "gene_symbols": gene_symbols,
        "min_size": min_size,
        "max_size": max_size,
        "n_gene_sets": n_all,
        "n_tested": len(names),
        "r_columns": {
            "size": "NGenes", "correlation": "Correlation", "direction": "Direction", "stat": "statistic",
            "pvalue": "PValue", "padj": "FDR",
        },
        "r_release": R_RELEASE,
        "limma_version": LIMMA_VERSION,
    }  # fmt: skip
    adata = start(adata, copy)
    _store(adata, key_added, tables, params)
    return finish(adata, copy)


# --------------------------------------------------------------------------------------------
# fry
# --------------------------------------------------------------------------------------------


def _fry_block(adata, m: _Model, block, correlation):
    """Block codes and correlation: the stored result's, or block=/correlation= given here."""
    if block is None and correlation is None:
        if m.block is None:
            return None, None
        block, correlation = m.block, m.correlation
    elif block is None or correlation is None:
        raise ValueError(
            "block= and correlation= go together (fry, as limma's, needs the intra-block correlation; e.g. "
            "adata.uns['voom']['params']['correlation'] of a bk.tl.voom run with block=)"
        )
    elif m.block is not None:
        raise ValueError(f"result {m.record['key']!r} already has block={m.block!r}; do not pass block= again")
    if isinstance(correlation, bool) or not isinstance(correlation, int | float | np.integer | np.floating):
        raise TypeError(f"correlation must be a number in (-1, 1), got {correlation!r}")
    if not -1 < float(correlation) < 1:
        raise ValueError(f"correlation must be in (-1, 1), got {correlation!r}")
    col = obs_column(adata, block, what="block")
    if pd.isna(col).any():
        raise ValueError(f"block column {block!r} has missing values; give every sample a block")
    codes = pd.factorize(col.astype(str))[0]
    m.record.update(block=block, correlation=float(correlation))
    return codes, float(correlation)


@doc_params(common=_doc_common, sets=_doc_sets, basis=_doc_notes_basis)
def fry(
    adata: AnnData,
    gene_sets=None,
    *,
    key: str | None = None,
    contrast=None,
    layer: str | None = None,
    weights=None,
    design=None,
    block: str | None = None,
    correlation: float | None = None,
    standardize: str = "posterior.sd",
    trend_var: bool = False,
    robust: bool = False,
    sort: str = "directional",
    gene_symbols: str | None = None,
    min_size: int = 2,
    max_size: int | None = None,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Self-contained gene set test by rotation, in closed form: limma's ``fry``.

    Are the genes of a set differentially expressed at all (not compared with other genes)?
    limma 3.68's ``fry.default``, the limit of ``roast`` with infinitely many rotations: each
    gene's effects (its expression rotated by the QR decomposition of the design, weighted gene
    by gene with voom's weights, whitened by the block correlation with repeated measures) are
    standardised by a robust posterior standard deviation (``standardize="posterior.sd"``), and
    per set the **directional** test is a t test of the mean contrast effect against the mean
    residual effects (``n - p`` degrees of freedom), the **mixed** test (genes moving in either
    direction) a beta approximation to the set's share of squared effects from the singular
    values of the set's effects. Benjamini-Hochberg adjusted over the sets of a contrast.
    Weighted sets (a ``weight`` column in a long DataFrame) weight each gene's effects, as R's
    data-frame index with weights.

    {basis}

    Parameters
    ----------
    {common}
    block
        With ``design``, or to add it to a result fitted without: ``obs`` column of the blocks
        (repeated measures) with ``correlation``. A result of ``bk.tl.voom(block=...)`` brings its
        own block and consensus correlation.
    correlation
        The intra-block correlation (e.g. ``duplicateCorrelation``'s consensus), with ``block``.
    standardize
        How effects are standardised (limma's ``standardize``): ``"posterior.sd"`` (default),
        ``"residual.sd"``, ``"p2"`` or ``"none"``.
    trend_var
        A trend in mean expression for the prior variance (limma's ``trend.var``).
    robust
        Robust estimation of the prior (limma's ``robust``, ``fitFDistRobustly``).
    sort
        Row order: ``"directional"`` (by ``pvalue``, then larger sets, then ``pvalue_mixed``),
        ``"mixed"`` (by ``pvalue_mixed`` first) or ``"none"`` (the order of the gene sets).
    {sets}

    Returns
    -------
    ``None`` (``adata`` modified in place) or, with ``copy=True``, the modified copy, with

    * ``uns[key_added][contrast]``: a DataFrame per contrast indexed by gene set (``gene_set``)
      with ``size`` (R's ``NGenes``), ``direction`` (``"Up"``/``"Down"``, R's ``Direction``),
      ``stat`` (the directional t statistic), ``pvalue`` and ``padj`` (the directional test, R's
      ``PValue``/``FDR``), ``pvalue_mixed`` and ``padj_mixed`` (R's ``PValue.Mixed``/
      ``FDR.Mixed``) and ``genes`` (``;``-joined, in the sets' ids), in the order of ``sort``;
    * ``uns[key_added]["params"]``: method, the model's source (``key``, expression, weights,
      design and its columns, the contrast vectors, block and correlation), the options, the
      test's degrees of freedom (``df``), the set sizes, ``r_columns`` (bulkpy column -> R
      column), the R release followed (``r_release``, ``limma_version``) and the Python
      versions.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.airway()
    >>> adata = adata[:, adata.X.sum(axis=0) >= 200].copy()
    >>> bk.pp.annotate_genes(adata)
    >>> bk.tl.voom(adata, design="~ cell + dex", contrast=["dex", "trt", "untrt"])
    >>> sets = {{k: v for k, v in bk.datasets.reactome().items() if "nterferon" in k or "Glycoly" in k}}
    >>> bk.tl.fry(adata, sets, key="voom", gene_symbols="symbol")
    >>> res = bk.get.enrichment(adata, "fry_voom")
    >>> list(res.columns)
    ['size', 'direction', 'stat', 'pvalue', 'padj', 'pvalue_mixed', 'padj_mixed', 'genes']
    >>> bool((res["pvalue_mixed"] <= 1).all())
    True
    """
    check_adata(adata)
    if gene_sets is None:
        raise TypeError("gene_sets is required: a dict of set name -> genes, a GMT path or a long DataFrame")
    trend_var = check_bool(trend_var, "trend_var")
    robust = check_bool(robust, "robust")
    if not isinstance(standardize, str) or standardize not in _cam.STANDARDIZE:
        raise ValueError(f"standardize={standardize!r} is not supported; choose one of {list(_cam.STANDARDIZE)}")
    if not isinstance(sort, str) or sort not in ("directional", "mixed", "none"):
        raise ValueError(f"sort={sort!r} is not supported; choose one of ['directional', 'mixed', 'none']")
    m = _model(adata, key, contrast, layer, weights, design, "fry")
    codes, cor = _fry_block(adata, m, block, correlation)
    _check_names(m.contrasts)
    key_added = _key_added(key_added, "fry", m)
    member, names, genes, min_size, max_size, n_all = _sets(adata, gene_sets, gene_symbols, min_size, max_size)

    tables, df = {}, None
    for c, vec in m.contrasts.items():
        r = _cam.fry(
            m.E, m.X, _engine_contrast(vec), member, weights=m.W, block=codes, correlation=cor,
            standardize=standardize, trend_var=trend_var, robust=robust,
        )  # fmt: skip
        table = pd.DataFrame(
            {
                "size": r.n_genes,
                "direction": r.direction.astype(str),
                "stat": r.statistic,
                "pvalue": r.pvalue,
                "padj": r.fdr,
                "pvalue_mixed": r.pvalue_mixed,
                "padj_mixed": r.fdr_mixed,
                "genes": genes,
            },
            index=pd.Index(np.asarray(names, dtype=object), name="gene_set"),
        )
        if sort == "directional":
            table = table.iloc[_cam.order_sets(r.pvalue, r.n_genes, r.pvalue_mixed)]
        elif sort == "mixed":
            table = table.iloc[_cam.order_sets(r.pvalue_mixed, r.n_genes, r.pvalue)]
        tables[c] = table
        df = r.df

    params = {
        "method": "fry",
        "test": "rotation (infinite rotations, closed form): directional t and mixed beta approximation",
        **m.record,
        "contrasts": list(m.contrasts),
        "contrast_vectors": dict(m.contrasts),
        "standardize": standardize,
        "trend_var": trend_var,
        "robust": robust,
        "sort": sort,
        "df": df,
        "gene_symbols": gene_symbols,
        "min_size": min_size,
        "max_size": max_size,
        "n_gene_sets": n_all,
        "n_tested": len(names),
        "r_columns": {
            "size": "NGenes", "direction": "Direction", "stat": "statistic", "pvalue": "PValue", "padj": "FDR",
            "pvalue_mixed": "PValue.Mixed", "padj_mixed": "FDR.Mixed",
        },
        "r_release": R_RELEASE,
        "limma_version": LIMMA_VERSION,
    }  # fmt: skip
    adata = start(adata, copy)
    _store(adata, key_added, tables, params)
    return finish(adata, copy)


__all__ = ["camera", "fry"]
