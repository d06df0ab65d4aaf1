"""Low-precision bounds of attention, forward and backward (float32, bfloat16, float16).

The rule is ``properties.precision``'s: FACTOR x the error of a naive computation in the
precision, from the same rounded inputs, plus a derived floor.

**Naive baseline** (``naive_attention``, ``naive_attention_backward``): what an eager
framework computes in precision p (``precision.naive_ops``: every elementwise step rounded to
p, every matmul and sum accumulated in float32 and rounded to p), in the two orders
flash-attn's own tests use (tests/test_flash_attn.py ``attention_ref``: ``reorder_ops=False``
scales q, ``reorder_ops=True`` scales k): the baseline error is the larger of the two. Softcap
is three eager steps, each rounded (s / c, tanh, * c), as ``attention_ref`` and torch compute
it. The backward recomputes the naive forward and forms dv = P^T dO, dP = dO V^T,
D = rowsum(dO * O), dS = P (dP - D) (times tanh' with softcap), dq = scale dS K,
dk = scale dS^T Q, each step rounded to p.

**Floor** (``rounding_floor``, ``backward_rounding_floor``): on a small problem one naive
sample may be lucky (two eager orders of the same attention differ by 3x on a 1 x 2 problem),
so the floor is the error the roundings themselves produce, in the probabilistic model of
Higham & Mary (SIAM J. Sci. Comput. 41(5), 2019: rounding errors independent, mean zero,
|delta| <= u). To first order, weight j of row i moves by a relative delta_ij and

    d out_i = sum_j P_ij delta_ij (v_j - out_i)      (the sum of P_ij (v_j - out_i) is 0)
    d lse_i = sum_j P_ij delta_ij

where delta_ij collects the independent roundings of an eager computation: the scaled
operand (q_d scale or k_d scale, relative u each: terms scale q_id k_jd), the score
(u |s_ij|), softcap's three steps (u |raw|, 2 u |s|), the bias sum (u |s + b|), exp and
the weight's rounding (u each). Hoeffding's inequality bounds the sum of independent
terms |c_t| <= u b_t by LAMBDA u sqrt(sum b_t^2) except with probability 2 exp(-LAMBDA^2 / 2)
(LAMBDA = 4: 7e-4 per entry, and the floor only matters where the naive sample is small).
Deterministic parts are added whole: the output's own rounding and the normaliser's
(2 u |out|), the float32 accumulation (4 (D + Lk) u32 |terms|), and for the lse its
storage (u |lse|). On a problem of n keys the floor is ~sqrt(n) below the worst case
(kernel-scale problems keep the naive error in charge; tiny ones, where the naive sample
is unreliable, get nearly the worst case, which is their typical error).

**The q-scaled operand's term of the output floor** (``_value_operand_sq``). q_id scale is
rounded once for every key, so in d out_ie its rounding delta_id multiplies
t_ied = sum_j P_ij (v_je - out_ie) k_jd, and the Hoeffding sum gets sum_d (scale q_id)^2 t_ied^2.
Exactly, t is a (Lq, Lk) @ (Lk, Dv D) product: O(Lq Lk Dv D), the suite's largest cost at kernel
scale (64 x 64 heads, 193 keys). Bounded instead by Cauchy-Schwarz: sum_j P_ij (v_je - out_ie) = 0
(the weights sum to 1 and out_i is their mean of v), so k_jd may be centred at its weighted mean
kappa_id = sum_j P_ij k_jd, and with the weights P_ij >= 0

    t_ied^2 = (sum_j P_ij (v_je - out_ie)(k_jd - kappa_id))^2
            <= (sum_j P_ij (v_je - out_ie)^2) (sum_j P_ij (k_jd - kappa_id)^2)

(the weighted covariance of v_e and k_d is at most the product of their weighted deviations), so
sum_d (scale q_id)^2 t_ied^2 <= dev_ie sum_d (scale q_id)^2 kvar_id: (Lq, Lk) @ (Lk, D or Dv)
products only. A row of no visible key has P = 0 and both sides 0. Where v and k do not co-vary
the bound exceeds the exact term by up to the row's effective number of keys; it is used when
it moves the floor plus the caller's other terms (``margin``: FACTOR x the naive error) by at most
FLOOR_SLACK = 1/8, else the exact product is formed. At float32 the floor's accumulation term
4 (D + Lk) u32 |v| (1 + S) dwarfs it (the bound moved by at most 0.1% on the ci profile's
drawn cases: never the exact product); at bfloat16 the exact product is formed on about 6% of them.

The backward floor is the same model applied to each gradient's sum: every term of
dq_id = scale sum_j dS_ij k_jd, dk_jd = scale sum_i dS_ij q_id, dv_jd = sum_i P_ij dO_id
carries the weight error above plus the roundings of dP, D and dS, i.e. an absolute error of
dS_ij of at most u e_ij, e_ij = t'_ij P_ij ((B_ij + 2) |dP_ij - D_i| + 2 |dP_ij| + 2 |D_i|)
(t' = 1 - tanh^2 with softcap, else 1), and of P_ij of u (B_ij + 1) P_ij. The float32
accumulation is 4 (D + Dv + Lk + Lq G) u32 times the terms' magnitudes, for dq and dk those of
t' P (|dO| |V|^T + rowsum(|dO| |O|)): dP_ij and D_i are Dv-term sums whose accumulation error
remains where dP - D cancels (one visible key: dS = 0 exactly, while a kernel that forms D by
another summation order than dP leaves ~u32 sqrt(Dv) |dO| |v|).

**Softcap derivative.** Kernels form t' = 1 - t^2 from the t = tanh(raw / c) they computed
(flash-attn csrc/flash_attn/src/utils.h ``calculate_dtanh``: ``1.f - x * x`` on the float32 tanh;
torch autograd of ``torch.tanh``, which HF's eager softcap and FlexAttention's score_mod backward
run: torch/_decomp/decompositions.py ``tanh_backward``, ``grad * (1 - y * y)`` with y the saved
output). With the computed t^ = t + eps, |eps| <= TANH_ULPS ulps <= TANH_ULPS u (|t| < 1, where
an ulp is at most u), then t^ t^ rounded (relative delta_1) and 1 - t^ t^ rounded (delta_2;
exact by Sterbenz when t^^2 >= 1/2):

    fl(1 - fl(t^ t^)) - t' = -2 t eps - eps^2 - t^^2 delta_1 + (1 - t^^2) delta_2
    |fl(1 - fl(t^ t^)) - t'| <= u (2 TANH_ULPS |t| + t^2) + u t' + O(u^2).

The u t' part is relative to t' like the other roundings of dS. The u (2 TANH_ULPS |t| + t^2)
part is absolute: where tanh saturates (|raw| / c >~ 4 in float32) t' falls below u and
1 - t^^2 keeps no correct digit (t^ = 1 gives 0), and no relative term covers it (a float32
torch autograd kernel erred 112x past the bound without it, tests/test_precision_attention.py).
Through dS_ij = P_ij (dP_ij - D_i) t'_ij it moves dS_ij by at most
w_ij = u (2 TANH_ULPS |t_ij| + t_ij^2) P_ij |dP_ij - D_i|, hence dq_id = scale sum_j dS_ij k_jd
by at most scale sum_j w_ij |k_jd| and dk_jd = scale sum_i dS_ij q_id (i over the group's query
heads too) by at most scale sum_i w_ij |q_id|. They are added whole, outside the Hoeffding sum:
a saturated row errs with one sign (t^ = 1 sends every t' to 0). TANH_ULPS = 2: CUDA's tanhf and
glibc's are within 2 ulps, SLEEF's u10 under torch's CPU kernels within 1. u is the precision's:
a bf16/fp16 kernel's float32 tanh (flash-attn's ``cutlass::fast_tanh``, PTX tanh.approx.f32,
relative error about 2^-11) and torch's bf16 autograd (y rounded to bf16) stay within it. The
wrong derivatives stay far outside: forgetting t' errs by P |dP - D| t^2 (1/(5u) times the
term where |t| ~ 1), 1 - t for 1 - t^2 by P |dP - D| |t| |1 - t| wherever tanh is not saturated.

float32 uses the same formulas with u = 2^-24 (its naive baseline is plain float32 NumPy).
"""

