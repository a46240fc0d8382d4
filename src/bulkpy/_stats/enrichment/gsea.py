"""Preranked gene set enrichment analysis with multilevel Monte-Carlo p-values (fgsea's method).

The engine follows fgsea 1.31 (Korotkevich, Sukhov, Budin, Shpak, Artyomov & Sergushichev,
bioRxiv 060012, 2016/2021), ``fgseaMultilevel``:

1. Genes are ranked by their statistic (decreasing; ties keep the input order, as R's stable
   radix sort does) and weighted by ``|stat| ** gsea_param``.
2. The enrichment score (ES) of a set is the weighted Kolmogorov-Smirnov running sum's largest
   deviation from zero (GSEA's score); the leading edge is the set's genes up to (for ES > 0) or
   from (ES < 0) the extreme.
3. A first sampling phase draws ``n_perm_simple`` random gene sets of each tested size (as fgsea,
   the sets of one draw are nested prefixes of one random ordering of ``max(size)`` genes). Their
   scores give NES = ES / mean of the random scores of the same sign, the fraction of random
   scores of the same sign (the denominator of the p-value), a crude p-value and the count of
   random scores more extreme than ES.
4. Sets whose crude p-value is precise enough (the simple-sampling error is not larger than the
   multilevel error) keep it. For the others, the adaptive multilevel splitting estimator is run
   once per set size and sign: a population of ``sample_size`` random sets is repeatedly cut at
   its median score and the upper half is duplicated and moved by a Markov chain that keeps
   every set above the current level, until the level passes the set's ES. The p-value is the
   product of the conditional probabilities of passing each level (mean of the log of Beta
   variables), corrected for the share of sets whose signed score has the same sign, and divided
   by the denominator of step 3. ``log2err`` is the expected standard deviation of ``log2(p)``.

Random numbers come from a counter-seeded splitmix64 generator inside the compiled kernels, so
results are the same for the same ``seed`` whatever the thread count (each permutation and each
(size, sign) ruler has its own stream). They are not fgsea's random numbers: p-values agree with
fgsea's in distribution (Monte-Carlo error ``log2err``), not digit for digit; ES and leading
edges are exact.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import special

from .._jit import I0 as _I0
from .._jit import I1 as _I1
from .._jit import inner, kernel
from .._vmath import trailing_zeros
from ..multitest import p_adjust_bh

# --------------------------------------------------------------------------------------------
# random numbers: splitmix64 (Steele, Lea & Flood 2014), one stream per task

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_INV53 = 1.0 / 9007199254740992.0  # 2 ** -53


@inner
def _mix64(z):
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@inner
def _next(state):
    state[0] += _GOLDEN
    return _mix64(state[0])


@inner
def _randint(state, n):
    """Uniform integer in ``[0, n)``."""
    return _below(_next(state), n)


@inner
def _below(z, n):
    """The integer ``_randint`` makes from the generator's output ``z``: uniform in ``[0, n)``."""
    u = np.float64(z >> _S11) * _INV53
    v = np.int64(u * n)
    return v if v < n else n - 1


@inner
def _stream(seed, a, b):
    """A generator state for the task ``(a, b)`` of a run seeded with ``seed``."""
    state = np.empty(1, dtype=np.uint64)
    state[0] = _mix64(np.uint64(seed) ^ _mix64(np.uint64(a) * _GOLDEN + np.uint64(b) + np.uint64(1)))
    return state


