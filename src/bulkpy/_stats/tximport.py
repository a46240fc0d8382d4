"""Transcript-to-gene summarisation of abundance, counts and length (tximport's arithmetic), and
the length corrections the tximport vignette feeds to the count models: DESeq2's ``normMatrix``
(``DESeqDataSetFromTximport`` + ``estimateSizeFactors``) and edgeR's offset matrix
(``calcNormFactors`` on length-corrected counts, then ``scaleOffset``).

Arrays are samples × transcripts in and samples × genes out, like ``AnnData.X``. The mapping of
transcripts to genes is an integer code per transcript (``0 <= code < n_genes``); the adapter
builds it from a tx2gene table. Everything is vectorised over transcripts and genes: sums per gene
are one ``np.bincount`` over a flattened (sample, gene) index, which adds the transcripts of a
gene in file order, as R's ``rowsum`` does.
"""

from __future__ import annotations

import numpy as np

COUNTS_FROM_ABUNDANCE = ("no", "scaledTPM", "lengthScaledTPM")


def _as_2d(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array (samples × transcripts), got shape {x.shape}")
    return x


def group_sum(x: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum the columns of ``x`` (samples × items) that share a code: samples × ``n_groups``."""
    x = _as_2d(x, "x")
    codes = np.asarray(codes, dtype=np.intp)
    n_samples, n_items = x.shape
    if codes.shape != (n_items,):
        raise ValueError(f"codes must have one entry per column of x ({n_items}), got shape {codes.shape}")
    if n_items and (codes.min() < 0 or codes.max() >= n_groups):
        raise ValueError(f"codes must lie in [0, {n_groups}), got range [{codes.min()}, {codes.max()}]")
    flat = (codes[None, :] + n_groups * np.arange(n_samples, dtype=np.intp)[:, None]).ravel()
    out = np.bincount(flat, weights=x.ravel(), minlength=n_samples * n_groups)
    return out.reshape(n_samples, n_groups)


def average_transcript_length(length: np.ndarray, codes: np.ndarray, n_genes: int) -> np.ndarray:
    """tximport's fallback gene length: each transcript's length averaged over samples, then the
    plain (unweighted) mean of those averages over the gene's transcripts. One value per gene."""
    length = _as_2d(length, "length")
    per_tx = length.mean(axis=0)
    codes = np.asarray(codes, dtype=np.intp)
    total = np.bincount(codes, weights=per_tx, minlength=n_genes)
    n = np.bincount(codes, minlength=n_genes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / n


def replace_missing_length(length: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Fill the NaN gene lengths (samples where all of a gene's transcripts have zero abundance).

    As tximport's ``replaceMissingLength``: where some samples of a gene have a length, the gap is
    the geometric mean of those samples' lengths; where no sample has one, ``fallback`` (the
    average transcript length, :func:`average_transcript_length`) is used.
    """
    length = _as_2d(length, "length").copy()
    missing = np.isnan(length)
    if not missing.any():
        return length
    present = ~missing
    n_present = present.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_len = np.where(present, np.log(np.where(present, length, 1.0)), 0.0)
        geo = np.exp(log_len.sum(axis=0) / n_present)
    fill = np.where(n_present > 0, geo, np.asarray(fallback, dtype=np.float64))
    length[missing] = np.broadcast_to(fill, length.shape)[missing]
    return length


def counts_from_abundance(
    counts: np.ndarray, abundance: np.ndarray, length: np.ndarray, method: str
) -> np.ndarray:
    """Counts made from abundances, scaled so that each sample keeps its total count.

    ``"scaledTPM"``: abundance scaled to the sample's count total. ``"lengthScaledTPM"``: abundance
    times the feature's length averaged over samples, then scaled to the count total (tximport's
    ``makeCountsFromAbundance``). ``"no"`` returns ``counts`` unchanged. A sample whose abundances
    are all zero gets zero counts (R would give NaN from 0/0).
    """
    counts = _as_2d(counts, "counts")
    if method == "no":
        return counts.copy()
    abundance = _as_2d(abundance, "abundance")
    if method == "scaledTPM":
        new = abundance.copy()
    elif method == "lengthScaledTPM":
        new = abundance * _as_2d(length, "length").mean(axis=0)[None, :]
    else:
        raise ValueError(
            f"counts_from_abundance={method!r} is not supported; choose one of {list(COUNTS_FROM_ABUNDANCE)}"
        )
    count_sum = counts.sum(axis=1)
    new_sum = new.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(new_sum > 0, count_sum / new_sum, 0.0)
    return new * scale[:, None]


def summarize_to_gene(
    abundance: np.ndarray,
    counts: np.ndarray,
    length: np.ndarray,
    codes: np.ndarray,
    n_genes: int,
    *,
    counts_from_abundance_method: str = "no",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gene-level abundance, counts and length from transcript-level matrices (tximport's
    ``summarizeToGene``).

    Abundance and counts are summed over each gene's transcripts; the length is the
    abundance-weighted mean transcript length, with zero-abundance gaps filled by
    :func:`replace_missing_length`; counts are then optionally rebuilt from abundance
    (:func:`counts_from_abundance`).

    Parameters
    ----------
    abundance, counts, length
        Samples × transcripts (TPM, estimated counts, effective length).
    codes
        Gene index of each transcript, in ``[0, n_genes)``.
    n_genes
        Number of genes.
    counts_from_abundance_method
        ``"no"``, ``"scaledTPM"`` or ``"lengthScaledTPM"``.

    Returns
    -------
    ``(abundance, counts, length)``, each samples × genes.
    """
    abundance = _as_2d(abundance, "abundance")
    counts = _as_2d(counts, "counts")
    length = _as_2d(length, "length")
    if not (abundance.shape == counts.shape == length.shape):
        raise ValueError(
            f"abundance, counts and length must have the same shape, got {abundance.shape}, {counts.shape}, {length.shape}"
        )
    ab_g = group_sum(abundance, codes, n_genes)
    cnt_g = group_sum(counts, codes, n_genes)
    weighted = group_sum(abundance * length, codes, n_genes)
    with np.errstate(divide="ignore", invalid="ignore"):
        len_g = weighted / ab_g
    # 0/0 where a sample has no abundance for any transcript of the gene
    len_g[ab_g == 0] = np.nan
    len_g = replace_missing_length(len_g, average_transcript_length(length, codes, n_genes))
    cnt_g = counts_from_abundance(cnt_g, ab_g, len_g, counts_from_abundance_method)
    return ab_g, cnt_g, len_g


# --------------------------------------------------------------------------------------------
# length corrections for the count models (the tximport vignette's "Downstream" section)
# --------------------------------------------------------------------------------------------


def length_norm_matrix(length: np.ndarray) -> np.ndarray:
    """Each gene's average transcript lengths divided by their geometric mean across samples
    (``normMat / exp(rowMeans(log(normMat)))``): DESeq2's ``normMatrix`` and the start of the
    vignette's edgeR offsets. Samples × genes in and out; lengths must be positive."""
    length = _as_2d(length, "length")
    return length / np.exp(np.mean(np.log(length), axis=0))


def scale_offset(lib_size: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """edgeR's ``scaleOffset``: shift each gene's log offsets (samples × genes) so that their mean
    over samples is the mean log library size, ``mean(log(lib.size)) + offset - rowMeans(offset)``.
    ``lib_size`` is one value per sample (for a ``DGEList``: ``lib.size * norm.factors``)."""
    offset = _as_2d(offset, "offset")
    lib = np.asarray(lib_size, dtype=np.float64).ravel()
    if lib.shape != (offset.shape[0],):
        raise ValueError(
            f"lib_size must have one value per sample ({offset.shape[0]}), got shape {lib.shape}"
        )
    return np.mean(np.log(lib)) + offset - offset.mean(axis=0)


def edger_length_offset(
    counts: np.ndarray,
    length: np.ndarray,
    *,
    lib_size: np.ndarray | None = None,
    method: str = "TMM",
    return_norm_factors: bool = False,
):
    """The gene × sample log offsets of the tximport vignette's edgeR route.

    As R::

        normMat <- txi$length; normMat <- normMat / exp(rowMeans(log(normMat)))
        normCts <- txi$counts / normMat
        eff.lib <- calcNormFactors(normCts) * colSums(normCts)
        normMat <- log(sweep(normMat, 2, eff.lib, "*"))
        y <- scaleOffset(DGEList(txi$counts), normMat)

    ``counts`` and ``length`` are samples × genes (tximport's estimated counts, not counts from
    abundance), all the genes of the experiment: the vignette makes the offsets before
    ``filterByExpr``. ``lib_size`` is the ``DGEList``'s library size (default: the counts' totals,
    as ``DGEList(counts)``); ``method`` the ``calcNormFactors`` method on the length-corrected
    counts (edgeR's default TMM). Returns ``y$offset`` as samples × genes (natural log), and with
    ``return_norm_factors`` also the normalisation factors of the length-corrected counts.
    """
    from .normalization import calc_norm_factors

    counts = _as_2d(counts, "counts")
    length = _as_2d(length, "length")
    if counts.shape != length.shape:
        raise ValueError(f"counts and length must have the same shape, got {counts.shape} and {length.shape}")
    nm = length_norm_matrix(length)
    norm_cts = counts / nm
    if method == "none":
        nf = np.ones(counts.shape[0])
    else:
        nf, _ = calc_norm_factors(norm_cts, method=method)
    eff_lib = nf * norm_cts.sum(axis=1)
    lib = counts.sum(axis=1) if lib_size is None else lib_size
    off = scale_offset(lib, np.log(nm * eff_lib[:, None]))
    return (off, nf) if return_norm_factors else off