from __future__ import annotations

import numpy as np

from .precision import FACTOR, naive_error, naive_ops, unit_roundoff
from .comparison import U32

LAMBDA = 4.0
FLOOR_SLACK = 1 / 8  # how far the cheap bound of the q-scaled term may move a bound (module docstring)
TANH_ULPS = 2  # a kernel's tanh is within 2 ulps (CUDA tanhf): the softcap derivative's term
ORDERS = ("q", "k")  # which operand carries the softmax scale (flash-attn's reorder_ops False / True)

__all__ = ["LAMBDA", "TANH_ULPS", "FLOOR_SLACK", "naive_attention", "naive_attention_backward", "rounding_floor",
           "backward_rounding_floor", "kernel_bounds", "backward_kernel_bounds"]


def _rep(k, v, Hq):
    G = Hq // k.shape[1]
    return np.repeat(k, G, axis=1), np.repeat(v, G, axis=1)


def _naive_scores(o, q, K, scale, softcap, bias, vis, order):
    """(s, raw, vis) of the eager computation: raw = scaled q.k, softcapped, biased, masked."""
    f, r = o.compute, o.r
    KT = np.swapaxes(K, -1, -2)
    with np.errstate(over="ignore", invalid="ignore"):
        raw = o.matmul(r(q * f(scale)), KT) if order == "q" else o.matmul(q, r(KT * f(scale)))
        s = raw
        if softcap is not None:
            c = f(softcap)
            s = r(r(np.tanh(r(s / c))) * c)
        if bias is not None:
            s = r(s + r(np.where(np.isfinite(bias), bias, 0.0)))
            vis = vis & np.isfinite(bias)
    return np.where(vis, s, f(-np.inf)), raw, vis


