"""``bulkpy._stats._vmath``: the vectorisable ``exp``/``log`` against the C library, and the
fixed order of the eight-way sums (what makes them give the same bits on every machine)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkpy._stats._vmath import dot_of, exp_into, log_into, sum_of


def _ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) / np.spacing(np.abs(b))


def _exp(x):
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    exp_into(x, out)
    return out


def _log(x):
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    log_into(x, out)
    return out


def test_exp_within_one_ulp_of_the_c_library():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-745.1, 709.78, 200_000), rng.uniform(-1, 1, 100_000), rng.uniform(-40, 40, 100_000)])
    ref = np.array([math.exp(v) for v in x])
    got = _exp(x)
    normal = ref >= np.finfo(float).tiny
    assert _ulps(got[normal], ref[normal]).max() <= 1.0
    # subnormal results: within one unit of the smallest subnormal
    assert np.abs(got[~normal] - ref[~normal]).max() <= 5e-324


def test_exp_special_values():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 709.78, 709.79, 1e6, -745.2, -1e6, -708.5])
    got = _exp(x)
    ref = np.array([np.inf if v >= 709.79 else math.exp(v) for v in x])
    np.testing.assert_array_equal(got, ref)


def test_log_within_one_ulp_of_the_c_library():
    rng = np.random.default_rng(1)
    x = np.concatenate([np.exp(rng.uniform(-744, 709, 200_000)), rng.uniform(0.5, 2.0, 100_000), [5e-324, 1e-310, 2.2e-308]])
    ref = np.array([math.log(v) for v in x])
    got = _log(x)
    nz = ref != 0
    assert _ulps(got[nz], ref[nz]).max() <= 1.0
    assert np.all(got[~nz] == 0.0)


def test_log_special_values():
    got = _log(np.array([0.0, -0.0, -1.0, -np.inf, np.inf, np.nan, 1.0]))
    assert got[0] == -np.inf and got[1] == -np.inf
    assert np.isnan(got[2]) and np.isnan(got[3]) and np.isnan(got[5])
    assert got[4] == np.inf and got[6] == 0.0


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=5e-324, max_value=1.7e308, allow_nan=False, allow_infinity=False))
def test_log_any_positive_double(v):
    ref = math.log(v)
    got = _log(np.array([v]))[0]
    assert got == ref or abs(got - ref) <= np.spacing(abs(ref))


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=-745.0, max_value=709.7, allow_nan=False))
def test_exp_any_double_in_range(v):
    ref = math.exp(v)
    got = _exp(np.array([v]))[0]
    assert abs(got - ref) <= max(np.spacing(ref), 5e-324)


def _eight_way(a):
    """The documented order: lane ``j % 8`` over whole blocks of eight, the tail into lane 0,
    lanes combined as ((0 + 4) + (1 + 5)) + ((2 + 6) + (3 + 7))."""
    n = len(a)
    m = n - n % 8
    lanes = [0.0] * 8
    for j in range(m):
        lanes[j % 8] += a[j]
    for j in range(m, n):
        lanes[0] += a[j]
    return ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 15, 16, 17, 1000, 1003])
def test_sums_follow_a_fixed_order(n):
    rng = np.random.default_rng(n)
    a = rng.normal(size=n) * 10.0 ** rng.integers(-8, 8, n)
    b = rng.normal(size=n)
    assert sum_of(a) == _eight_way(list(a))
    assert dot_of(a, b) == _eight_way(list(a * b))
    if n:
        assert abs(sum_of(a) - math.fsum(a)) <= 2 * n * np.finfo(float).eps * np.abs(a).sum()


def test_log1p_within_two_ulps_of_the_c_library():
    from bulkpy._stats._vmath import log1p_into

    rng = np.random.default_rng(2)
    x = np.concatenate([
        np.exp(rng.uniform(-700, 690, 200_000)), -np.exp(rng.uniform(-700, -1e-3, 100_000)),
        rng.uniform(-1e-8, 1e-8, 10_000), [0.0, 1e-300, -1e-300, 1.7e308, -1.0, np.inf, np.nan],
    ])  # fmt: skip
    out = np.empty_like(x)
    log1p_into(x, out)
    finite = np.isfinite(x) & (x > -1.0)
    ref = np.array([math.log1p(v) for v in x[finite]])
    nz = ref != 0
    assert _ulps(out[finite][nz], ref[nz]).max() <= 2.0
    assert np.all(out[finite][~nz] == ref[~nz])
    assert out[-3] == -np.inf and out[-2] == np.inf and np.isnan(out[-1])


def test_trailing_zeros_is_the_index_of_the_lowest_set_bit():
    import numba

    from bulkpy._stats._vmath import trailing_zeros

    @numba.njit
    def tz(words, out):
        for i in range(words.shape[0]):
            out[i] = trailing_zeros(words[i])

    rng = np.random.default_rng(1)
    words = np.concatenate([
        rng.integers(1, 2**63, 5_000, dtype=np.uint64) << rng.integers(0, 64, 5_000, dtype=np.uint64),
        np.uint64(1) << np.arange(64, dtype=np.uint64),
        np.array([2**64 - 1], dtype=np.uint64),
    ])
    words = words[words != 0]
    out = np.empty(words.size, dtype=np.int64)
    tz(words, out)
    expected = [(int(w) & -int(w)).bit_length() - 1 for w in words]
    np.testing.assert_array_equal(out, expected)
