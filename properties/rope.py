"""Conformance properties of RoPE implementations (kind "rope").

An adapter's ``apply(x, positions, *, layout, rotary_dim, base, scaling)`` has
refimpl.apply_rope's signature. The bundled ``ComplexRope`` is an independent
implementation in Meta's complex-number form (pairs as complex numbers times
exp(i m theta)), so refimpl is never checked only against itself.

Error bound (float64, u = 2^-53). theta_i = base^(-e) with e = 2i/d: rounding
e, the power and the division give |dtheta| <= (ln(base) e + 3) u theta; the
product m theta adds u, so |d alpha| <= m theta (ln(base) + 4) u =: A (scalings
add a handful of operations: we use ln(base) + 20). cos and sin are then
within A + u of the exact values, and each rotated column x_a cos - x_b sin
within (|x_a| + |x_b|)(A + 3u). Comparisons use twice that (both sides err).

Scalings are drawn stratified per rope_type (none, linear, dynamic, yarn, llama3, equally
often); yarn and llama3 draw a rotary dim, base and original context from ``BANDED``, the
configurations in which every band of the scaling holds a frequency (llama3: kept, smoothed,
divided by the factor; yarn: extrapolated, ramp, interpolated; ``scaling_bands``), so a
mistake confined to one band (``llama3_smooth_band_divided``) is always reachable.

Precision (``properties.precision``): x is drawn representable in the adapter's precision;
lower precisions are held to 2x the error of ``naive_rope`` (the frequency table and the
angles in float32, as every framework builds its cos/sin cache (HF ``LlamaRotaryEmbedding``:
``inv_freq`` and ``inv_freq @ positions`` in float32, autocast off); cos and sin rounded to
the precision, each product and sum rounded) plus ``precision.layer_floor``: the float64
bound at u = u32 (A at u32 is what a float32 angle table can err by: m theta (ln(base) + 20)
u32, HF's included) plus 4 u_p |y|. The invariants (norm preservation, the shift, the layout
permutation) use ``precision.invariant_bound``; the pass-through columns stay exact.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import mpmath
import numpy as np
from hypothesis import strategies as st

import refimpl
from refimpl import rope as R

from .core import Property
from .precision import compare_layer, invariant_bound, naive_ops, precision_of, round_inputs
from .protocol import Capability, Kind
from .tolerance import compare_close
from .strategy_cache import sampled

U = 2.0**-53

KINDS = (
    Kind(
        "rope",
        "rotary position embedding of (B, H, L, D) at integer positions; compared with refimpl.apply_rope",
        {"apply": "apply(x, positions, *, layout, rotary_dim, base, scaling) -> (B, H, L, D) float array. "
                  "x (B, H, L, D) float64, D even; positions int64 of shape (L,) (shared by the batch) or (B, L), "
                  "values in [0, 2^20] (below max_len when the adapter declares it); layout 'half' | "
                  "'interleaved'; rotary_dim None or an even int <= D; base float; scaling None or a dict "
                  "{'rope_type': 'linear', 'factor'} | {'rope_type': 'dynamic', 'factor', "
                  "'max_position_embeddings', 'seq_len'} | {'rope_type': 'yarn', 'factor', "
                  "'original_max_position_embeddings'} | {'rope_type': 'llama3', 'factor', 'low_freq_factor', "
                  "'high_freq_factor', 'original_max_position_embeddings'}. 'seq_len' is not an HF "
                  "rope_parameters key: it is the sequence length HF's dynamic_rope_update sees at call time "
                  "(max position + 1 there); an HF-backed adapter passes it as that length"},
        ("apply",),
        {
            "interleaved": Capability("supports layout='interleaved' (GPT-J / Meta pairs (2i, 2i+1)) besides 'half'"),
            "partial": Capability("supports rotary_dim < D (the remaining columns pass through)"),
            "scaling": Capability("supports scaling dicts: linear, dynamic, yarn, llama3 (HF rope_parameters keys)"),
        },
        notes=("max_len (an adapter attribute of every kind) bounds rope positions: every position passed, "
               "shifted ones in rope_relative_position included, is < max_len (a cos/sin cache of max_len rows)",),
    ),
)


@dataclasses.dataclass(frozen=True)
class RopeAdapter:
    name: str
    apply: Callable
    capabilities: frozenset
    kind: str = "rope"
    precision: str = "float64"
    max_len: int | None = None  # positions drawn are < max_len (a cos/sin cache of max_len rows)


def _complex_rope(x, positions, *, layout="half", rotary_dim=None, base=10000.0, scaling=None, bug=None):
    """RoPE as complex multiplication (Meta llama ``apply_rotary_emb``), any layout via the permutation."""
    x = np.asarray(x, dtype=np.float64)
    B, H, L, D = x.shape
    d = D if rotary_dim is None else rotary_dim
    if bug == "partial_rotates_last":
        x = x[..., ::-1]
    perm = R.layout_permutation(D, d)
    native = layout == "interleaved" and bug != "half_for_interleaved"  # the bug treats every input as half
    xi = x if native else x[..., perm]
    theta, attn = R.rope_frequencies(d, base, scaling)
    if bug == "theta_i_over_d":
        theta = 1.0 / base ** (np.arange(d // 2) / d)
    if bug == "llama3_smooth_band_divided" and scaling and scaling["rope_type"] == "llama3":
        # the smoothed band (P / high_freq_factor <= wavelength <= P / low_freq_factor) treated
        # as the low-frequency band: divided by the factor
        t0 = R.base_frequencies(d, base)
        theta = np.where(2 * math.pi / t0 < scaling["original_max_position_embeddings"] / scaling["high_freq_factor"],
                         t0, t0 / scaling["factor"])
    if bug == "yarn_no_attention_factor":
        attn = 1.0
    pos = np.broadcast_to(np.asarray(positions), (B, L)).astype(np.int64)
    if bug == "positions_off_by_one":
        pos = pos + 1
    if bug == "float32_angles":
        alpha = (pos.astype(np.float32)[..., None] * theta.astype(np.float32)).astype(np.float64)
    else:
        alpha = pos.astype(np.float64)[..., None] * theta
    z = xi[..., 0:d:2] + 1j * xi[..., 1:d:2]
    w = attn * np.exp(1j * alpha[:, None])
    if bug == "no_minus_sign":
        zr = z.real * w.real + z.imag * w.imag + 1j * (z.imag * w.real + z.real * w.imag)
    elif bug == "mixed_tables":  # half-layout tables (cat(freqs, freqs)) read pairwise: a pair gets two angles
        a2 = np.concatenate([alpha, alpha], axis=-1)[:, None]
        c, s = attn * np.cos(a2), attn * np.sin(a2)
        zr = (z.real * c[..., 0::2] - z.imag * s[..., 0::2]) + 1j * (z.imag * c[..., 1::2] + z.real * s[..., 1::2])
    else:
        zr = z * w
    out = xi.copy()
    out[..., 0:d:2], out[..., 1:d:2] = zr.real, zr.imag
    if not native:
        out = out[..., np.argsort(perm)]
    if bug == "partial_rotates_last":
        out = out[..., ::-1]
    return out


ALL_CAPS = frozenset({"interleaved", "partial", "scaling"})
BUNDLED = [
    RopeAdapter("refimpl.apply_rope", refimpl.apply_rope, ALL_CAPS),
    RopeAdapter("complex_form", _complex_rope, ALL_CAPS),
]
_BUGS = ("half_for_interleaved", "positions_off_by_one", "float32_angles", "mixed_tables", "no_minus_sign",
         "partial_rotates_last", "yarn_no_attention_factor", "theta_i_over_d", "llama3_smooth_band_divided")
WRONG = {b: RopeAdapter(f"wrong:{b}", (lambda bug: lambda *a, **k: _complex_rope(*a, bug=bug, **k))(b), ALL_CAPS)
         for b in _BUGS}


def in_precision(adapter, precision: str, name: str | None = None):
    """``adapter`` declaring ``precision``, its output stored in that precision."""
    def apply(*a, **k):
        return round_inputs(precision, adapter.apply(*a, **k))

    return RopeAdapter(name or f"{adapter.name}[{precision}]", apply, adapter.capabilities, precision=precision)


# the same mistakes in float32 / bfloat16 kernels: the low-precision bound still rejects them
WRONG.update({f"{b}_{p}": in_precision(WRONG[b], p, f"wrong:{b}[{p}]") for b, p in (
    ("positions_off_by_one", "float32"), ("theta_i_over_d", "bfloat16"), ("no_minus_sign", "float32"),
    ("mixed_tables", "bfloat16"), ("half_for_interleaved", "bfloat16"), ("llama3_smooth_band_divided", "float32"))})


# ----------------------------------------------------------------------------
# cases


@dataclasses.dataclass(frozen=True)
class RopeCase:
    x: np.ndarray
    positions: np.ndarray
    kwargs: dict
    seed: int

    def __repr__(self):
        return (f"RopeCase(x{self.x.shape}, positions={self.positions.tolist()}, kwargs={self.kwargs}, "
                f"seed={self.seed})")


_SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0, "max_position_embeddings": 64, "seq_len": 300},
    "yarn": {"rope_type": "yarn", "factor": 8.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0},
}
ROPE_TYPES = (None, "linear", "dynamic", "yarn", "llama3")
_BASES = (100.0, 10000.0, 500000.0)


def scaling_bands(rotary_dim: int, base: float, scaling: dict) -> tuple:
    """How many frequencies the scaling keeps, blends and divides by its factor (theta'/theta
    = 1, strictly between, 1/factor): llama3's high / smoothed / low bands, yarn's
    extrapolated / ramp / interpolated dims."""
    t0 = R.base_frequencies(rotary_dim, base)
    ratio = R.rope_frequencies(rotary_dim, base, scaling)[0] / t0
    kept = np.isclose(ratio, 1.0, rtol=1e-12, atol=0)
    divided = np.isclose(ratio, 1.0 / scaling["factor"], rtol=1e-12, atol=0)
    return int(kept.sum()), int((~kept & ~divided).sum()), int(divided.sum())


def _banded():
    """(rotary_dim, base, scaling) for yarn and llama3 with every band holding a frequency:
    rotary dims 8..32, the three bases, original contexts from 64 to 32768."""
    out = {"yarn": [], "llama3": []}
    for d in (8, 12, 16, 32):
        for base in _BASES:
            for P in (64, 256, 1024, 4096, 32768):
                for kind in out:
                    sc = {**_SCALINGS[kind], "original_max_position_embeddings": P}
                    if min(scaling_bands(d, base, sc)) > 0:
                        out[kind].append((d, base, sc))
    return out


BANDED = _banded()


@st.composite
def rope_case(draw, caps, *, max_position=2**20, scalings=True, layouts=None):
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    B, H, L = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 5))
    kw = {"layout": draw(sampled(layouts or (("half", "interleaved") if "interleaved" in caps else ("half",))))}
    rope_type = draw(sampled(ROPE_TYPES)) if scalings and "scaling" in caps else None
    if rope_type in BANDED:  # a configuration in which every band holds a frequency
        d, kw["base"], kw["scaling"] = draw(sampled(BANDED[rope_type]))
        D = d + 2 * draw(st.integers(0, 1)) if "partial" in caps else d
        if D > d:
            kw["rotary_dim"] = d
    else:
        D = 2 * draw(st.integers(1, 6))
        if "partial" in caps and draw(st.booleans()):
            kw["rotary_dim"] = 2 * draw(st.integers(1, D // 2))
        kw["base"] = draw(sampled((10000.0, 500000.0, 100.0)))
        if rope_type is not None:
            kw["scaling"] = _SCALINGS[rope_type]
            if rope_type == "dynamic" and kw.get("rotary_dim", D) < 4:
                kw["scaling"] = None  # dynamic NTK's exponent d / (d - 2) needs d >= 4
    top = draw(sampled((16, 4096, max_position)))
    if getattr(caps, "max_len", None):  # the adapter's largest position is max_len - 1
        top = min(top, caps.max_len)
    shape = (L,) if draw(st.booleans()) else (B, L)
    positions = rng.integers(0, top, size=shape)
    x = round_inputs(getattr(caps, "precision", "float64"), rng.standard_normal((B, H, L, D)))
    return RopeCase(x, positions, kw, seed)


# ----------------------------------------------------------------------------
# the naive baseline in a precision (properties.precision)


def naive_rope(precision, x, positions, *, layout="half", rotary_dim=None, base=10000.0, scaling=None):
    """RoPE as an eager framework computes it in ``precision``: theta = 1 / base^(arange(0, d, 2) / d)
    and the scaling in float32, angles = positions * theta in float32, cos and sin (times the
    attention factor) rounded to the precision, x_a cos - x_b sin and x_b cos + x_a sin with
    every product and sum rounded. float64 (B, H, L, D)."""
    ops = naive_ops(precision)
    f = np.float32
    x = np.asarray(x, dtype=np.float64)
    B, H, L, D = x.shape
    d = rotary_dim or D
    theta = f(1) / (f(base) ** (np.arange(0, d, 2, dtype=f) / f(d)))
    exact, attn = R.rope_frequencies(d, base, scaling)
    theta = (theta * (exact / R.base_frequencies(d, base)).astype(f)).astype(f)  # the scaling's ratio, in float32
    pos = np.broadcast_to(np.asarray(positions), (B, L)).astype(f)
    alpha = (pos[..., None] * theta)[:, None]  # (B, 1, L, d/2) float32
    cos, sin = ops.r(np.cos(alpha) * f(attn)), ops.r(np.sin(alpha) * f(attn))
    xa, xb = (ops.r(a) for a in R._pairs(x, d, layout))
    ya = ops.r(ops.r(xa * cos) - ops.r(xb * sin))
    yb = ops.r(ops.r(xb * cos) + ops.r(xa * sin))
    return np.concatenate([ops.out(R._unpair(ya, yb, layout)), x[..., d:]], axis=-1)


def _angle_bound(case) -> float:
    """A = max m theta (ln(base) + 20) u (see the module docstring); theta_0 = 1 / factors >= all theta_i."""
    base = case.kwargs.get("base", 10000.0)
    sc = case.kwargs.get("scaling")
    if sc and sc["rope_type"] == "dynamic":  # the enlarged base
        d = case.kwargs.get("rotary_dim") or case.x.shape[-1]
        s = max(sc["seq_len"], sc["max_position_embeddings"]) / sc["max_position_embeddings"]
        base = base * (sc["factor"] * s - (sc["factor"] - 1)) ** (d / (d - 2))
    return float(np.max(case.positions, initial=0)) * (math.log(base) + 20) * U


def _attn(case) -> float:
    d = case.kwargs.get("rotary_dim") or case.x.shape[-1]
    return R.rope_frequencies(d, case.kwargs.get("base", 10000.0), case.kwargs.get("scaling"))[1]


def _apply(impl, case, x=None, positions=None, **override):
    kw = {**case.kwargs, **override}
    return np.asarray(impl.apply(case.x if x is None else x, case.positions if positions is None else positions, **kw),
                      dtype=np.float64)


def _fail(impl, what, err, tol, case):
    raise AssertionError(f"{impl.name}: {what}: error {err:.3e} > bound {tol:.3e}; {case!r}")


# ----------------------------------------------------------------------------
# checks


def _naive(impl, case, x=None, positions=None, **override):
    return naive_rope(precision_of(impl), case.x if x is None else x, case.positions if positions is None else positions,
                      **{**case.kwargs, **override})


def check_matches_reference(impl, case):
    """Equal to refimpl.apply_rope within 2 (|x_a| + |x_b|)(A + 3u) per column."""
    got = _apply(impl, case)
    ref = refimpl.apply_rope(case.x, case.positions, **case.kwargs)
    tol = 2 * _attn(case) * 2 * np.max(np.abs(case.x)) * (_angle_bound(case) + 3 * U) + 1e-300
    compare_layer("differs from refimpl.apply_rope", got, ref, precision=precision_of(impl), float64_bound=tol,
                  naive=lambda: _naive(impl, case), magnitude=2 * _attn(case) * np.max(np.abs(case.x)),
                  context=f"{impl.name}; {case!r}")


def check_norm_preserving(impl, case):
    """Each rotated pair keeps its norm (times the attention factor); the pass-through columns are unchanged.

    c^2 + s^2 of one computed angle is 1 within 3u whatever the angle error, and
    each output component adds at most 3u relative: |‖y_p‖ - a ‖x_p‖| <= 8u a ‖x_p‖.
    """
    y = _apply(impl, case)
    d = case.kwargs.get("rotary_dim") or case.x.shape[-1]
    a = _attn(case)
    if not np.array_equal(y[..., d:], case.x[..., d:]):
        raise AssertionError(f"{impl.name}: columns >= rotary_dim = {d} changed; {case!r}")
    pairs = R._pairs
    xa, xb = pairs(case.x, d, case.kwargs.get("layout", "half"))
    ya, yb = pairs(y, d, case.kwargs.get("layout", "half"))
    nx, ny = np.hypot(xa, xb), np.hypot(ya, yb)
    tol = 8 * U * a * float(np.max(nx)) + 1e-300

    def naive():
        return np.hypot(*pairs(_naive(impl, case), d, case.kwargs.get("layout", "half")))

    compare_layer("a rotated pair changed its norm", ny, a * nx, precision=precision_of(impl), float64_bound=tol,
                  naive=naive, context=f"{impl.name}; {case!r}")


def check_relative_position(impl, case):
    """<RoPE(q, m), RoPE(k, n)> is unchanged when every position shifts by the same s."""
    rng = np.random.default_rng(case.seed + 1)
    pos = np.asarray(case.positions)
    s = int(rng.integers(1, 1000))
    limit = getattr(impl, "max_len", None)
    if limit is not None and int(pos.max()) + s >= limit:  # shift within [0, max_len): down if up does not fit
        s = max(-int(pos.min()), min(limit - 1 - int(pos.max()), 999))
        s = s if s != 0 else -min(int(pos.min()), 999)
    q, k = case.x, np.roll(case.x, 1, axis=2) + rng.standard_normal(case.x.shape)
    dots = [np.einsum("bhld,bhmd->bhlm", _apply(impl, case, q, pos + t), _apply(impl, case, k, pos + t)) for t in (0, s)]
    shifted = dataclasses.replace(case, positions=pos + s)
    nq, nk = np.linalg.norm(q, axis=-1), np.linalg.norm(k, axis=-1)
    scale = _attn(case) ** 2 * np.max(nq) * np.max(nk)
    tol = 4 * scale * (2 * _angle_bound(shifted) + (q.shape[-1] + 6) * U) + 1e-300

    def pair_dots(fn):
        return np.stack([np.einsum("bhld,bhmd->bhlm", fn(q, pos + t), fn(k, pos + t)) for t in (0, s)])

    p = precision_of(impl)
    if p != "float64":
        spec = pair_dots(lambda a, m: refimpl.apply_rope(a, m, **case.kwargs))
        tol = invariant_bound(p, tol, lambda: pair_dots(lambda a, m: _naive(impl, case, a, m)), spec, magnitude=scale)
    compare_close(f"q.k changed when all positions shifted by {s}", dots[1], dots[0], tol,
                  f"{impl.name}; {case!r}; precision {p}")


def check_exact_integer_positions(impl, case):
    """cos and sin of m theta_i for m up to 2^20 match an mpmath oracle within m theta_i (ln(base) 2i/d + 5) u + 2u.

    Rotating the basis vector of a pair's first column returns (cos, sin) in the
    pair's two columns. A float32 angle or an accumulated one drifts far past this.
    """
    D, d = case.x.shape[-1], case.kwargs.get("rotary_dim") or case.x.shape[-1]
    base, layout = case.kwargs.get("base", 10000.0), case.kwargs.get("layout", "half")
    pos = np.asarray(case.positions).reshape(-1)[:4]
    e = np.eye(D)[None, :, None, :].repeat(pos.size, axis=2)  # (1, D, L, D): head h holds e_h
    y = _apply(impl, case, e, pos)
    p = precision_of(impl)
    if p != "float64":  # the precision rule against the float64 spec (itself within the mpmath bound below)
        tol = float(np.max(pos, initial=0)) * (math.log(base) + 5) * U + 2 * U
        compare_layer("cos/sin of integer positions", y, refimpl.apply_rope(e, pos, **case.kwargs), precision=p,
                      float64_bound=tol, naive=lambda: _naive(impl, case, e, pos), magnitude=1.0,
                      context=f"{impl.name}; {case!r}")
        return
    mpmath.mp.dps = 40
    for i in range(d // 2):
        a_col, b_col = (i, i + d // 2) if layout == "half" else (2 * i, 2 * i + 1)
        theta = mpmath.power(mpmath.mpf(base), -mpmath.mpf(2 * i) / d)
        for li, m in enumerate(pos.tolist()):
            c, s = mpmath.cos(m * theta), mpmath.sin(m * theta)
            tol = float(m * theta) * (math.log(base) * 2 * i / d + 5) * U + 2 * U
            err = max(abs(float(y[0, a_col, li, a_col] - c)), abs(float(y[0, a_col, li, b_col] - s)))
            if not err <= tol:
                _fail(impl, f"cos/sin of position {m} x theta_{i} vs mpmath", err, tol, case)


def check_layout_conversion(impl, case):
    """RoPE "half" then the column permutation == the permutation then RoPE "interleaved", and
    attention over RoPE'd q, k in one layout equals the other layout on permuted q, k."""
    D = case.x.shape[-1]
    d = case.kwargs.get("rotary_dim") or D
    perm = R.layout_permutation(D, d)
    rng = np.random.default_rng(case.seed + 2)
    k, v = rng.standard_normal(case.x.shape), rng.standard_normal(case.x.shape)
    qh, kh = _apply(impl, case, layout="half"), _apply(impl, case, k, layout="half")
    qi, ki = _apply(impl, case, case.x[..., perm], layout="interleaved"), _apply(impl, case, k[..., perm], layout="interleaved")
    tol = 4 * _attn(case) * 2 * max(np.max(np.abs(case.x)), np.max(np.abs(k))) * (_angle_bound(case) + 3 * U) + 1e-300
    p = precision_of(impl)
    if p != "float64":
        spec = np.concatenate([refimpl.apply_rope(a, case.positions, **{**case.kwargs, "layout": "half"})[..., perm]
                               for a in (case.x, k)] * 2)

        def naive():
            return np.concatenate([_naive(impl, case, case.x, layout="half")[..., perm],
                                   _naive(impl, case, k, layout="half")[..., perm],
                                   _naive(impl, case, case.x[..., perm], layout="interleaved"),
                                   _naive(impl, case, k[..., perm], layout="interleaved")])

        tol = invariant_bound(p, tol, naive, spec, magnitude=2 * _attn(case) * max(np.max(np.abs(case.x)), np.max(np.abs(k))))
    compare_close("half-then-permute differs from permute-then-interleaved", qi, qh[..., perm], tol,
                  f"{impl.name}; {case!r}; precision {p}")
    out_h, _ = refimpl.attention(qh, kh, v, causal=True)
    out_i, _ = refimpl.attention(qi, ki, v, causal=True)
    err = float(np.max(np.abs(out_h - out_i)))
    tol_out = 2 * tol * np.max(np.abs(v)) * np.max(np.abs(qh)) * D + 64 * D * U * np.max(np.abs(v)) * (1 + np.max(np.abs(qh)) ** 2 * D)
    if not err <= tol_out:
        _fail(impl, "attention with RoPE differs between layouts after the permutation", err, tol_out, case)