def _naive_forward(o, q, K, V, vis, scale, softcap, bias, order, keep=None, p_drop=0.0):
    f, r = o.compute, o.r
    s, raw, vis = _naive_scores(o, q, K, scale, softcap, bias, vis, order)
    m = np.max(s, axis=-1, keepdims=True, initial=-np.inf)  # a row of no key (Lk = 0): -inf, read as 0 below
    m = np.where(np.isfinite(m), m, f(0))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        e = r(np.exp(s - m))
        l32 = np.sum(e, axis=-1, keepdims=True, dtype=f)
        l = r(l32)
        P = r(np.where(l > 0, e / np.where(l > 0, l, f(1)), f(0)))
        Pd = P if keep is None else r(P * np.asarray(keep, f) * f(1.0 / (1.0 - p_drop)))
        out = o.matmul(Pd, V)
        lse = np.where(l32[..., 0] > 0, m[..., 0] + np.log(np.where(l32[..., 0] > 0, l32[..., 0], f(1))), -np.inf)
    return out, lse, P, Pd, raw


def naive_attention(q, k, v, vis, scale, precision, softcap=None, bias=None, order="q", dropout_mask=None,
                    dropout_p=0.0):
    """The eager attention in ``precision`` (module docstring); float64 (out, lse)."""
    o = naive_ops(precision)
    r = o.r
    K, V = _rep(k, v, q.shape[1])
    out, lse, *_ = _naive_forward(o, r(q), r(K), r(V), vis, scale, softcap, bias, order, dropout_mask, dropout_p)
    return o.out(out), o.out(lse)