@inner
def _lower_bound(a, lo, hi, x):
    """First index in ``a[lo:hi]`` (sorted) whose value is >= ``x`` (``hi`` if none)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@inner
def _sort_int(a):
    """Sort an integer array in place (Shell sort; small code that compiles fast)."""
    n = a.shape[0]
    gap = 1
    while gap < n // 3:
        gap = 3 * gap + 1
    while gap > 0:
        for i in range(gap, n):
            v = a[i]
            j = i
            while j >= gap and a[j - gap] > v:
                a[j] = a[j - gap]
                j -= gap
            a[j] = v
        gap //= 3


@kernel
def _kth_smallest(a, kth):
    """The ``kth`` smallest value of the integer array ``a`` (reordered in place; Hoare's
    selection, so no full sort for a median)."""
    lo = 0
    hi = a.shape[0] - 1
    while lo < hi:
        pivot = a[(lo + hi) >> 1]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                tmp = a[i]
                a[i] = a[j]
                a[j] = tmp
                i += 1
                j -= 1
        if kth <= j:
            hi = j
        elif kth >= i:
            lo = i
        else:
            break
    return a[kth]


@inner
def _argsort_stable(v, out):
    """``out`` = indices sorting ``v`` ascending, ties by index (insertion sort, for short arrays)."""
    n = v.shape[0]
    for i in range(n):
        out[i] = i
    for i in range(1, n):
        idx = out[i]
        x = v[idx]
        j = i
        while j > 0 and v[out[j - 1]] > x:
            out[j] = out[j - 1]
            j -= 1
        out[j] = idx


@inner
def _draw_genes(state, n, k, out, scratch, swaps):
    """``k`` distinct genes of ``n`` uniformly at random into ``out[:k]``, in the order drawn
    (partial Fisher-Yates on ``scratch``, which must hold ``arange(n)`` and is restored
    afterwards)."""
    for t in range(k):
        j = t + _randint(state, n - t)
        swaps[t] = j
        tmp = scratch[t]
        scratch[t] = scratch[j]
        scratch[j] = tmp
        out[t] = scratch[t]
    for t in range(k - 1, -1, -1):
        j = swaps[t]
        tmp = scratch[t]
        scratch[t] = scratch[j]
        scratch[j] = tmp


# --------------------------------------------------------------------------------------------
# enrichment scores


@inner
def _es_of_sorted(r, pos, k, n):
    """GSEA score (std) of the set at sorted positions ``pos[:k]`` of the weights ``r``.

    Returns ``(es, i_top, i_bottom)``: the score and the within-set indices of the maximum of the
    running sum after a hit and of its minimum just before a hit (first occurrences).
    """
    nr = 0.0
    for j in range(k):
        nr += r[pos[j]]
    cum = 0.0
    max_p = -np.inf
    min_p = np.inf
    i_top = 0
    i_bot = 0
    miss = 1.0 / (n - k)
    for j in range(k):
        w = r[pos[j]]
        cum += w
        if nr > 0.0:
            top = cum / nr - (pos[j] - j) * miss
            bottom = top - w / nr
        else:
            top = (j + 1) / k - (pos[j] - j) * miss
            bottom = top - 1.0 / k
        if top > max_p:
            max_p = top
            i_top = j
        if bottom < min_p:
            min_p = bottom
            i_bot = j
    if max_p > -min_p:
        return max_p, i_top, i_bot
    if max_p < -min_p:
        return min_p, i_top, i_bot
    return 0.0, i_top, i_bot


@kernel
def _es_sets(r, indptr, pos):
    """Scores of many sets: ``pos[indptr[s]:indptr[s+1]]`` are the sorted positions of set ``s``."""
    m = indptr.shape[0] - 1
    n = r.shape[0]
    es = np.zeros(m)
    top = np.zeros(m, dtype=np.int64)
    bot = np.zeros(m, dtype=np.int64)
    for s in range(m):
        a = indptr[s]
        k = indptr[s + 1] - a
        e, t, b = _es_of_sorted(r, pos[a : a + k], k, n)
        es[s] = e
        top[s] = t
        bot[s] = b
    return es, top, bot


@kernel
def _null_es(r, sizes, out, first, seed):
    """Scores of random sets: ``out[i, u]`` is the score of the first ``sizes[u]`` genes of the
    random ordering number ``first + i`` (``sizes`` ascending), as fgsea's simple sampling draws
    nested sets from one random ordering per permutation."""
    n = r.shape[0]
    n_sizes = sizes.shape[0]
    kmax = sizes[n_sizes - 1]
    scratch = np.arange(n)
    swaps = np.empty(kmax, dtype=np.int64)
    srt = np.empty(kmax, dtype=np.int64)
    for i in range(out.shape[0]):
        state = _stream(seed, _I0, first + i)
        u = 0
        for t in range(kmax):
            j = t + _randint(state, n - t)
            swaps[t] = j
            x = scratch[j]
            scratch[j] = scratch[t]
            scratch[t] = x
            # insert x into srt[:t] keeping it sorted
            lo = _lower_bound(srt, _I0, t, x)
            for q in range(t, lo, -1):
                srt[q] = srt[q - 1]
            srt[lo] = x
            while u < n_sizes and sizes[u] == t + 1:
                out[i, u] = _es_of_sorted(r, srt, t + 1, n)[0]
                u += 1
        for t in range(kmax - 1, -1, -1):
            j = swaps[t]
            x = scratch[t]
            scratch[t] = scratch[j]
            scratch[j] = x


@kernel
def _null_counts(null, col, es):
    """For each set (null column ``col[i]``, observed score ``es[i]``): counts of random scores
    <= es, >= es, <= 0, >= 0, and the sums of the negative and positive parts."""
    m = es.shape[0]
    n_perm = null.shape[0]
    out = np.zeros((m, 6))
    for i in range(m):
        c = col[i]
        e = es[i]
        le = 0.0
        ge = 0.0
        lz = 0.0
        gz = 0.0
        ls = 0.0
        gs = 0.0
        for p in range(n_perm):
            v = null[p, c]
            if v <= e:
                le += 1
            if v >= e:
                ge += 1
            if v <= 0.0:
                lz += 1
                ls += v
            if v >= 0.0:
                gz += 1
                gs += v
        out[i, 0] = le
        out[i, 1] = ge
        out[i, 2] = lz
        out[i, 3] = gz
        out[i, 4] = ls
        out[i, 5] = gs
    return out


# --------------------------------------------------------------------------------------------
# multilevel splitting


@inner
def _pos_and_signed_es(r, pos, k, n, ns):
    """(positive-part score, signed score) of the sorted set ``pos[:k]`` with weight sum ``ns``:
    fgsea's ``calcPositiveES`` and ``calcES``."""
    q1 = 1.0 / (n - k)
    q2 = 1.0 / ns
    cur = 0.0
    res_pos = 0.0
    res = 0.0
    last = -1
    for j in range(k):
        p = pos[j]
        cur -= q1 * (p - last - 1)
        if abs(cur) > abs(res):
            res = cur
        cur += q2 * r[np.uint64(p)]
        if abs(cur) > abs(res):
            res = cur
        if cur > res_pos:
            res_pos = cur
        last = p
    return res_pos, res