PROPERTIES = [
    Property("rope_matches_reference", "rope", check_matches_reference, rope_case,
             "RoPE equals refimpl.apply_rope (layouts, partial rotary, scalings) within the derived bound",
             rejects=("half_for_interleaved", "positions_off_by_one", "float32_angles", "partial_rotates_last",
                      "yarn_no_attention_factor", "theta_i_over_d", "llama3_smooth_band_divided",
                      "positions_off_by_one_float32", "theta_i_over_d_bfloat16", "llama3_smooth_band_divided_float32")),
    Property("rope_norm_preserving", "rope", check_norm_preserving, rope_case,
             "each rotated pair keeps its norm (times the attention factor); other columns unchanged",
             rejects=("no_minus_sign", "mixed_tables", "yarn_no_attention_factor", "no_minus_sign_float32",
                      "mixed_tables_bfloat16")),
    Property("rope_relative_position", "rope", check_relative_position, lambda caps: rope_case(caps, max_position=4096),
             "q_m . k_n depends only on m - n", rejects=("mixed_tables", "no_minus_sign", "mixed_tables_bfloat16")),
    Property("rope_exact_integer_positions", "rope", check_exact_integer_positions,
             lambda caps: rope_case(caps, scalings=False),
             "angles from integer positions up to 2^20 agree with mpmath (no float drift)",
             rejects=("float32_angles", "positions_off_by_one", "theta_i_over_d", "positions_off_by_one_float32",
                      "theta_i_over_d_bfloat16")),
    Property("rope_layout_conversion", "rope", check_layout_conversion,
             lambda caps: rope_case(caps, layouts=("half",)),
             "half and interleaved layouts are one column permutation apart, attention included",
             requires=frozenset({"interleaved"}), rejects=("half_for_interleaved", "half_for_interleaved_bfloat16")),
]
