"""Decoding through every cache equals the definition (``refimpl.kv_cache.decode_definition``).

The definition: RoPE (``rope_definition``) at positions 0 .. L-1, then causal attention over the
whole sequence (``attention_definition``), window (left, 0) or none. Fast forms: ``decode`` (any
partition of the sequence into chunks, each a ``decode_step``: RoPE by ``apply_rope`` at the chunk's
absolute positions, the cache's keys, then the one-pass form ``_attend`` for a step below one thread's
work, ``refimpl.flash_attention`` aligned bottom-right above it) over
``ContiguousCache``, ``PagedCache`` (any block size, blocks handed out in pool order; and a forked
sequence written copy-on-write) and ``RingCache`` (capacity left + 1), and ``prefill_reference`` (one
call of ``refimpl.attention``).

The bound: each output row of a decode step is attention over the same keys as the definition's row
(the cache returns them in position order), so the attention bound of tests/test_definition.py
(``error_bounds``, derived in its docstring; its Lk is the whole sequence, an upper bound for every
step) applies to the rotated q and k, with one addition: each computation's rotated q and k are
within the RoPE bound of tests/test_definition_rope.py (``bound``) of the exact rotation, which moves
a score by at most scale (|dq| |k|^T + |q| |dk|^T); that enters the bound as a further score error
(``error_bounds(score_err=...)``). The test asserts |decode - definition| <= 2 x (both computations'
bounds); ``test_the_bound_holds_against_a_50_digit_decode`` checks the bound itself against mpmath.
Worst observed fraction (``test_worst_fraction_report``, -s): 0.012 under the thorough profile
(both run the same softmax over the same keys; only the summation blocks differ); 0.024 vs 50 digits.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import refimpl
from refimpl import kv_cache as KV
from refimpl.rope import apply_rope, rope_definition

from . import _definitions as D
from .test_definition import error_bounds
from .test_definition_rope import bound as rope_bound


def decode_bound(q, k, v, window, rope, scale):
    """|out - exact| of one computation (B, Hq, L, Dv)."""
    L, G = q.shape[2], q.shape[1] // k.shape[1]
    kw = dict(causal=True, window=window, scale=scale)
    s = scale or 1 / np.sqrt(q.shape[3])
    if rope is None:
        return error_bounds(q, k, v, kw)[0]
    m = np.arange(L)
    qr, kr = rope_definition(q, m, **rope), rope_definition(k, m, **rope)
    dq, dk = rope_bound(q, m, **rope), rope_bound(k, m, **rope)
    rep = lambda t: np.repeat(t, G, axis=1).swapaxes(-1, -2)  # noqa: E731
    score_err = s * (dq @ rep(np.abs(kr)) + np.abs(qr) @ rep(dk))
    return error_bounds(qr, kr, v, kw, score_err=score_err)[0]


@st.composite
def decode_cases(draw):
    B, Hkv, G = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
    L, Dh, Dv = draw(st.integers(1, 10)), 2 * draw(st.integers(1, 3)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ev = draw(st.sampled_from([0, 0, -200, 200]))
    q = rng.standard_normal((B, Hkv * G, L, Dh)) * draw(st.sampled_from([1.0, 3.0]))
    k = rng.standard_normal((B, Hkv, L, Dh))
    v = rng.standard_normal((B, Hkv, L, Dv)) * 10.0**ev
    kind = draw(st.sampled_from(KV.CACHE_KINDS))
    window = (draw(st.integers(0, 5)), 0) if kind == "ring" or draw(st.booleans()) else None
    rope = draw(st.sampled_from([None, {}, {"layout": "interleaved"}, {"rotary_dim": 2, "base": 500000.0}]))
    scale = draw(st.sampled_from([None, 0.5]))
    cuts = sorted(draw(st.lists(st.integers(1, L - 1), unique=True, max_size=L - 1))) if L > 1 else []
    chunks = [b - a for a, b in zip([0] + cuts, cuts + [L])]
    block_size = draw(st.integers(1, 4))
    note(f"q{q.shape} k{k.shape} v{v.shape} kind={kind} window={window} rope={rope} scale={scale} chunks={chunks} "
         f"block_size={block_size}")
    return q, k, v, kind, window, rope, scale, chunks, block_size


def _cache(kind, k, v, window, block_size):
    B, Hkv, L, Dh = k.shape
    return KV.make_cache(kind, Hkv, Dh, v.shape[3], batch=B, window=window, block_size=block_size,
                         num_blocks=B * (L // block_size + 1))


SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


@SETTINGS
@given(decode_cases())
def test_decode_through_every_cache_equals_the_definition(case):
    q, k, v, kind, window, rope, scale, chunks, block_size = case
    want = KV.decode_definition(q, k, v, window=window, rope=rope, scale=scale)
    b = 2 * decode_bound(q, k, v, window, rope, scale)
    assert np.isfinite(b).all(), "a vacuous bound"
    got = KV.decode(q, k, v, _cache(kind, k, v, window, block_size), chunks=chunks, window=window, rope=rope,
                    scale=scale)
    D.assert_within("decode", f"decode {kind}", got, want, b)
    D.assert_within("decode", "prefill_reference", KV.prefill_reference(q, k, v, window=window, rope=rope,
                                                                        scale=scale), want, b)


@SETTINGS
@given(st.integers(1, 7), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_forked_paged_sequences_equal_the_definition(n0, n1, n2, block_size, seed):
    """vLLM's parallel sampling: a prefix of n0 tokens written once, the sequence forked (its blocks
    shared, reference-counted), then two different continuations written copy-on-write; each
    continuation's queries over its gathered keys (``refimpl.attention``, bottom-right, RoPE'd at the
    absolute positions) equal the definition on [prefix, continuation]. Same bound as above."""
    rng = np.random.default_rng(seed)
    Hkv, G, Dh, Dv, rope = 1, 2, 4, 3, {"layout": "interleaved"}
    qp, kp, vp = rng.standard_normal((1, Hkv * G, n0, Dh)), rng.standard_normal((1, Hkv, n0, Dh)), \
        rng.standard_normal((1, Hkv, n0, Dv))
    cache = KV.PagedCache(Hkv, Dh, Dv, block_size=block_size, num_blocks=3 * ((n0 + n1 + n2) // block_size + 3))
    cache.append(0, apply_rope(kp, np.arange(n0), **rope)[0], vp[0])
    fork = cache.fork(0)
    for seq, n in ((0, n1), (fork, n2)):
        q, k, v = (rng.standard_normal((1, h, n, d)) for h, d in ((Hkv * G, Dh), (Hkv, Dh), (Hkv, Dv)))
        pos = np.arange(n0, n0 + n)
        cache.append(seq, apply_rope(k, pos, **rope)[0], v[0])
        K, V = cache.gather(seq)
        got = refimpl.attention(apply_rope(q, pos, **rope), K[None], V[None], causal=True)[0]
        Q, Kf, Vf = (np.concatenate(t, axis=2) for t in ((qp, q), (kp, k), (vp, v)))
        want = KV.decode_definition(Q, Kf, Vf, rope=rope)[:, :, n0:]
        b = 2 * decode_bound(Q, Kf, Vf, None, rope, None)[:, :, n0:]
        D.assert_within("decode", f"forked paged sequence {seq}", got, want, b)


def _mp_decode(q, k, v, window, rope, scale):
    """out at 50 digits (mpmath): RoPE by the float64 angles m theta_i, causal (windowed) softmax, GQA."""
    import mpmath

    from refimpl.rope import rope_frequencies

    B, Hq, L, Dh = q.shape
    G, Dv = Hq // k.shape[1], v.shape[3]
    s = mpmath.mpf(float(scale or 1 / np.sqrt(Dh)))
    pairs, theta, f = None, None, 1.0
    if rope is not None:
        d = rope.get("rotary_dim") or Dh
        theta, f = rope_frequencies(d, rope.get("base", 10000.0), None)
        i = np.arange(d // 2)
        pairs = (i, i + d // 2) if rope.get("layout", "half") == "half" else (2 * i, 2 * i + 1)

    def rot(vec, m):
        vec = [mpmath.mpf(float(t)) for t in vec]
        if pairs is None:
            return vec
        out = list(vec)
        for a, b, th in zip(*pairs, theta):
            al = mpmath.mpf(float(m * th))
            c, sn = mpmath.mpf(float(f)) * mpmath.cos(al), mpmath.mpf(float(f)) * mpmath.sin(al)
            out[a], out[b] = c * vec[a] - sn * vec[b], sn * vec[a] + c * vec[b]
        return out

    out = np.zeros((B, Hq, L, Dv))
    with mpmath.workdps(50):
        for b in range(B):
            for h in range(Hq):
                qs = [rot(q[b, h, t], t) for t in range(L)]
                ks = [rot(k[b, h // G, j], j) for j in range(L)]
                for t in range(L):
                    js = [j for j in range(t + 1) if window is None or j >= t - window[0]]
                    sc = [s * mpmath.fsum(x * y for x, y in zip(qs[t], ks[j])) for j in js]
                    mx = max(sc)
                    e = [mpmath.exp(z - mx) for z in sc]
                    tot = mpmath.fsum(e)
                    for d in range(Dv):
                        out[b, h, t, d] = float(mpmath.fsum(w * mpmath.mpf(float(v[b, h // G, j, d]))
                                                            for w, j in zip(e, js)) / tot)
    return out


@SETTINGS
@given(decode_cases())
def test_the_bound_holds_against_a_50_digit_decode(case):
    """The derivation checked: the definition is within (2 x) its one-computation bound (``decode_bound``:
    the attention bound with RoPE's as a score error) of the same computation at 50 digits, plus the
    final rounding u |exact| / 2."""
    q, k, v, _, window, rope, scale, _, _ = case
    exact = _mp_decode(q, k, v, window, rope, scale)
    D.assert_within("decode vs 50 digits", "definition", KV.decode_definition(q, k, v, window=window, rope=rope,
                                                                              scale=scale), exact,
                    decode_bound(q, k, v, window, rope, scale) + 2.0**-53 * np.abs(exact) / 2)


# ----------------------------------------------------------------------------
# the bound rejects wrong forms (meta-tests)


def _wrong(wrong, q, k, v, rope):
    if wrong == "top_left":  # chunks aligned top-left (torch is_causal): query i sees keys 0..i of the cache
        c = KV.make_cache("contiguous", 1, 4, 3)
        return np.concatenate([KV.decode_step(q[:, :, s], k[:, :, s], v[:, :, s], c, rope=rope, align="top_left")
                               for s in (slice(0, 4), slice(4, 8))], axis=2)
    if wrong == "rope_per_chunk":  # positions restart in every chunk (relative to the chunk, not absolute)
        outs = []
        c = KV.make_cache("contiguous", 1, 4, 3)
        from refimpl.rope import apply_rope
        for s in (slice(0, 4), slice(4, 8)):
            qs, ks = apply_rope(q[:, :, s], np.arange(4), **rope), apply_rope(k[:, :, s], np.arange(4), **rope)
            outs.append(KV.decode_step(qs, ks, v[:, :, s], c))
        return np.concatenate(outs, axis=2)
    # the window dropped: every cached key attended to
    return KV.decode(q, k, v, KV.make_cache("contiguous", 1, 4, 3), chunks=[4, 4], rope=rope)


@pytest.mark.parametrize("wrong", ["top_left", "rope_per_chunk", "window_dropped"])
def test_the_bound_rejects_wrong_forms(wrong):
    rng = np.random.default_rng(6)
    q, k, v = rng.standard_normal((1, 2, 8, 4)), rng.standard_normal((1, 1, 8, 4)), rng.standard_normal((1, 1, 8, 3))
    rope = {"layout": "half"}
    window = (2, 0) if wrong == "window_dropped" else None
    want, b = KV.decode_definition(q, k, v, window=window, rope=rope), 2 * decode_bound(q, k, v, window, rope, None)
    right = KV.decode(q, k, v, KV.make_cache("ring" if window else "paged", 1, 4, 3, window=window, block_size=3),
                      chunks=[4, 4], window=window, rope=rope)
    D.assert_within("meta", "right", right, want, b)
    with pytest.raises(AssertionError):
        D.assert_within("meta", wrong, _wrong(wrong, q, k, v, rope), want, b)


def test_worst_fraction_report():
    D.report("decode")
    D.report("decode vs 50 digits")


@pytest.mark.parametrize("kind, window", [("contiguous", None), ("contiguous", (40, 0)), ("paged", None),
                                          ("ring", (40, 0))])
def test_a_long_prefill_then_single_steps_equal_the_definition(kind, window, monkeypatch):
    """Both computations of a step: a prefill chunk beyond one thread's work (``MIN_PARALLEL_WORK``
    multiply-adds) is ``refimpl.flash_attention`` (its tiles of ``PREFILL_BLOCK``, the last one partial);
    the single-token steps after it are the one-pass form (``_attend``). Each call is counted, so both
    are known to have run; the bound is the one above."""
    rng = np.random.default_rng(3)
    L, n0, rope = 304, 300, {"layout": "interleaved"}
    q, k, v = rng.standard_normal((1, 2, L, 16)), rng.standard_normal((1, 1, L, 16)), rng.standard_normal((1, 1, L, 8))
    calls = {"flash_attention": 0, "_attend": 0}
    for name in calls:
        def spy(*a, _f=getattr(KV, name), _n=name, **kw):
            calls[_n] += 1
            return _f(*a, **kw)
        monkeypatch.setattr(KV, name, spy)
    cache = KV.make_cache(kind, 1, 16, 8, window=window, num_blocks=32)
    got = KV.decode(q, k, v, cache, chunks=[n0] + [1] * (L - n0), window=window, rope=rope)
    assert calls == {"flash_attention": 1, "_attend": L - n0}
    want = KV.decode_definition(q, k, v, window=window, rope=rope)
    D.assert_within("decode", f"decode {kind}, prefill then steps", got, want,
                    2 * decode_bound(q, k, v, window, rope, None))