def naive_attention_backward(q, k, v, dout, vis, scale, precision, softcap=None, bias=None, order="q",
                             dropout_mask=None, dropout_p=0.0):
    """The eager attention backward in ``precision``: (dq, dk, dv) as float64 (module docstring)."""
    o = naive_ops(precision)
    f, r = o.compute, o.r
    Hq, Hkv = q.shape[1], k.shape[1]
    G = Hq // Hkv
    q, K, V, dO = r(q), *(r(a) for a in _rep(k, v, Hq)), r(dout)
    out, _, P, Pd, raw = _naive_forward(o, q, K, V, vis, scale, softcap, bias, order, dropout_mask, dropout_p)
    Z = None if dropout_mask is None else np.asarray(dropout_mask, f) * f(1.0 / (1.0 - dropout_p))
    dV = o.matmul(np.swapaxes(Pd, -1, -2), dO)
    dP = o.matmul(dO, np.swapaxes(V, -1, -2))
    if Z is not None:
        dP = r(dP * Z)
    Drow = o.sum(r(dO * r(out)), axis=-1, keepdims=True)
    dS = r(P * r(dP - Drow))
    if softcap is not None:
        th = r(np.tanh(r(raw / f(softcap))))
        dS = r(dS * r(f(1) - r(th * th)))
    sc = f(scale)
    dq = r(o.matmul(dS, K) * sc)
    dK = r(o.matmul(np.swapaxes(dS, -1, -2), q) * sc)
    B, _, Lk, D = dK.shape
    dk = o.sum(dK.reshape(B, Hkv, G, Lk, D), axis=2)
    dv = o.sum(dV.reshape(B, Hkv, G, Lk, dV.shape[-1]), axis=2)
    return o.out(dq), o.out(dk), o.out(dv)


def _spec_weights(q, K, V, vis, scale, softcap, bias):
    """Float64 (P, out, lse, raw, B): the spec's weights, output and lse (-inf on a row of no
    visible key), the raw scores, and the per-score rounding weight B_ij of the eager
    computation, without the operand term (module docstring)."""
    raw = scale * (q @ np.swapaxes(K, -1, -2))
    s = raw if softcap is None else softcap * np.tanh(raw / softcap)
    B = np.abs(raw) + 2.0  # the score's rounding; exp and the weight's own rounding
    if softcap is not None:
        B = B + np.abs(raw) + 2 * np.abs(s)
    if bias is not None:
        s = s + np.where(np.isfinite(bias), bias, 0.0)
        B = B + np.abs(s)
        vis = vis & np.isfinite(bias)
    s = np.where(vis, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True, initial=-np.inf)  # Lk = 0: -inf
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.exp(s - m)
        l = e.sum(-1, keepdims=True)
        P = np.where(l > 0, e / np.where(l > 0, l, 1.0), 0.0)
        lse = np.where(l[..., 0] > 0, m[..., 0] + np.log(np.where(l[..., 0] > 0, l[..., 0], 1.0)), -np.inf)
    return P, P @ V, lse, raw, B


def _hoeffding(*terms_sq):
    """LAMBDA sqrt(sum of the squared term bounds)."""
    return LAMBDA * np.sqrt(sum(terms_sq))


def _operand_sq(q, K, scale, W):
    """Squared term bounds of the scaled-operand roundings for sums sum_j W_ij s_ij (W: (..., Lq, Lk, E)).

    q scaled (one rounding per q_id, shared by all keys): (scale q_id sum_j W_ije k_jd)^2 summed over d;
    k scaled (one per k_jd): (scale q_id k_jd W_ije)^2 summed over j, d. Both orders are allowed: their sum.
    """
    sq = (scale * np.asarray(q)) ** 2
    *batch, Lq, Lk, E = W.shape
    Wt = np.ascontiguousarray(np.swapaxes(W, -1, -2)).reshape(*batch, Lq * E, Lk)
    t = (Wt @ K).reshape(*batch, Lq, E, K.shape[-1])  # sum_j W_ije k_jd (one GEMM a head)
    sq_q = (t**2 @ sq[..., :, :, None])[..., 0]  # sum_d sq_id t_ied^2
    sq_k = ((sq @ np.swapaxes(K**2, -1, -2))[..., :, None, :] @ W**2)[..., 0, :]  # sum_j (sq k^2)_ij W_ije^2
    return sq_q + sq_k


