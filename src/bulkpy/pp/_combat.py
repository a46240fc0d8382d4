"""Batch correction: ComBat for log-scale data and ComBat-seq for counts (sva 3.46)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._docs import doc_adata, doc_copy, doc_params
from .._slots import COUNTS, check_key, write_params
from .._stats import combat as _cb
from .._utils import finish, start
from .._validate import check_adata, check_bool, dense, get_matrix, layer_name, looks_logged, obs_column

#: an all-integer matrix whose maximum is above this is taken for raw counts, not log-scale data
_COUNTS_MAX = 50.0


def _batch_codes(adata: AnnData, batch) -> tuple[np.ndarray, list]:
    """Integer codes of the batch column and its levels (category order, else sorted)."""
    col = obs_column(adata, batch, what="batch")
    na = pd.isna(col).to_numpy()
    if na.any():
        raise ValueError(
            f"batch column {batch!r} has {int(na.sum())} missing values (samples "
            f"{list(map(str, adata.obs_names[na][:10]))}); assign every sample to a batch"
        )
    if isinstance(col.dtype, pd.CategoricalDtype):
        cat = col.cat.remove_unused_categories()
        levels = list(cat.cat.categories)
        codes = cat.cat.codes.to_numpy().astype(np.intp)
    else:
        vals = col.to_numpy()
        if vals.dtype == object:
            vals = vals.astype(str)
        levels_arr, codes = np.unique(vals, return_inverse=True)
        levels = list(levels_arr)
        codes = np.asarray(codes, dtype=np.intp).ravel()
    if len(levels) < 2:
        raise ValueError(f"batch column {batch!r} has a single level ({levels[0]!r}); there is no batch effect to remove")
    return codes, levels


def _level_index(levels: list, value, name: str) -> int:
    for i, lv in enumerate(levels):
        if lv == value or str(lv) == str(value):
            return i
    raise ValueError(f"{name}={value!r} is not a batch; batches are: {[str(x) for x in levels]}")


def _covariate_terms(adata: AnnData, covariates) -> tuple[np.ndarray | None, list[str], list[tuple[str, list[int]]], object]:
    """Model matrix of the covariates without intercept, its column names, and for each obs
    column (term) the indices of its columns. ``covariates`` is a list of obs columns or a
    formula string."""
    from .._design import design_matrix

    if covariates is None:
        return None, [], [], None
    if isinstance(covariates, str) and covariates.strip().startswith("~"):
        X, names = design_matrix(adata.obs, covariates)
        keep = ~np.all(X == 1.0, axis=0)
        X, names = X[:, keep], [n for n, k in zip(names, keep, strict=True) if k]
        terms = [(name, [i]) for i, name in enumerate(names)]  # name the model columns
        return X, names, terms, covariates.strip()
    if isinstance(covariates, str):
        covariates = [covariates]
    if not isinstance(covariates, Sequence) or not all(isinstance(c, str) for c in covariates):
        raise TypeError(
            "covariates must be an obs column name, a list of obs column names or a formula string "
            f"such as '~ condition + age', got {covariates!r}"
        )
    if len(set(covariates)) != len(covariates):
        raise ValueError(f"covariates lists a column twice: {list(covariates)}")
    blocks, names, terms = [], [], []
    for c in covariates:
        obs_column(adata, c, what="covariate")
        X, cn = design_matrix(adata.obs, f"~ `{c}`" if not c.isidentifier() else f"~ {c}")
        keep = ~np.all(X == 1.0, axis=0)
        X, cn = X[:, keep], [n for n, k in zip(cn, keep, strict=True) if k]
        if X.shape[1] == 0:
            raise ValueError(f"covariate {c!r} takes a single value for every sample; it can not be adjusted for")
        terms.append((c, list(range(len(names), len(names) + len(cn)))))
        blocks.append(X)
        names += cn
    return np.hstack(blocks), names, terms, list(covariates)


def _check_confounding(batch_codes, n_batch, mod, names, terms, batch: str, tool: str) -> None:
    """Raise a ValueError naming the covariate(s) confounded with batch or with each other."""
    if mod is None or mod.shape[1] == 0:
        return
    bm = np.zeros((batch_codes.size, n_batch))
    bm[np.arange(batch_codes.size), batch_codes] = 1.0
    rank = np.linalg.matrix_rank
    bad = []
    for term, idx in terms:
        sub = mod[:, idx]
        if rank(np.hstack([bm, sub])) < n_batch + rank(sub):
            bad.append(term)
    if bad:
        what = ", ".join(repr(t) for t in bad)
        raise ValueError(
            f"{'covariate' if len(bad) == 1 else 'covariates'} {what} {'is' if len(bad) == 1 else 'are'} confounded "
            f"with batch {batch!r}: the effect can not be told apart from the batch effect, so {tool} would remove "
            "it or fail (sva: 'The covariate is confounded with batch!'). Remove it from covariates; if the "
            "batches are entirely nested in a biological group, batch "
            "correction cannot separate them (model batch in the downstream analysis instead)"
        )
    if rank(mod) < mod.shape[1]:
        from .._design import confounded_columns

        conf = confounded_columns(mod, names)
        raise ValueError(
            f"the covariates are confounded with each other ({conf}); remove one of them "
            "(sva: 'The covariates are confounded!')"
        )
    full = np.hstack([bm, mod])
    if rank(full) < full.shape[1]:
        raise ValueError(
            f"the covariates {[t for t, _ in terms]} taken together are confounded with batch {batch!r} "
            "(sva: 'At least one covariate is confounded with batch!'); remove one of them"
        )


def _safe(level) -> str:
    return str(level).replace("/", "_")


# --------------------------------------------------------------------------------------------


@doc_params(adata=doc_adata, copy=doc_copy)
def combat(
    adata: AnnData,
    *,
    batch: str,
    covariates: str | Sequence[str] | None = None,
    parametric: bool = True,
    mean_only: bool = False,
    ref_batch=None,
    layer: str | None = None,
    key_added: str = "combat",
    copy: bool = False,
) -> AnnData | None:
    """Remove batch effects from log-scale data with ComBat (empirical Bayes; sva's ``ComBat``).

    Equal to sva 3.46's ``ComBat(dat, batch, mod, par.prior, mean.only, ref.batch)``: the data are
    standardised with a least-squares fit of batch and covariates, per-gene batch location and
    scale effects are shrunk towards their across-gene distribution (parametric normal /
    inverse-gamma priors, or the non-parametric likelihood-weighted average over the other genes,
    which draws no random numbers), removed, and the covariate effects are kept. Genes constant
    within some batch are returned unchanged, as sva does; missing values (NaN) are allowed per
    gene and stay missing.

    Use it on log-scale data (microarray intensities, log-CPM, VST); for raw counts use
    :func:`bulkpy.pp.combat_seq`.

    Parameters
    ----------
    {adata}
    batch
        ``obs`` column with the batch of each sample (two or more batches).
    covariates
        Biological covariates whose effects must be kept: ``obs`` column names (categorical
        columns become treatment-coded indicators, numeric columns enter linearly) or a formula
        string such as ``"~ condition + age"`` (R's ``model.matrix`` conventions). ``None``
        adjusts with batch alone (sva's ``mod = NULL``).
    parametric
        Parametric empirical Bayes priors (sva's ``par.prior = TRUE``); ``False`` uses the
        non-parametric estimate, which costs O(genes²) per batch (about 15 s of CPU for 22,000 genes
        in 5 batches).
    mean_only
        Adjust only the batch means, not the variances (sva's ``mean.only``). Required when a
        batch has a single sample.
    ref_batch
        A batch level to use as the reference: it is left unchanged and the others are moved to it.
    layer
        Layer with log-scale expression; ``None`` uses ``adata.X``.
    key_added
        Name of the output layer, ``varm`` table and ``uns`` entry.
    {copy}

    Returns
    -------
    ``None``, or the modified copy with ``copy=True``. Writes

    - ``layers[key_added]``: the batch-corrected matrix (samples × genes);
    - ``varm[key_added]``: per gene, ``gamma_hat_<batch>``, ``delta_hat_<batch>`` (standardised
      batch location and scale estimates), ``gamma_star_<batch>``, ``delta_star_<batch>``
      (their empirical Bayes values), ``var_pooled`` and ``adjusted`` (False for genes constant
      within a batch, left unchanged);
    - ``uns[key_added]["params"]``: the call; ``uns[key_added]["priors"]``: per batch the
      hyper-parameters ``gamma_bar``, ``t2``, ``a_prior``, ``b_prior`` and the parametric
      iterations.

    Examples
    --------
    >>> import numpy as np
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> adata = adata[:, adata.X.sum(axis=0) > 10].copy()
    >>> lib = adata.X.sum(axis=1, keepdims=True)
    >>> adata.layers["logcpm"] = np.log2((adata.X + 0.5) / (lib + 1) * 1e6)
    >>> bk.pp.combat(adata, batch="type", covariates=["condition"], layer="logcpm")
    >>> adata.layers["combat"].shape
    (7, 9819)
    >>> adata.uns["combat"]["params"]["parametric"]
    True
    """
    # Over 100 lines on purpose: every argument is validated here, in the docstring's order, before
    # anything is computed or written (a failing call leaves the AnnData as it was), then one engine
    # call and the writes; the checks are short and read best in one place.
    check_adata(adata)
    parametric = check_bool(parametric, "parametric")
    mean_only = check_bool(mean_only, "mean_only")
    check_bool(copy, "copy")
    check_key(key_added, "key_added")
    x = get_matrix(adata, layer)
    kind = np.dtype(getattr(x, "dtype", np.asarray(x).dtype)).kind
    if kind not in "biuf":
        raise TypeError(f"{layer_name(layer)} must be numeric, got dtype {x.dtype}")
    x = dense(x).copy()
    if x.size == 0:
        raise ValueError(f"{layer_name(layer)} is empty (shape {x.shape})")
    if np.isinf(x).any():
        raise ValueError(
            f"{layer_name(layer)} contains {int(np.isinf(x).sum())} infinite values (log of 0?); ComBat allows "
            "missing values (NaN) but not inf; add a pseudo-count before taking logs"
        )
    finite = x[~np.isnan(x)]
    if finite.size and np.all(finite == np.round(finite)) and finite.min() >= 0 and finite.max() > _COUNTS_MAX:
        raise ValueError(
            f"{layer_name(layer)} holds non-negative integers up to {finite.max():.0f}: it looks like raw counts. "
            "ComBat models log-scale data; log-transform first (e.g. log2 CPM with a pseudo-count) or use "
            "bk.pp.combat_seq(adata, batch=..., layer='counts') for counts"
        )
    if np.isnan(x).all(axis=0).any():
        raise ValueError(f"{int(np.isnan(x).all(axis=0).sum())} genes are missing (NaN) in every sample; remove them first")

    codes, levels = _batch_codes(adata, batch)
    n_batch = len(levels)
    sizes = np.bincount(codes, minlength=n_batch)
    ref = None if ref_batch is None else _level_index(levels, ref_batch, "ref_batch")
    if (sizes == 1).any() and not mean_only:
        single = [str(levels[i]) for i in np.flatnonzero(sizes == 1)]
        raise ValueError(
            f"batch {single} has a single sample, so its variance can not be estimated. sva's ComBat then "
            "silently switches to the mean-only adjustment; pass mean_only=True to do that explicitly "
            "(or merge the batch with another)"
        )
    mod, names, terms, cov_desc = _covariate_terms(adata, covariates)
    if mod is not None and batch in [t for t, _ in terms]:
        raise ValueError(f"covariates include the batch column {batch!r}; list only biological covariates")
    _check_confounding(codes, n_batch, mod, names, terms, batch, "ComBat")
    if mod is not None:
        design, _ = _cb.batch_design(codes, n_batch, mod, ref)
        msg = _cb.confounding_message(design, n_batch)
        if msg is not None:  # pragma: no cover - caught above with names
            raise ValueError(msg)
    if np.isnan(x).any() and not mean_only:
        low = []
        for b in range(n_batch):
            nobs = np.sum(~np.isnan(x[codes == b]), axis=0)
            low.append(nobs < 2)
        low = np.any(low, axis=0)
        if low.any():
            genes = list(map(str, adata.var_names[low][:5]))
            raise ValueError(
                f"{int(low.sum())} genes have fewer than two non-missing values in some batch (e.g. {genes}), so their "
                "batch variance can not be estimated; remove them or use mean_only=True"
            )

    res = _cb.combat(x, codes, mod, parametric=parametric, mean_only=mean_only, ref_batch=ref)

    cols = {}
    for name, arr in (("gamma_hat", res.gamma_hat), ("delta_hat", res.delta_hat), ("gamma_star", res.gamma_star), ("delta_star", res.delta_star)):
        for i, lv in enumerate(levels):
            cols[f"{name}_{_safe(lv)}"] = arr[i]
    cols["var_pooled"] = res.var_pooled
    cols["adjusted"] = res.adjusted_genes
    table = pd.DataFrame(cols, index=adata.var_names.copy())
    priors = pd.DataFrame(
        {
            "n_samples": sizes.astype(np.int64),
            "gamma_bar": res.gamma_bar,
            "t2": res.t2,
            "a_prior": res.a_prior,
            "b_prior": res.b_prior,
            "iterations": res.iterations.astype(np.int64),
        },
        index=[_safe(lv) for lv in levels],
    )
    params = {
        "method": "ComBat",
        "reference": "sva 3.46 ComBat (Johnson et al. 2007)",
        "batch": batch,
        "batches": [str(lv) for lv in levels],
        "covariates": cov_desc,
        "covariate_columns": names,
        "parametric": parametric,
        "mean_only": res.mean_only,
        "ref_batch": None if ref is None else str(levels[ref]),
        "layer": layer,
        "n_genes_adjusted": int(res.adjusted_genes.sum()),
        "n_genes_constant_in_a_batch": int((~res.adjusted_genes).sum()),
        "missing_values": res.missing,
    }

    adata = start(adata, copy)
    adata.layers[key_added] = res.corrected
    adata.varm[key_added] = table
    write_params(adata, key_added, params, priors=priors)
    return finish(adata, copy)


@doc_params(adata=doc_adata, copy=doc_copy)
def combat_seq(
    adata: AnnData,
    *,
    batch: str,
    group: str | None = None,
    covariates: str | Sequence[str] | None = None,
    full_mod: bool = True,
    shrink: bool = False,
    shrink_disp: bool = False,
    gene_subset_n: int | None = None,
    seed: int = 0,
    layer: str | None = COUNTS,
    key_added: str = "combat_seq",
    copy: bool = False,
) -> AnnData | None:
    """Remove batch effects from raw counts with ComBat-seq (negative binomial; sva's ``ComBat_seq``).

    Equal to sva 3.46's ``ComBat_seq(counts, batch, group, covar_mod, full_mod, shrink,
    shrink.disp)``: per batch, edgeR Cox-Reid dispersions; a negative binomial GLM of batch and
    covariates (edgeR ``glmFit``) gives each gene's batch effects; each count is then mapped to
    the batch-free distribution (mean without the batch effect, dispersion averaged over
    batches) at the same cumulative probability, so the result is again integer counts. Genes
    that are zero in every sample of some batch are returned unchanged.

    Parameters
    ----------
    {adata}
    batch
        ``obs`` column with the batch of each sample; every batch needs two or more samples.
    group
        ``obs`` column with the biological condition whose differences must be kept (sva's
        ``group``).
    covariates
        Further covariates to keep: ``obs`` column names or a formula string (sva's ``covar_mod``).
    full_mod
        Include ``group`` in the model (sva's ``full_mod``).
    shrink
        Empirical Bayes shrinkage of the batch effects over genes (sva's ``shrink``; off by
        default in sva). Costs O(genes² × samples).
    shrink_disp
        With ``shrink``, shrink the dispersions too (sva's ``shrink.disp``).
    gene_subset_n
        With ``shrink``, integrate over this many randomly drawn genes instead of all (sva's
        ``gene.subset.n``; the draws differ from R's).
    seed
        Seed of those draws.
    layer
        Layer with raw counts; ``None`` uses ``adata.X``.
    key_added
        Name of the output layer, ``varm`` table and ``uns`` entry.
    {copy}

    Returns
    -------
    ``None``, or the modified copy with ``copy=True``. Writes

    - ``layers[key_added]``: the adjusted counts (float64 holding integers);
    - ``varm[key_added]``: per gene, ``gamma_hat_<batch>`` (log-scale batch effect),
      ``gamma_star_<batch>`` (the value used: shrunk with ``shrink``), ``phi_hat_<batch>``
      (dispersion within the batch), ``phi_star`` (the target dispersion) and ``adjusted``
      (False for genes all zero in some batch);
    - ``uns[key_added]["params"]``: the call, with the common dispersion per batch.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> adata = adata[:, adata.X.sum(axis=0) > 10][:, :1000].copy()
    >>> bk.pp.combat_seq(adata, batch="type", group="condition")
    >>> adata.layers["combat_seq"].shape
    (7, 1000)
    """
    # Over 100 lines on purpose: every argument is validated here, in the docstring's order, before
    # anything is computed or written (a failing call leaves the AnnData as it was), then one engine
    # call and the writes; the checks are short and read best in one place.
    check_adata(adata)
    full_mod = check_bool(full_mod, "full_mod")
    shrink = check_bool(shrink, "shrink")
    shrink_disp = check_bool(shrink_disp, "shrink_disp")
    check_bool(copy, "copy")
    check_key(key_added, "key_added")
    if gene_subset_n is not None:
        if isinstance(gene_subset_n, bool) or not isinstance(gene_subset_n, int | np.integer) or gene_subset_n < 1:
            raise ValueError(f"gene_subset_n must be a positive integer or None, got {gene_subset_n!r}")
        if not shrink:
            raise ValueError("gene_subset_n only applies with shrink=True")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    x = get_matrix(adata, layer)
    kind = np.dtype(getattr(x, "dtype", np.asarray(x).dtype)).kind
    if kind not in "biuf":
        raise TypeError(f"{layer_name(layer)} must be numeric, got dtype {x.dtype}")
    x = dense(x).copy()
    if x.size == 0:
        raise ValueError(f"{layer_name(layer)} is empty (shape {x.shape})")
    if not np.isfinite(x).all():
        raise ValueError(
            f"{layer_name(layer)} contains {int((~np.isfinite(x)).sum())} missing or infinite values; "
            "ComBat-seq (edgeR's GLM) needs complete counts"
        )
    if looks_logged(x):
        raise ValueError(
            f"{layer_name(layer)} looks log-transformed (negative or small non-integer values); ComBat-seq needs "
            f"raw counts (layers: {list(adata.layers.keys())}). For log-scale data use bk.pp.combat"
        )
    if (x < 0).any():
        raise ValueError(f"{layer_name(layer)} contains {int((x < 0).sum())} negative values; counts must be >= 0")
    frac = x != np.round(x)
    if frac.any():
        raise ValueError(
            f"{layer_name(layer)} contains {int(frac.sum())} non-integer values; ComBat-seq needs integer counts "
            "(round estimated counts first)"
        )
    lib = x.sum(axis=1)
    if (lib == 0).any():
        raise ValueError(f"samples {list(map(str, adata.obs_names[lib == 0]))} have no counts; remove them")

    codes, levels = _batch_codes(adata, batch)
    n_batch = len(levels)
    sizes = np.bincount(codes, minlength=n_batch)
    if (sizes <= 1).any():
        single = [str(levels[i]) for i in np.flatnonzero(sizes <= 1)]
        raise ValueError(
            f"batch {single} has a single sample; ComBat-seq needs at least two samples per batch (sva: "
            "\"ComBat-seq doesn't support 1 sample per batch yet\"). Merge it with another batch, or use "
            "bk.pp.combat(..., mean_only=True) on log-scale data"
        )
    group_codes = None
    terms: list = []
    blocks: list = []
    names: list[str] = []
    if group is not None:
        if group == batch:
            raise ValueError(f"group is the batch column {batch!r}; pass the biological condition")
        gcol = obs_column(adata, group, what="group")
        na = pd.isna(gcol).to_numpy()
        if na.any():
            raise ValueError(f"group column {group!r} has {int(na.sum())} missing values; fill them in or drop those samples")
        glv, gcodes = np.unique(gcol.astype(str).to_numpy(), return_inverse=True)
        group_codes = np.asarray(gcodes).ravel()
        if full_mod and glv.size > 1:
            gm = np.column_stack([(group_codes == i).astype(np.float64) for i in range(1, glv.size)])
            blocks.append(gm)
            terms.append((group, list(range(gm.shape[1]))))
            names += [f"{group}[T.{lv}]" for lv in glv[1:]]
    cmod, cnames, cterms, cov_desc = _covariate_terms(adata, covariates)
    if cmod is not None:
        if batch in [t for t, _ in cterms]:
            raise ValueError(f"covariates include the batch column {batch!r}; list only biological covariates")
        off = len(names)
        terms += [(t, [i + off for i in idx]) for t, idx in cterms]
        blocks.append(cmod)
        names += cnames
    allmod = np.hstack(blocks) if blocks else None
    _check_confounding(codes, n_batch, allmod, names, terms, batch, "ComBat-seq")

    res = _cb.combat_seq(
        x,
        codes,
        group_codes,
        cmod,
        full_mod=full_mod,
        shrink=shrink,
        shrink_disp=shrink_disp,
        gene_subset_n=None if gene_subset_n is None else int(gene_subset_n),
        rng=int(seed),
    )

    cols = {}
    for name, arr in (("gamma_hat", res.gamma_hat), ("gamma_star", res.gamma_star), ("phi_hat", res.phi_hat)):
        for i, lv in enumerate(levels):
            cols[f"{name}_{_safe(lv)}"] = arr[i]
    cols["phi_star"] = res.phi_star
    cols["adjusted"] = res.adjusted_genes
    table = pd.DataFrame(cols, index=adata.var_names.copy())
    params = {
        "method": "ComBat-seq",
        "reference": "sva 3.46 ComBat_seq (Zhang et al. 2020) with edgeR 3.40 dispersions and GLM",
        "batch": batch,
        "batches": [str(lv) for lv in levels],
        "group": group,
        "covariates": cov_desc,
        "covariate_columns": names,
        "full_mod": full_mod,
        "shrink": shrink,
        "shrink_disp": shrink_disp,
        "gene_subset_n": gene_subset_n,
        "seed": int(seed),
        "layer": layer,
        "common_dispersion": {_safe(lv): float(res.common_dispersion[i]) for i, lv in enumerate(levels)},
        "dispersion_model": {_safe(lv): res.dispersion_design[i] for i, lv in enumerate(levels)},
        "n_genes_adjusted": int(res.adjusted_genes.sum()),
        "n_genes_zero_in_a_batch": int((~res.adjusted_genes).sum()),
    }

    adata = start(adata, copy)
    adata.layers[key_added] = res.corrected
    adata.varm[key_added] = table
    write_params(adata, key_added, params)
    return finish(adata, copy)
