"""Plots of machine-learning results: ROC curves, confusion matrix, consensus matrix, predicted
against observed values, Kaplan–Meier curves of risk groups."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import get
from ._plotter import OKABE_ITO, category_colors, get_ax, legend, style_axes


def roc(adata, *, key: str = "classify", ax=None):
    """ROC curves of the out-of-fold predictions of :func:`bulkpy.tl.classify` (or of
    :func:`bulkpy.tl.predict` with true labels): one curve for two classes, one one-vs-rest
    curve per class otherwise, with the area under each in the legend.

    Parameters
    ----------
    adata
        Annotated data matrix holding the result.
    key
        The ``key_added`` of the classification or prediction.
    ax
        Axes to draw into; a new figure is made when ``None``.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` drawn into.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.tl.classify(adata, label="condition", cv=3, param_grid={}, n_features=100)
    >>> ax = bk.pl.roc(adata)
    >>> len(ax.get_lines())
    2
    """
    df = get.roc_curve(adata, key=key)
    ax = get_ax(ax)
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=0.8)
    groups = list(df["class"].cat.categories)
    for i, cls in enumerate(groups):
        d = df[df["class"] == cls]
        auc = float(d["auc"].iloc[0])
        name = f"{cls} (AUC {auc:.2f})" if len(groups) > 1 else f"AUC {auc:.2f}"
        ax.plot(d["fpr"], d["tpr"], color=OKABE_ITO[i % len(OKABE_ITO)], linewidth=1.5, label=name,
                drawstyle="default")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(frameon=False, fontsize="small", loc="lower right",
              title=f"positive class: {groups[0]}" if len(groups) == 1 else "one vs rest", title_fontsize="small")
    style_axes(ax)
    return ax


def confusion_matrix(adata, *, key: str = "classify", normalize: str | None = None, ax=None):
    """Confusion matrix of the (out-of-fold) predictions against the true classes.

    Parameters
    ----------
    adata
        Annotated data matrix holding the result.
    key
        The ``key_added`` of :func:`bulkpy.tl.classify` or :func:`bulkpy.tl.predict`.
    normalize
        ``None`` (counts), ``"true"`` (fraction of each true class), ``"pred"`` or ``"all"``.
    ax
        Axes to draw into; a new figure is made when ``None``.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` drawn into.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.tl.classify(adata, label="condition", cv=3, param_grid={}, n_features=100)
    >>> ax = bk.pl.confusion_matrix(adata)
    >>> len(ax.texts)
    4
    """
    df = get.confusion_matrix(adata, key=key, normalize=normalize)
    ax = get_ax(ax)
    m = df.to_numpy(dtype=float)
    finite = m[np.isfinite(m)]
    top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    ax.imshow(m, cmap="Blues", vmin=0, vmax=top, aspect="equal", interpolation="nearest")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            v = m[i, j]
            text = "" if not np.isfinite(v) else (f"{int(v)}" if normalize is None else f"{v:.2f}")
            ax.text(j, i, text, ha="center", va="center", fontsize="small",
                    color="white" if np.isfinite(v) and v > 0.6 * top else "black")
    ax.set_xticks(range(m.shape[1]), df.columns.astype(str), rotation=45, ha="right")
    ax.set_yticks(range(m.shape[0]), df.index.astype(str))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    return ax


def consensus_matrix(adata, *, key: str = "cluster", ax=None):
    """The consensus matrix of :func:`bulkpy.tl.cluster` (``method="consensus"``): samples
    ordered by cluster (and within a cluster by the average-linkage tree of ``1 - consensus``),
    white (never together) to dark blue (always together), a strip above naming the clusters.

    Parameters
    ----------
    adata
        Annotated data matrix holding the result.
    key
        The ``key_added`` of the clustering.
    ax
        Axes to draw into; a new figure is made when ``None``.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` drawn into.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.pp.vst(adata)
    >>> bk.tl.cluster(adata, layer="vst", k=2, n_resamples=20)
    >>> ax = bk.pl.consensus_matrix(adata)
    >>> ax.images[0].get_array().shape
    (7, 7)
    """
    from matplotlib.patches import Rectangle
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    from .._validate import obs_column

    cm = get.consensus_matrix(adata, key=key)
    labels = obs_column(adata, key, what="cluster column").astype(str).to_numpy()
    m = cm.to_numpy(dtype=float)
    n = m.shape[0]
    leaves = np.arange(n)
    if n > 1:
        leaves = leaves_list(linkage(squareform(1.0 - m, checks=False), method="average"))
    rank = np.empty(n, dtype=np.int64)
    rank[leaves] = np.arange(n)
    levels = sorted(set(labels), key=lambda s: (len(s), s))
    code = np.array([levels.index(lab) for lab in labels])
    order = np.lexsort((rank, code))
    ax = get_ax(ax)
    im = ax.imshow(m[np.ix_(order, order)], cmap="Blues", vmin=0, vmax=1, interpolation="nearest", aspect="equal")
    colors, _ = category_colors(labels[order])
    for i, c in enumerate(colors):
        ax.add_patch(Rectangle((i - 0.5, -1.5), 1.0, 0.8, color=c, clip_on=False))
    bounds = np.flatnonzero(np.diff(code[order])) + 0.5
    edges = np.concatenate([[-0.5], bounds, [n - 0.5]])
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):  # cluster name on its stretch of the strip
        ax.text((lo + hi) / 2, -1.1, labels[order][int(lo + 0.5)], ha="center", va="center", fontsize="small")
    for b in bounds:
        ax.axhline(b, color="0.3", linewidth=0.8)
        ax.axvline(b, color="0.3", linewidth=0.8)
    ax.set_ylim(n - 0.5, -1.6)
    names = cm.index.astype(str)[order]
    if n <= 40:
        ax.set_xticks(range(n), names, rotation=90, fontsize="small")
        ax.set_yticks(range(n), names, fontsize="small")
    else:  # too many to read: no sample names
        ax.set_xticks([])
        ax.set_yticks([])
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    cb = ax.figure.colorbar(im, ax=ax, shrink=0.6)
    cb.set_label("consensus", fontsize="small")
    cb.ax.tick_params(labelsize="small")
    ax.set_title(f"{key}: k = {len(levels)}", fontsize="medium", pad=14)
    return ax


def predicted_vs_observed(adata, *, key: str = "regress", ax=None):
    """Out-of-fold predictions of :func:`bulkpy.tl.regress` (or predictions of new samples made
    with true values) against the observed values: one point per sample coloured by outer fold,
    the identity line dashed, R², RMSE and Spearman's correlation in the title.

    Parameters
    ----------
    adata
        Annotated data matrix holding the result.
    key
        The ``key_added`` of the regression or prediction.
    ax
        Axes to draw into; a new figure is made when ``None``.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` drawn into.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> adata.obs["depth"] = adata.layers["counts"].sum(axis=1) / 1e6
    >>> bk.tl.regress(adata, target="depth", model="ridge", cv=3, param_grid={}, n_features=50)
    >>> ax = bk.pl.predicted_vs_observed(adata)
    >>> len(ax.collections[0].get_offsets())
    7
    """
    from .._stats.ml import regression_scores

    df = get.predictions(adata, key=key)
    ax = get_ax(ax)
    if "fold" in df.columns:
        folds = df["fold"].astype(str)
        colors, mapping = category_colors(pd.Categorical(folds, categories=sorted(folds.unique(), key=int)))
    else:
        colors, mapping = np.array([OKABE_ITO[4]] * len(df), dtype=object), {}
    ax.scatter(df["observed"], df["predicted"], c=list(colors), s=18, linewidths=0, alpha=0.85)
    lo = float(np.nanmin(df[["observed", "predicted"]].to_numpy()))
    hi = float(np.nanmax(df[["observed", "predicted"]].to_numpy()))
    pad = 0.04 * (hi - lo if hi > lo else 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], linestyle="--", color="0.6", linewidth=0.8)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")
    ax.set_xlabel("observed")
    ax.set_ylabel("predicted (out of fold)" if "fold" in df.columns else "predicted")
    s = regression_scores(df["observed"].to_numpy(), df["predicted"].to_numpy())
    ax.set_title(f"R² {s['r2']:.2f}, RMSE {s['rmse']:.3g}, Spearman {s['spearman']:.2f}", fontsize="medium")
    if mapping:
        legend(ax, mapping, title="fold")
    style_axes(ax)
    return ax


def kaplan_meier(adata, *, key: str = "survival", groupby: str | None = None, censor_marks: bool = True, ax=None):
    """Kaplan–Meier curves of the cross-validated risk groups of :func:`bulkpy.tl.survival` (or
    of any ``obs`` grouping), with censored samples marked and the log-rank p-value in the title.

    Parameters
    ----------
    adata
        Annotated data matrix holding the result.
    key
        The ``key_added`` of the survival run.
    groupby
        ``obs`` column defining the groups; ``None`` uses ``obs[f"{key}_risk_group"]``.
    censor_marks
        Mark censoring times with a ``+`` on the curves.
    ax
        Axes to draw into; a new figure is made when ``None``.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` drawn into.

    Examples
    --------
    >>> import numpy as np, bulkpy as bk
    >>> adata = bk.datasets.geuvadis85()[:, :300].copy()
    >>> rng = np.random.default_rng(0)
    >>> adata.obs["months"], adata.obs["died"] = rng.exponential(24, 85) + 1, rng.random(85) < 0.7
    >>> bk.tl.survival(adata, time="months", event="died", cv=3, n_features=20, param_grid={})
    >>> ax = bk.pl.kaplan_meier(adata)
    >>> len(ax.get_lines()) >= 2
    True
    """
    from .._stats.ml import logrank_test

    km = get.kaplan_meier(adata, key=key, groupby=groupby)
    ax = get_ax(ax)
    groups = list(km["group"].cat.categories)
    palette = {"low": OKABE_ITO[4], "intermediate": OKABE_ITO[0], "high": OKABE_ITO[5]}
    for i, grp in enumerate(groups):
        d = km[km["group"] == grp]
        color = palette.get(grp, OKABE_ITO[i % len(OKABE_ITO)]) if groupby is None else OKABE_ITO[i % len(OKABE_ITO)]
        n = int(d["n_risk"].iloc[0])
        ax.step(d["time"], d["survival"], where="post", color=color, linewidth=1.5, label=f"{grp} (n = {n})")
        if censor_marks:
            c = d[d["n_censor"] > 0]
            ax.plot(c["time"], c["survival"], linestyle="", marker="+", color=color, markersize=6)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(left=0)
    ax.set_xlabel("time")
    ax.set_ylabel("survival probability")
    if groupby is None:  # the stored test of the cross-validated groups
        pval = float(get.survival_metrics(adata, key=key).loc["overall", "logrank_p"])
    else:
        from .._ml import training as tr

        p = tr.stored_params(adata, key)
        t, e = tr.survival_outcome(adata, str(p["time"]), str(p["event"]))
        _, pval = logrank_test(t, e, adata.obs[groupby].astype(str).to_numpy())
    title = "cross-validated risk groups" if groupby is None else str(groupby)
    ax.set_title(f"{title}: log-rank p = {pval:.2g}", fontsize="medium")
    ax.legend(frameon=False, fontsize="small", loc="lower left")
    style_axes(ax)
    return ax
