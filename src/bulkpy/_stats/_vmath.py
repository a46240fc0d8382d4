"""``exp``, ``log``, dot products and sums that the compiler can vectorise.

A numba loop that calls ``math.exp`` or ``math.log`` calls the C library once per element
(4 ns and 4-9 ns here), and the loop around the call stays scalar. These functions are plain
arithmetic on the bits of a double, small enough that LLVM inlines them into the calling loop
(they are ``@inner``, so numba compiles each once), and the loop over samples becomes SIMD code
(about 1.5 ns per element). A caller that wraps them in a larger per-element function must make
that one ``@inline`` (edgeR's ``unit_nb_deviance``): LLVM does not inline it, and the loop stays
scalar. Kernels compile with ``error_model="numpy"`` (``_jit.py``): the default model's check of
every divisor is a branch that keeps a loop from being vectorised.

Both are the textbook reductions, accurate to one unit in the last place like the C library's
(the C library's results are themselves not correctly rounded, and differ between platforms):

- ``exp(x)``: ``x = k ln 2 + r`` with ``|r| <= ln 2 / 2`` (``ln 2`` split in two parts so the
  reduction is exact), ``exp(r)`` by its Taylor polynomial to degree 13 (truncation error below
  1e-17), scaled by ``2^k`` as two exact powers of two so that results down to the subnormal
  range and overflow to infinity come out right;
- ``log(x)``: ``x = 2^e m`` with ``m`` in ``[sqrt(2)/2, sqrt(2))``, ``f = m - 1``,
  ``s = f / (2 + f)`` and ``log(1 + f) = 2 atanh(s)`` as ``f - f²/2 + s (f²/2 + R(s²))`` with the
  minimax polynomial ``R`` of the classic fdlibm reduction (error below 2^-58.45 on this range);
  zero, negative, infinite, NaN and subnormal inputs give what ``math.log`` gives (``-inf`` for
  zero and ``nan`` for negative numbers instead of an exception).

:func:`vdot` and :func:`vsum` add in eight interleaved partial sums, combined in a fixed order:
the order depends only on the length, never on the machine's vector width, so results are the
same on every x86 or ARM machine; a sum in strict sample order is one chain of dependent
additions (four cycles each), eight times slower.

Used by the per-observation loops of the NB fits, where ``exp``/``log`` and the sums over samples
were most of the time. ``tests/test_vmath.py`` checks them against the C library and ``math.fsum``.
"""

from __future__ import annotations

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._jit import inner, kernel


def _bitcast(src, dst):
    """An intrinsic reinterpreting the bits of a ``src`` value as a ``dst`` value (same width)."""

    @intrinsic
    def cast(typingctx, x):  # pragma: no cover - compiled
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(dst))

        return dst(src), codegen

    return cast


_bits = _bitcast(types.float64, types.int64)  # the IEEE bits of a double as a signed integer
_double = _bitcast(types.int64, types.float64)  # the double with these IEEE bits


@intrinsic
def trailing_zeros(typingctx, x):  # pragma: no cover - compiled
    """Index of the lowest set bit of a nonzero ``uint64`` as an ``int64`` (one instruction; the
    result for 0 is undefined)."""

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], cgutils.true_bit)  # true: 0 is not a valid input

    return types.int64(types.uint64), codegen


_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 to 32 bits: k * _LN2_HI is exact for |k| < 2^20
_LN2_LO = 1.90821492927058770002e-10
_ROUND = 6755399441055744.0  # 1.5 * 2^52: adding it rounds to an integer, kept in the low bits
_ROUND_BITS = 0x4338000000000000
_EXP_HI = 710.0  # exp overflows beyond 709.78
_EXP_LO = -746.0  # and underflows to zero below -745.13

# 1/k! for k = 13 .. 2
_E13 = 1.0 / 6227020800.0
_E12 = 1.0 / 479001600.0
_E11 = 1.0 / 39916800.0
_E10 = 1.0 / 3628800.0
_E9 = 1.0 / 362880.0
_E8 = 1.0 / 40320.0
_E7 = 1.0 / 5040.0
_E6 = 1.0 / 720.0
_E5 = 1.0 / 120.0
_E4 = 1.0 / 24.0
_E3 = 1.0 / 6.0


