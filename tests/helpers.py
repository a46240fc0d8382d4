"""Assertion helpers used across the test suite."""

from __future__ import annotations

import numpy as np
import pandas as pd


def assert_adata_equal(a, b):
    """Two AnnData objects hold the same data in every slot (used to prove 'left untouched')."""
    assert a.shape == b.shape
    assert list(a.obs_names) == list(b.obs_names)
    assert list(a.var_names) == list(b.var_names)
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    assert set(a.layers.keys()) == set(b.layers.keys())
    assert set(a.obsm.keys()) == set(b.obsm.keys())
    assert set(a.varm.keys()) == set(b.varm.keys())
    assert set(a.uns.keys()) == set(b.uns.keys())
    for k in a.layers.keys():
        np.testing.assert_array_equal(_dense(a.layers[k]), _dense(b.layers[k]))
    if a.X is not None:
        np.testing.assert_array_equal(_dense(a.X), _dense(b.X))


def _dense(x):
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


def rel_diff(a, b):
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    return np.abs(a - b) / np.maximum(np.abs(b), 1e-300)