_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U6 = np.uint64(6)
_U63 = np.uint64(63)


@inner
def _sorted_members(mem, bits, out):
    """The sample's members ``mem`` in ascending order, into ``out``: read from its bitmap
    ``bits``, or for a small set (about k log k below the bitmap's number of words) sorted."""
    k = mem.shape[0]
    if 3 * k * math.log2(k + 1) < bits.shape[0] + 2 * k:
        for j in range(k):
            out[j] = mem[j]
        _sort_int(out[:k])
        return
    _members(bits, out)


@inner
def _members(bits, out):
    """Positions of the set bits of the bitmap ``bits``, ascending, into ``out``."""
    m = 0
    for w in range(bits.shape[0]):
        word = bits[w]
        while word:
            out[m] = (w << 6) + trailing_zeros(word)
            m += 1
            word &= word - _U1


@inner
def _perturb(r, mem, bits, cnt, csum, ends, chunk_of, ns, bound, iters, state, q1, cand):
    """One round of fgsea's ``perturbate`` over the population: ``iters`` Metropolis proposals on
    each sample in turn (replace a random member by a random gene), each accepted iff the sample's
    positive-part score stays above ``bound``. A sample is held as its members (``mem``,
    unordered: the member replaced is ``mem[randint(k)]``) and a bitmap of gene positions
    (``bits``), with member counts and weight sums per chunk of positions (chunk ``c`` covers
    positions below ``ends[c]``; ``chunk_of`` maps a position to its chunk): a move costs O(1), and the check walks the chunks, skipping those
    whose best case stays below the bound and reading the others' members from the bitmap. A
    member whose prefix exceeds the bound (``cand``: position, misses and weight before it,
    kept between calls) accepts most moves in O(1). Accept/reject decisions are exact (the
    check is fgsea's), only faster. Updates each sample's weight sum ``ns`` and returns the number
    of moves (accepted proposals, plus proposals of the gene itself)."""
    # Over 100 lines on purpose: the innermost loop of the multilevel method (most of GSEA's time),
    # kept as one compiled body so that the bookkeeping stays in registers; one call per round
    # (not per sample) saves making six array views per call, which for small sets (one or two
    # proposals per sample and round) cost more than the proposals. Three things make it
    # about 1.2x faster without changing a decision or a random number: indices are unsigned
    # (numba then skips the wraparound of negative indices), the generator's counter is a local
    # (an array element would be stored and reloaded at every draw), and each proposal draws the
    # next one and reads its table entries early (``touch``), so that those loads are under way
    # while this proposal's branches resolve.
    n = r.shape[0]
    ss = mem.shape[0]
    k = mem.shape[1]
    nch = ends.shape[0]
    moves = 0
    tiny = 1e-9 * max(r[0], r[n - 1])  # r is sorted
    st = state[0]
    touch = np.int64(0)
    touch_r = 0.0
    for s in range(ss):
        ns_s = ns[s]
        cand_val = np.int64(cand[s, 0])
        cand_x = np.int64(cand[s, 1])
        cand_y = cand[s, 2]
        st += _GOLDEN
        t_next = np.uint64(_below(_mix64(st), k))
        st += _GOLDEN
        new_next = _below(_mix64(st), n)
        for it in range(iters):
            t = t_next
            new = new_next
            if it + 1 < iters:
                st += _GOLDEN
                t_next = np.uint64(_below(_mix64(st), k))
                st += _GOLDEN
                new_next = _below(_mix64(st), n)
                um = np.uint64(mem[s, t_next])
                un = np.uint64(new_next)
                touch ^= chunk_of[un] ^ chunk_of[um] ^ np.int64(bits[s, un >> _U6] & _U1)
                touch_r = max(touch_r, r[un] + r[um])
            old = mem[s, t]
            uold = np.uint64(old)
            unew = np.uint64(new)
            wn = unew >> _U6
            bn = _U1 << (unew & _U63)
            if bits[s, wn] & bn:
                if new == old:
                    moves += 1
                continue
            wo = uold >> _U6
            bo = _U1 << (uold & _U63)
            bits[s, wo] ^= bo
            bits[s, wn] |= bn
            mem[s, t] = new
            oc = np.uint64(chunk_of[uold])
            nc = np.uint64(chunk_of[unew])
            cnt[s, oc] -= 1
            cnt[s, nc] += 1
            csum[s, oc] -= r[uold]
            csum[s, nc] += r[unew]
            ns2 = ns_s - r[uold] + r[unew]
            if old == cand_val:
                cand_val = -1
            if cand_val >= 0:
                if old < cand_val:
                    cand_x += 1
                    cand_y -= r[uold]
                if new < cand_val:
                    cand_x -= 1
                    cand_y += r[unew]
            # a sample with (numerically) no weight left has no positive score: 1 / ns2 = 0 rejects
            q2 = 1.0 / ns2 if ns2 > tiny else 0.0
            if cand_val >= 0 and q2 * cand_y - q1 * cand_x > bound:
                moves += 1
                ns_s = ns2
                continue
            ok = False
            cur_x = 0
            cur_y = 0.0
            last = -1
            start = 0
            for c in range(nch):
                end = ends[c]
                if q2 * (cur_y + csum[s, c]) - q1 * cur_x < bound:
                    cur_y += csum[s, c]
                    cur_x += end - last - 1 - cnt[s, c]
                    last = end - 1
                    start = end
                    continue
                w0 = start >> 6
                w1 = (end - 1) >> 6
                for w in range(w0, w1 + 1):
                    word = bits[s, np.uint64(w)]
                    if w == w0:
                        word &= ~((_U1 << np.uint64(start & 63)) - _U1)
                    if w == w1 and (end & 63) != 0:
                        word &= (_U1 << np.uint64(end & 63)) - _U1
                    while word:
                        p = (w << 6) + trailing_zeros(word)
                        word &= word - _U1
                        cur_y += r[np.uint64(p)]
                        cur_x += p - last - 1
                        if q2 * cur_y - q1 * cur_x > bound:
                            ok = True
                            cand_val = p
                            cand_x = cur_x
                            cand_y = cur_y
                            break
                        last = p
                    if ok:
                        break
                if ok:
                    break
                cur_x += end - 1 - last
                last = end - 1
                start = end
            if ok:
                moves += 1
                ns_s = ns2
                continue
            # reject: put the sample back
            bits[s, wn] ^= bn
            bits[s, wo] |= bo
            mem[s, t] = old
            cnt[s, oc] += 1
            cnt[s, nc] -= 1
            csum[s, oc] += r[uold]
            csum[s, nc] -= r[unew]
            if new == cand_val:
                cand_val = -1
            if cand_val >= 0:
                if old < cand_val:
                    cand_x -= 1
                    cand_y += r[uold]
                if new < cand_val:
                    cand_x += 1
                    cand_y -= r[unew]
        cand[s, 0] = cand_val
        cand[s, 1] = cand_x
        cand[s, 2] = cand_y
        ns[s] = ns_s
    state[0] = st
    if touch < 0 or touch_r < 0.0:  # never (indices and weights are >= 0); keeps the early loads
        moves = -1
    return moves