def _deviation_sq(a, V, out):
    """sum_j a_ij (v_je - out_ie)^2 (a >= 0), expanded into products: (a V^2) - 2 out (a V) + out^2 sum_j a,
    never forming the (..., Lq, Lk, Dv) deviations. The expansion cancels where every weighted v_je is
    near out_ie: an absolute error of a few float64 roundings of sum_j a_ij v_je^2, far below the
    float32 and lower-precision terms it is added to; clipped at 0."""
    got = a @ V**2 - 2 * out * (a @ V) + out**2 * np.sum(a, axis=-1, keepdims=True)
    return np.maximum(got, 0.0)


def _value_operand_sq(q, K, V, P, out, scale, exact=True):
    """``_operand_sq`` for W_ije = P_ij (v_je - out_ie), by products only: (q-scaled part, k-scaled part).

    q-scaled, ``exact``: sum_j W_ije k_jd = sum_j P_ij v_je k_jd - out_ie (P K)_id (one GEMM against
    the (Lk, Dv D) outer products v_j k_j^T), then sum_d sq_id t_ied^2. Otherwise its Cauchy-Schwarz
    bound (module docstring) dev_ie sum_d sq_id kvar_id, dev = ``_deviation_sq`` with a = P and
    kvar_id = (P k^2)_id - kappa_id^2, kappa = P K (both clipped at 0: their float64 cancellation).
    k-scaled: sum_j (sq k^2)_ij W_ije^2 = ``_deviation_sq`` with a = (sq k^2) P^2."""
    sq = (scale * np.asarray(q)) ** 2
    *batch, Lk, E = V.shape
    D = K.shape[-1]
    PK = P @ K
    if exact:
        VK = (V[..., :, :, None] * K[..., :, None, :]).reshape(*batch, Lk, E * D)
        t = (P @ VK).reshape(*P.shape[:-1], E, D) - out[..., :, :, None] * PK[..., :, None, :]
        sq_q = (t**2 @ sq[..., :, :, None])[..., 0]  # sum_d sq_id t_ied^2
    else:
        kvar = np.maximum(P @ K**2 - PK**2, 0.0)  # sum_j P_ij (k_jd - kappa_id)^2
        sq_q = _deviation_sq(P, V, out) * np.sum(sq * kvar, axis=-1, keepdims=True)
    sq_k = _deviation_sq((sq @ np.swapaxes(K**2, -1, -2)) * P**2, V, out)
    return sq_q, sq_k


