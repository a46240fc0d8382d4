"""The salmon/kallisto/RSEM route into the count models, as R users take it (adapter side).

An AnnData made by :func:`bulkpy.io.read_quant` carries tximport's three matrices (estimated
``counts``, TPM ``abundance``, average transcript ``length``) and ``uns["tximport"]["params"]``.
The count models then follow the tximport vignette:

- DESeq2 (``DESeqDataSetFromTximport``): the estimated counts are rounded to integers, and with
  ``countsFromAbundance = "no"`` the lengths become gene × sample normalisation factors
  (``estimateSizeFactors`` with the ``avgTxLength`` assay); with ``"scaledTPM"`` or
  ``"lengthScaledTPM"`` the counts already account for length, so the lengths are not used
  ("using just counts from tximport").
- edgeR: the counts as they are, with a gene × sample offset made from the lengths
  (:func:`bulkpy._stats.tximport.edger_length_offset`, ``scaleOffset``).

This module only decides, from the AnnData, which of these applies and reads the lengths; the
arithmetic lives in the engines.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ._validate import dense

logger = logging.getLogger(__name__)

#: ``uns`` key written by :func:`bulkpy.io.read_quant`.
TXIMPORT_KEY = "tximport"
#: Layers :func:`bulkpy.io.read_quant` writes its counts to (``None`` is ``X``).
READ_QUANT_COUNT_LAYERS = ("counts", None)
LENGTH_LAYER = "length"
LENGTHS_AUTO = "auto"


@dataclass(frozen=True)
class QuantCounts:
    """How a count model treats the counts it was given.

    ``mode`` is read_quant's ``counts_from_abundance`` (``None`` when the counts did not come from
    it); ``lengths`` the samples × genes average transcript lengths to correct for (``None``: no
    length correction) and ``lengths_source`` where they were read.
    """

    mode: str | None
    lengths: np.ndarray | None
    lengths_source: str | None

    @property
    def from_tximport(self) -> bool:
        """The counts are tximport's (from read_quant, or given with their lengths)."""
        return self.mode is not None or self.lengths is not None


def read_quant_params(adata) -> Mapping | None:
    """``uns["tximport"]["params"]`` when ``adata`` came from :func:`bulkpy.io.read_quant`."""
    entry = adata.uns.get(TXIMPORT_KEY)
    params = entry.get("params") if isinstance(entry, Mapping) else None
    if isinstance(params, Mapping) and "counts_from_abundance" in params:
        return params
    return None


def _check_lengths(adata, key: str, shape: tuple[int, int]) -> np.ndarray:
    lens = dense(adata.layers[key])
    if lens.shape != shape:
        raise ValueError(
            f"layers[{key!r}] has shape {lens.shape}, the counts {shape}; lengths must be samples × genes"
        )
    if not np.all(np.isfinite(lens)) or np.any(lens <= 0):
        raise ValueError(
            f"layers[{key!r}] must hold finite positive average transcript lengths for every sample and gene "
            "(as tximport's 'length'); pass lengths=None to use no length correction"
        )
    return lens


def quant_counts(
    adata, layer: str | None, lengths, shape: tuple[int, int], *, caller: str, log: logging.Logger = logger
) -> QuantCounts:
    """Decide the tximport treatment of ``layer`` for ``lengths`` = ``"auto"``, ``None`` or a layer.

    ``"auto"``: counts that :func:`bulkpy.io.read_quant` wrote (``layer`` ``"counts"`` or ``None``
    on an object with ``uns["tximport"]``) are tximport's; their ``layers["length"]`` is used when
    ``counts_from_abundance`` was ``"no"``. ``None``: read_quant counts stay tximport's (rounded by
    DESeq2) but no lengths are used. A layer name: those lengths, whatever the object; refused for
    counts from abundance, which already account for length. Messages go to ``log`` (the
    caller's named logger).
    """
    if lengths is not None and not isinstance(lengths, str):
        raise TypeError(
            f"lengths must be 'auto', None or the name of a layer of lengths, got {type(lengths).__name__}"
        )
    params = read_quant_params(adata)
    mode = None
    if params is not None and layer in READ_QUANT_COUNT_LAYERS:
        mode = str(params["counts_from_abundance"])
    if lengths is None:
        return QuantCounts(mode, None, None)
    if lengths == LENGTHS_AUTO:
        if mode is None:
            return QuantCounts(None, None, None)
        if mode != "no":
            log.info(
                "%s: using just the counts from tximport (counts_from_abundance=%r already accounts for transcript length)",
                caller,
                mode,
            )
            return QuantCounts(mode, None, None)
        if LENGTH_LAYER not in adata.layers:
            log.warning(
                "%s: the counts come from bk.io.read_quant but layers[%r] is gone, so they are used without "
                "length correction",
                caller,
                LENGTH_LAYER,
            )
            return QuantCounts(mode, None, None)
        key = LENGTH_LAYER
    else:
        if lengths not in adata.layers:
            raise KeyError(
                f"lengths={lengths!r} is not a layer; layers: {list(adata.layers.keys())} (or lengths='auto' / None)"
            )
        if mode is not None and mode != "no":
            raise ValueError(
                f"the counts were made from abundance (counts_from_abundance={mode!r}), so they already account for "
                "transcript length; using the lengths as well would correct twice (tximport's vignette). Pass "
                "lengths='auto' or None, or read the files with counts_from_abundance='no'"
            )
        key = lengths
    return QuantCounts(mode, _check_lengths(adata, key, shape), f"layers[{key!r}]")


def round_counts(
    counts: np.ndarray, *, where: str, caller: str, log: logging.Logger = logger
) -> tuple[np.ndarray, int]:
    """tximport's estimated counts rounded to integers as ``DESeqDataSetFromTximport`` does (R's
    ``round``: halves to even), logged to ``log``. Returns the rounded counts and how many values
    changed."""
    rounded = np.round(counts)
    n = int(np.count_nonzero(rounded != counts))
    log.info(
        "%s: rounding the estimated counts in %s to integers, as DESeqDataSetFromTximport does (%d values changed)",
        caller,
        where,
        n,
    )
    return rounded, n


def non_integer_error(adata, counts: np.ndarray, where: str) -> ValueError | None:
    """The error for non-integer counts that did not come from tximport (``None`` if all are integers)."""
    frac = counts != np.round(counts)
    if not frac.any():
        return None
    hint = ""
    if counts.max() < 50:
        hint = " The values look log-transformed or normalised; pass the layer that holds raw counts."
    elif LENGTH_LAYER in adata.layers:
        hint = (
            f" If they are tximport's estimated counts with their average transcript lengths in "
            f"layers[{LENGTH_LAYER!r}], pass lengths={LENGTH_LAYER!r} (rounds them and corrects for length, as "
            "DESeqDataSetFromTximport)."
        )
    return ValueError(
        f"counts in {where} contain {int(frac.sum())} non-integer values; a count model needs integer counts. "
        "Estimated counts from salmon, kallisto or RSEM read with bk.io.read_quant are rounded automatically; "
        "otherwise round them yourself." + hint
    )


__all__ = [
    "LENGTHS_AUTO",
    "LENGTH_LAYER",
    "QuantCounts",
    "non_integer_error",
    "quant_counts",
    "read_quant_params",
    "round_counts",
]