@inner
def _halve(r, mem, bits, ns, n, k, scores, corr, filled, srt, mem2, bits2, srt2):
    """fgsea's ``duplicateSamples``: record the lower half of the population's positive-part
    scores (and, per recorded level, how many samples above it have a positive signed score),
    then make the new population of copies of the upper half (each twice) plus the median, in
    ``mem2``/``bits2``/``srt2`` (the caller swaps them with ``mem``/``bits``/``srt``: no copy
    back). ``srt`` receives each sample's sorted members first."""
    ss = mem.shape[0]
    pos_es = np.empty(ss)
    is_pos = np.zeros(ss, dtype=np.bool_)
    n_pos = 0
    for s in range(ss):
        _sorted_members(mem[s], bits[s], srt[s])
        pos_es[s], signed = _pos_and_signed_es(r, srt[s], k, n, ns[s])
        if signed > 0:
            is_pos[s] = True
            n_pos += 1
    order = np.empty(ss, dtype=np.int64)
    _argsort_stable(pos_es, order)
    half = (ss + 1) // 2
    for i in range(half):
        s = order[i]
        scores[filled + i] = pos_es[s]
        if is_pos[s]:
            n_pos -= 1
        corr[filled + i] = n_pos
    src = np.empty(ss, dtype=np.int64)
    row = 0
    for i in range((ss - 1) // 2):
        src[row] = order[ss - 1 - i]
        src[row + 1] = order[ss - 1 - i]
        row += 2
    src[row] = order[ss >> 1]
    _take_rows(mem, src, mem2)
    _take_rows(bits, src, bits2)
    _take_rows(srt, src, srt2)
    ns_old = ns.copy()
    for s in range(ss):
        ns[s] = ns_old[src[s]]
    return filled + half


@inner
def _take_rows(a, src, out):
    """``out[:] = a[src]`` as loops: numba's fancy-indexing assignment compiles its shape-mismatch
    error message (string formatting), which cost seconds on a first call."""
    for s in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[s, j] = a[src[s], j]


@inner
def _chunks(r, srt, k, n, ends, chunk_of, cnt, csum, ns):
    """Chunk the positions for one level: ends at the population medians of the members at evenly
    spaced ranks (fgsea's ``chunkLastElement``), and each sample's count and weight per chunk."""
    ss = srt.shape[0]
    nch = ends.shape[0]
    tmp = np.empty(ss, dtype=np.int64)
    at = 0
    for c in range(nch - 1):
        at += (k + c) // nch
        for s in range(ss):
            tmp[s] = srt[s, at]
        ends[c] = _kth_smallest(tmp, ss // 2)
    lo = 0
    for c in range(nch):
        for p in range(lo, ends[c]):
            chunk_of[p] = c
        lo = max(lo, ends[c])
    for s in range(ss):
        for c in range(nch):
            cnt[s, c] = 0
            csum[s, c] = 0.0
        tot = 0.0
        for j in range(k):
            p = srt[s, j]
            c = chunk_of[p]
            cnt[s, c] += 1
            csum[s, c] += r[p]
            tot += r[p]
        ns[s] = tot


@kernel
def _ruler(r, k, sample_size, target, seed, eps, max_levels):
    """The multilevel ruler for sets of size ``k`` on weights ``r`` (fgsea's ``EsRuler.extend``):
    levels of the positive-part score up to ``target``. Returns the recorded scores (51 per level
    for ``sample_size=101``) and the matching sign-correction counts."""
    n = r.shape[0]
    ss = sample_size
    half = (ss + 1) // 2
    state = _stream(seed, _I1, k)
    mem = np.empty((ss, k), dtype=np.int64)
    bits = np.zeros((ss, (n + 63) >> 6), dtype=np.uint64)
    srt = np.empty((ss, k), dtype=np.int64)
    ns = np.empty(ss)
    scratch = np.arange(n)
    swaps = np.empty(k, dtype=np.int64)
    for s in range(ss):
        _draw_genes(state, n, k, mem[s], scratch, swaps)
        for j in range(k):
            p = mem[s, j]
            bits[s, p >> 6] |= _U1 << np.uint64(p & 63)
        _sorted_members(mem[s], bits[s], mem[s])  # the sample starts in ascending order
        ns[s] = 0.0  # set per level by _chunks; _halve needs the first
        for j in range(k):
            ns[s] += r[mem[s, j]]
    cap = half * (max_levels + 1)
    scores = np.empty(cap)
    corr = np.empty(cap, dtype=np.int64)
    mem2 = np.empty_like(mem)
    bits2 = np.empty_like(bits)
    srt2 = np.empty_like(srt)
    filled = _halve(r, mem, bits, ns, n, k, scores, corr, _I0, srt, mem2, bits2, srt2)
    mem, mem2 = mem2, mem
    bits, bits2 = bits2, bits
    srt, srt2 = srt2, srt
    q1 = 1.0 / (n - k)
    iters = max(1, int(k * 0.1))
    need = ss * k
    # about 2 sqrt(k) chunks (fgsea: sqrt(k)): moves are O(1) here, so finer chunks only make
    # the check cheaper
    nch = max(1, int(math.sqrt(4 * k)))
    ends = np.empty(nch, dtype=np.int64)
    ends[nch - 1] = n
    chunk_of = np.empty(n, dtype=np.int64)
    cnt = np.zeros((ss, nch), dtype=np.int64)
    csum = np.zeros((ss, nch))
    cand = np.empty((ss, 3))
    levels = 1
    while scores[filled - 1] <= target - 1e-10 and levels < max_levels:
        bound = scores[filled - 1]
        _chunks(r, srt, k, n, ends, chunk_of, cnt, csum, ns)
        cand[:, 0] = -1.0
        moves = 0
        proposals = 0
        limit = 200 * need
        while moves < need and proposals < limit:
            moves += _perturb(r, mem, bits, cnt, csum, ends, chunk_of, ns, bound, iters, state, q1, cand)
            proposals += iters * ss
        prev = bound
        filled = _halve(r, mem, bits, ns, n, k, scores, corr, filled, srt, mem2, bits2, srt2)
        mem, mem2 = mem2, mem
        bits, bits2 = bits2, bits
        srt, srt2 = srt2, srt
        levels += 1
        if scores[filled - 1] <= prev:
            break  # the median did not move up (as fgsea, give up)
        if eps != 0.0 and (filled // half) > -math.log2(0.5 * eps):
            break
    out_s = np.empty(filled)
    out_c = np.empty(filled, dtype=np.int64)
    for i in range(filled):
        out_s[i] = scores[i]
        out_c[i] = corr[i]
    return out_s, out_c


def _ruler_pvalues(scores, corr, es_abs, sample_size):
    """fgsea's ``EsRuler::getPvalue`` for the absolute scores ``es_abs``: returns the p-values
    (not yet divided by the sign share) and whether the estimate is reliable."""
    ss = sample_size
    half = (ss + 1) // 2
    last = scores[-1]
    idx = np.searchsorted(scores, es_abs, side="left")
    beyond = es_abs >= last
    idx = np.where(beyond, scores.size - 1, idx)
    good = ~(es_abs > last + 1e-10)
    lev = idx // half
    rem = ss - idx % half
    log_level = special.digamma(half) - special.digamma(ss + 1)
    log_p = lev * log_level + special.digamma(rem + 1) - special.digamma(ss + 1)
    log_corr = special.digamma(corr[idx] + 1) - special.digamma(rem + 1)
    p = np.clip(np.exp(log_p + log_corr), 0.0, 1.0)
    return p, good & (np.exp(log_corr) >= 0.5)


def multilevel_error(p, sample_size):
    """fgsea's ``multilevelError``: expected standard deviation of ``log2(p)``."""
    p = np.asarray(p, dtype=np.float64)
    one = special.polygamma(1, (sample_size + 1) / 2) - special.polygamma(1, sample_size + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(np.floor(-np.log2(p) + 1) * one) / math.log(2)


# --------------------------------------------------------------------------------------------
# the whole analysis


def rank_order(stats: np.ndarray) -> np.ndarray:
    """Indices that sort ``stats`` decreasingly, ties in input order (R's ``sort(decreasing=TRUE)``)."""
    return np.argsort(-np.asarray(stats, dtype=np.float64), kind="stable")


def _seed_int(seed) -> int:
    return int(np.random.SeedSequence(int(seed)).generate_state(1, dtype=np.uint64)[0])


def _null_sample(r, sizes, n_perm, seed):
    """Random scores for ``n_perm`` permutations, split over threads (each permutation has its own
    random stream, so the split does not change the result)."""
    out = np.zeros((n_perm, sizes.size))
    workers = min(_n_threads(), max(1, n_perm // 50))
    bounds = np.linspace(0, n_perm, workers + 1).astype(int)
    jobs = [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    if len(jobs) == 1:
        _null_es(r, sizes, out, 0, seed)
        return out
    with ThreadPoolExecutor(max_workers=len(jobs)) as ex:
        list(ex.map(lambda ab: _null_es(r, sizes, out[ab[0] : ab[1]], ab[0], seed), jobs))
    return out


def _n_threads() -> int:
    try:
        import numba

        return max(1, int(numba.get_num_threads()))
    except Exception:  # pragma: no cover
        return max(1, os.cpu_count() or 1)


def gsea(
    stats: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    *,
    n_perm_simple: int = 1000,
    sample_size: int = 101,
    eps: float = 0.0,
    seed: int = 0,
    gsea_param: float = 1.0,
    max_levels: int = 1000,
) -> dict[str, np.ndarray]:
    """Preranked GSEA of the sets ``indices[indptr[s]:indptr[s+1]]`` (gene indices into ``stats``,
    unique within a set, each set with 1 to ``len(stats) - 1`` genes).

    Returns a dict of arrays, one entry per set: ``es``, ``nes``, ``pvalue``, ``padj``,
    ``log2err``, ``size``, and the leading edge as ``le_indptr``/``le_indices`` (gene indices into
    ``stats`` in leading-edge order: from the top of the ranking for ES > 0, from the bottom for
    ES < 0), plus ``n_more_extreme`` and ``mode_fraction`` of the simple sampling.
    """
    stats, indptr, indices, sizes = _check_sets(stats, indptr, indices)
    sample_size = max(3, int(sample_size))
    if sample_size % 2 == 0:
        sample_size += 1
    eps = float(max(0.0, min(1.0, eps)))

    # enrichment scores on the ranking (fgsea's calcGseaStat for every set at once)
    order = rank_order(stats)
    r = np.abs(stats[order]) ** gsea_param
    pos = _ranked_positions(order, indptr, indices, sizes)
    es, i_top, i_bot = _es_sets(r, indptr, pos)
    le_indptr, le_indices = _leading_edges(es, i_top, i_bot, indptr, pos, sizes, order)

    # fgseaSimple's sampling for NES and the first p-values; the multilevel method where it is
    # more accurate
    useed = _seed_int(seed)
    sim = _simple_sampling(r, es, sizes, int(n_perm_simple), useed)
    nperm = float(n_perm_simple)
    use_ml = (~np.isnan(sim["pvalue"])) & (
        multilevel_error((sim["n_more"] + 1) / (nperm + 1), sample_size) < _simple_error(sim["n_more"], nperm)
    )
    pvalue = sim["pvalue"].copy()
    log2err = np.where(
        np.isnan(sim["pvalue"]),
        np.nan,
        (1 / math.log(2)) * np.sqrt(special.polygamma(1, sim["n_more"] + 1) - special.polygamma(1, nperm + 1)),
    )
    if use_ml.any():
        _multilevel_pvalues(
            r, es, sizes, use_ml, (sim["mode"] + 1) / (nperm + 1), pvalue, log2err,
            eps=eps, useed=useed, sample_size=sample_size, max_levels=max_levels,
        )  # fmt: skip
    if eps > 0:
        tiny = pvalue < eps
        pvalue[tiny] = eps
        log2err[tiny] = np.nan
    return {
        "es": es,
        "nes": sim["nes"],
        "pvalue": pvalue,
        "padj": p_adjust_bh(pvalue),
        "log2err": log2err,
        "size": sizes,
        "le_indptr": le_indptr,
        "le_indices": le_indices,
        "n_more_extreme": sim["n_more"],
        "mode_fraction": sim["mode"],
    }


def _check_sets(stats, indptr, indices):
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim != 1 or not np.isfinite(stats).all():
        raise ValueError("stats must be a 1-d array of finite numbers")
    n = stats.size
    indptr = np.asarray(indptr, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    sizes = np.diff(indptr)
    if indptr.size - 1 == 0:
        raise ValueError("no gene set to test")
    if sizes.min() < 1 or sizes.max() >= n:
        raise ValueError(f"set sizes must be between 1 and {n - 1} (the number of ranked genes minus one)")
    return stats, indptr, indices, sizes


def _ranked_positions(order, indptr, indices, sizes) -> np.ndarray:
    """Positions of each set's genes in the ranking, sorted within the set (CSR layout)."""
    n, m = order.size, indptr.size - 1
    inv = np.empty(n, dtype=np.int64)
    inv[order] = np.arange(n)
    set_id = np.repeat(np.arange(m), sizes)
    pos = inv[indices]
    srt = np.lexsort((pos, set_id))
    return np.ascontiguousarray(pos[srt])


def _leading_edges(es, i_top, i_bot, indptr, pos, sizes, order):
    """Leading edges as gene indices: from the top of the ranking for ES > 0, from the bottom for
    ES < 0 (CSR layout)."""
    le_len = np.where(es > 0, i_top + 1, np.where(es < 0, sizes - i_bot, 0))
    le_indptr = np.concatenate([[0], np.cumsum(le_len)])
    le_pos = np.empty(int(le_len.sum()), dtype=np.int64)
    for s in np.flatnonzero(le_len):  # loop over sets, not genes
        a = indptr[s]
        if es[s] > 0:
            chunk = pos[a : a + le_len[s]]
        else:
            chunk = pos[a + i_bot[s] : indptr[s + 1]][::-1]
        le_pos[le_indptr[s] : le_indptr[s + 1]] = chunk
    return le_indptr, order[le_pos]


def _simple_sampling(r, es, sizes, n_perm: int, useed: int) -> dict[str, np.ndarray]:
    """fgsea's simple sampling: random sets of each size give the NES denominators, the simple
    p-values, the number of more extreme null scores and the size of the null's tail of the
    same sign (``mode``); NES and p are NA when fewer than 10 null scores share the sign."""
    usizes, col = np.unique(sizes, return_inverse=True)
    null = _null_sample(r, usizes.astype(np.int64), n_perm, np.uint64(useed))
    cnt = _null_counts(null, col.astype(np.int64), es)
    le_es, ge_es, le_zero, ge_zero, le_sum, ge_sum = cnt.T
    with np.errstate(divide="ignore", invalid="ignore"):
        ge_mean = ge_sum / ge_zero
        le_mean = le_sum / le_zero
        denom = np.where(es > 0, ge_mean, np.abs(le_mean))
        nes = np.where(denom != 0, es / denom, np.nan)
        p_simple = np.minimum((1 + le_es) / (1 + le_zero), (1 + ge_es) / (1 + ge_zero))
    p_simple = np.where(np.isnan(nes), np.nan, p_simple)
    mode = np.where(es >= 0, ge_zero, le_zero)
    bad = mode < 10
    nes[bad] = np.nan
    p_simple[bad] = np.nan
    return {"nes": nes, "pvalue": p_simple, "n_more": np.where(es > 0, ge_es, le_es), "mode": mode}


def _simple_error(n_more, nperm: float) -> np.ndarray:
    """Half the width (log2) of the simple p-value's 95% interval, as fgsea compares it."""
    crude = np.log2((n_more + 1) / (nperm + 1))
    with np.errstate(divide="ignore"):
        left = np.log2(special.betaincinv(np.maximum(n_more, 0), nperm - n_more + 1, 0.025))
    left = np.where(n_more == 0, -np.inf, left)
    right = np.log2(special.betaincinv(n_more + 1, np.maximum(nperm - n_more, 1e-300), 0.975))
    right = np.where(nperm - n_more == 0, 0.0, right)
    return 0.5 * np.maximum(crude - left, right - crude)


def _multilevel_pvalues(r, es, sizes, use_ml, denom_prob, pvalue, log2err, *, eps, useed, sample_size, max_levels):
    """fgseaMultilevel for the sets ``use_ml``: one adaptive ruler per set size and sign (shared
    by the sets of that size, as fgsea does), run on threads; fills ``pvalue`` and ``log2err``."""
    tasks = []
    for k in np.unique(sizes[use_ml]):
        grp = np.flatnonzero(use_ml & (sizes == k))
        e = es[grp]
        geps = eps * denom_prob[grp].min()
        if e.max() >= 0:
            tasks.append((int(k), 0, float(abs(e.max())), grp[e >= 0], geps))
        if e.min() < 0:
            tasks.append((int(k), 1, float(abs(e.min())), grp[e < 0], geps))
    r_pos = np.ascontiguousarray(r)
    r_neg = np.ascontiguousarray(r[::-1])

    def run(task):
        k, sign, target, _, geps = task
        rr = r_neg if sign else r_pos
        tseed = np.uint64(_seed_int(useed ^ (k * 2 + sign + 1)))
        return _ruler(rr, k, sample_size, target, tseed, geps, max_levels)

    tasks.sort(key=lambda t: -t[0])  # largest sets first: better balance across threads
    workers = min(_n_threads(), len(tasks))
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            rulers = list(ex.map(run, tasks))
    else:
        rulers = [run(t) for t in tasks]
    for (_, _, _, members, _), (scores, corr) in zip(tasks, rulers, strict=True):
        p, good = _ruler_pvalues(scores, corr, np.abs(es[members]), sample_size)
        p = np.minimum(1.0, p / denom_prob[members])
        pvalue[members] = p
        log2err[members] = np.where(good, multilevel_error(p, sample_size), np.nan)