def rounding_floor(q, k, v, vis, scale, precision, softcap=None, bias=None, *, margin=0.0):
    """(floor_out, floor_lse) of the module docstring, float64 scalars. floor_out is the floor with
    the exact q-scaled term or an upper bound of it, at most FLOOR_SLACK x (that floor + ``margin``)
    above it (``margin``: the caller's other terms; kernel_bounds passes FACTOR x the naive error)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    K, V = _rep(k, v, q.shape[1])
    return _floors(q, k, v, K, V, vis, scale, precision, _spec_weights(q, K, V, vis, scale, softcap, bias), margin)


def _floors(q, k, v, K, V, vis, scale, precision, weights, margin):
    """``rounding_floor`` on float64 q, k, v (K, V repeated to the query heads) from ``_spec_weights``."""
    u = unit_roundoff(precision)
    P, out, _, raw, B = weights
    cs, sq_k = _value_operand_sq(q, K, V, P, out, scale, exact=False)
    sq = _deviation_sq((P * B) ** 2, V, out) + sq_k  # every term but the q-scaled one
    D, Lk = q.shape[-1], k.shape[-2]
    f32 = 4 * (D + Lk) * U32
    Vmax = float(np.max(np.abs(v), initial=0.0))
    S = float(np.max(np.abs(np.where(vis, raw, 0.0)), initial=0.0))
    rest = 2 * u * float(np.max(np.abs(out), initial=0.0)) + f32 * Vmax * (1 + S)

    def floor(sq_all):
        return u * float(np.max(_hoeffding(sq_all), initial=0.0)) + rest

    fl_lo, fl_out = floor(sq), floor(sq + cs)  # the exact floor lies between them
    if fl_out - fl_lo > FLOOR_SLACK * (fl_lo + margin):
        fl_out = floor(sq + _value_operand_sq(q, K, V, P, out, scale)[0])
    sq_l = np.sum((P * B) ** 2, axis=-1) + _operand_sq(q, K, scale, P[..., None])[..., 0]
    ref_lse = np.log(np.maximum(np.sum(np.where(vis, 1.0, 0.0), -1), 1.0)) + S  # |lse| <= log Lk + max |s|
    fl_lse = u * float(np.max(_hoeffding(sq_l), initial=0.0)) + u * max(1.0, float(np.max(ref_lse, initial=0.0))) \
        + f32 * (1 + S)
    return fl_out, fl_lse


def _errors(naive, ref_out, ref_lse):
    o, l = naive
    fin = np.isfinite(ref_lse)
    with np.errstate(invalid="ignore"):
        return naive_error(o, ref_out), naive_error(np.where(fin, l, 0.0), np.where(fin, ref_lse, 0.0))


def kernel_bounds(q, k, v, ref_out, ref_lse, vis, scale, precision, softcap=None, bias=None, factor: float = FACTOR):
    """(atol_out, atol_lse) for a float32/bfloat16/float16 attention forward against the
    float64 spec: FACTOR x the larger naive error of the two eager orders + ``rounding_floor``.
    ``ref_out`` and ``ref_lse`` None: the naive errors are taken against the float64 (out, lse) the
    floor computes anyway (``_spec_weights``: the spec's formula in float64, within a few float64
    roundings of ``refimpl.attention``, far below any lower precision's naive error)."""
    q64, k64, v64 = (np.asarray(a, np.float64) for a in (q, k, v))
    K, V = _rep(k64, v64, q64.shape[1])
    weights = _spec_weights(q64, K, V, vis, scale, softcap, bias)
    if ref_out is None:
        ref_out, ref_lse = weights[1], weights[2]
    errs = [_errors(naive_attention(q, k, v, vis, scale, precision, softcap, bias, order), ref_out, ref_lse)
            for order in ORDERS]
    naive_out = factor * max(e[0] for e in errs)
    fl_out, fl_lse = _floors(q64, k64, v64, K, V, vis, scale, precision, weights, margin=naive_out)
    return naive_out + fl_out, factor * max(e[1] for e in errs) + fl_lse


def backward_rounding_floor(q, k, v, dout, vis, scale, precision, softcap=None, bias=None, dropout_mask=None,
                            dropout_p=0.0):
    """(floor_dq, floor_dk, floor_dv) of the module docstring, float64 scalars."""
    u = unit_roundoff(precision)
    q, k, v, dO = (np.asarray(a, np.float64) for a in (q, k, v, dout))
    Hq, Hkv = q.shape[1], k.shape[1]
    G = Hq // Hkv
    K, V = _rep(k, v, Hq)
    P, out, _, raw, B = _spec_weights(q, K, V, vis, scale, softcap, bias)
    Z = 1.0 if dropout_mask is None else np.asarray(dropout_mask, np.float64) / (1.0 - dropout_p)
    Pd = P * Z
    out = Pd @ V
    dP = (dO @ np.swapaxes(V, -1, -2)) * Z
    Drow = np.sum(dO * out, axis=-1, keepdims=True)
    tp = 1.0 if softcap is None else 1.0 - np.tanh(raw / softcap) ** 2
    e = tp * P * ((B + 2) * np.abs(dP - Drow) + 2 * np.abs(dP) + 2 * np.abs(Drow))
    dS = tp * P * (dP - Drow)
    # operand roundings of the scores feed the weights: bound them by scale |q_i||k_j| (l2), a small term
    A2 = scale * np.linalg.norm(q, axis=-1)[..., :, None] * np.linalg.norm(K, axis=-1)[..., None, :]
    e = e + tp * P * A2 * np.abs(dP - Drow)
    sq_dq = np.einsum("...ij,...jd->...id", (scale * e) ** 2, K**2)
    sq_dk = np.einsum("...ij,...id->...jd", (scale * e) ** 2, q**2)
    ePd = (B + A2 + 1) * Pd
    sq_dv = np.einsum("...ij,...id->...jd", ePd**2, dO**2)

    def grp(x):  # sum over the G query heads of each kv head
        b, _, L, d = x.shape
        return x.reshape(b, Hkv, G, L, d).sum(axis=2)

    sq_dk, sq_dv = grp(sq_dk), grp(sq_dv)
    D, Dv, Lq, Lk = q.shape[-1], v.shape[-1], q.shape[-2], k.shape[-2]
    f32 = 4 * (D + Dv + Lk + Lq * G) * U32
    dq = scale * dS @ K
    dk = grp(scale * np.swapaxes(dS, -1, -2) @ q)
    dv = grp(np.swapaxes(Pd, -1, -2) @ dO)
    # the terms of dS_ij = P_ij (dP_ij - D_i) before they cancel: dP_ij and D_i are Dv-term float32
    # sums, whose accumulation error stays where dP - D cancels (one key: dS = 0 exactly)
    abs_terms = tp * P * ((np.abs(dO) @ np.swapaxes(np.abs(V), -1, -2)) * np.abs(Z)
                          + np.sum(np.abs(dO) * np.abs(out), axis=-1, keepdims=True))
    mag_dq = float(np.max(scale * abs_terms @ np.abs(K), initial=0.0))
    mag_dk = float(np.max(grp(scale * np.swapaxes(abs_terms, -1, -2) @ np.abs(q)), initial=0.0))
    mag_dv = float(np.max(grp(np.swapaxes(Pd, -1, -2) @ np.abs(dO)), initial=0.0))
    dtanh_dq = dtanh_dk = 0.0
    if softcap is not None:  # 1 - t^2 from a rounded t: absolute, one-signed where tanh saturates (docstring)
        t = np.abs(np.tanh(raw / softcap))
        et = u * (2 * TANH_ULPS * t + t * t) * P * np.abs(dP - Drow)
        dtanh_dq = float(np.max(scale * et @ np.abs(K), initial=0.0))
        dtanh_dk = float(np.max(grp(scale * np.swapaxes(et, -1, -2) @ np.abs(q)), initial=0.0))
    floors = []
    for sq, g, mag, whole in ((sq_dq, dq, mag_dq, dtanh_dq), (sq_dk, dk, mag_dk, dtanh_dk), (sq_dv, dv, mag_dv, 0.0)):
        floors.append(u * float(np.max(_hoeffding(sq), initial=0.0)) + 2 * u * float(np.max(np.abs(g), initial=0.0))
                      + f32 * mag + whole)
    return tuple(floors)


def backward_kernel_bounds(q, k, v, dout, ref_grads, vis, scale, precision, softcap=None, bias=None,
                           dropout_mask=None, dropout_p=0.0, factor: float = FACTOR):
    """(atol_dq, atol_dk, atol_dv) for a low-precision attention backward against the float64
    spec gradients ``ref_grads``: FACTOR x the larger naive error of the two eager orders + the floor."""
    naive = [naive_attention_backward(q, k, v, dout, vis, scale, precision, softcap, bias, order, dropout_mask,
                                      dropout_p) for order in ORDERS]
    floors = backward_rounding_floor(q, k, v, dout, vis, scale, precision, softcap, bias, dropout_mask, dropout_p)
    return tuple(factor * max(naive_error(n[i], ref_grads[i]) for n in naive) + floors[i] for i in range(3))