@inner
def vexp(x):
    """``exp(x)`` (see the module docstring); ``nan`` in, ``nan`` out."""
    x = min(max(x, _EXP_LO), _EXP_HI) if x == x else x
    t = x * _LOG2E + _ROUND
    kf = t - _ROUND
    r = (x - kf * _LN2_HI) - kf * _LN2_LO
    q = _E13
    q = q * r + _E12
    q = q * r + _E11
    q = q * r + _E10
    q = q * r + _E9
    q = q * r + _E8
    q = q * r + _E7
    q = q * r + _E6
    q = q * r + _E5
    q = q * r + _E4
    q = q * r + _E3
    q = q * r + 0.5
    q = q * r + 1.0
    q = q * r + 1.0
    k = _bits(t) - _ROUND_BITS
    k1 = k >> 1
    k2 = k - k1
    return (q * _double((k1 + 1023) << 52)) * _double((k2 + 1023) << 52)


_MANT = 0x000FFFFFFFFFFFFF
_ONE_BITS = 0x3FF0000000000000
_SQRT2 = 1.4142135623730951
_TINY = 2.2250738585072014e-308  # smallest normal double
_TWO52 = 4503599627370496.0
_INF = float("inf")
_NAN = float("nan")
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01


@inner
def vlog(x):
    """``log(x)`` (see the module docstring)."""
    sub = x < _TINY
    xs = x * _TWO52 if sub else x
    b = _bits(xs)
    e = (b >> 52) - (1023 + 52 if sub else 1023)
    m = _double((b & _MANT) | _ONE_BITS)
    big = m > _SQRT2
    m = m * 0.5 if big else m
    e = e + 1 if big else e
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    rr = t2 + t1
    hfsq = 0.5 * f * f
    dk = float(e)
    out = dk * _LN2_HI - ((hfsq - (s * (hfsq + rr) + dk * _LN2_LO)) - f)
    if x == 0.0:
        out = -_INF
    if x < 0.0:
        out = _NAN
    if x != x:
        out = x
    if x == _INF:
        out = x
    return out


@inner
def vlog1p(z):
    """``log(1 + z)``: :func:`vlog` of ``u = 1 + z`` plus the rounding error of that sum,
    ``(z - (u - 1)) / u`` (within two units in the last place of ``math.log1p``)."""
    u = 1.0 + z
    c = (z - (u - 1.0)) / u
    if not (u > 0.0 and u < _INF):
        c = 0.0
    out = vlog(u) + c
    if u == 1.0:
        out = z
    return out


@inner
def vdot(a, b, n):
    """``sum(a[j] * b[j] for j < n)`` in eight interleaved partial sums (see the module docstring)."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    m = n - n % 8
    for j in range(0, m, 8):
        s0 += a[j] * b[j]
        s1 += a[j + 1] * b[j + 1]
        s2 += a[j + 2] * b[j + 2]
        s3 += a[j + 3] * b[j + 3]
        s4 += a[j + 4] * b[j + 4]
        s5 += a[j + 5] * b[j + 5]
        s6 += a[j + 6] * b[j + 6]
        s7 += a[j + 7] * b[j + 7]
    for j in range(m, n):
        s0 += a[j] * b[j]
    return ((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7))


@inner
def vsum(a, n):
    """``sum(a[j] for j < n)`` in eight interleaved partial sums (see the module docstring)."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    m = n - n % 8
    for j in range(0, m, 8):
        s0 += a[j]
        s1 += a[j + 1]
        s2 += a[j + 2]
        s3 += a[j + 3]
        s4 += a[j + 4]
        s5 += a[j + 5]
        s6 += a[j + 6]
        s7 += a[j + 7]
    for j in range(m, n):
        s0 += a[j]
    return ((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7))


@kernel
def exp_into(x, out):
    """``out[i] = vexp(x[i])`` for 1-d arrays (vectorised); for tests and array code."""
    for i in range(x.shape[0]):
        out[i] = vexp(x[i])


@kernel
def log_into(x, out):
    """``out[i] = vlog(x[i])`` for 1-d arrays (vectorised); for tests and array code."""
    for i in range(x.shape[0]):
        out[i] = vlog(x[i])


@kernel
def log1p_into(x, out):
    """``out[i] = vlog1p(x[i])`` for 1-d arrays (vectorised); for tests and array code."""
    for i in range(x.shape[0]):
        out[i] = vlog1p(x[i])


@kernel
def dot_of(a, b):
    """:func:`vdot` of two 1-d arrays of the same length."""
    return vdot(a, b, a.shape[0])


@kernel
def sum_of(a):
    """:func:`vsum` of a 1-d array."""
    return vsum(a, a.shape[0])
