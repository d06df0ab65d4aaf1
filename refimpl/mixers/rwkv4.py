"""RWKV-4 WKV: per-channel decayed softmax-like averaging with a bonus for the current token.

The definition (Peng et al. 2023, "RWKV: Reinventing RNNs for the Transformer Era", eq. 14;
BlinkDL RWKV-LM ``RWKV-v4/cuda/wkv_cuda.cu`` ``kernel_forward``, commit 524481d), per channel c::

    wkv_t = ( sum_{j<t} e^{(t-1-j) w + k_j} v_j + e^{u + k_t} v_t )
          / ( sum_{j<t} e^{(t-1-j) w + k_j}       + e^{u + k_t}      )
    out_t = sigmoid(r_t) * wkv_t                    (receptance gates the output: ``model.py`` ``sr * wkv``)

* ``w`` is the per-step log-decay the kernel receives: w = -exp(time_decay) < 0
  (``RWKV-v4/src/model.py``: ``w = -torch.exp(w)`` before ``wkv_cuda.forward``). The most recent
  past token (j = t-1) is not decayed at all; token j < t carries e^{(t-1-j) w}.
* ``u`` (``time_first``) is a bonus used only for the current token t, never for past ones.
* keys are per channel: exp(k_jc), no dot product with r. Receptance r enters only through
  sigmoid(r_t) outside the average. docs/errata.md#e9: the notes write weights exp(r_t . k_j -
  (t-j) w) and claims the recurrence s_t = e^{-w} s_{t-1} + e^{r_t . k_t} v_t computes them;
  that holds only when r_t is the same for every t (the past terms were added with their own
  r_j, not r_t).

Forms, all equal to the definition:

* ``"parallel"``: the definition as an explicit weighted average, weights in log space
  (logsumexp over j), O(L^2) per channel;
* ``"recurrent"``: the naive recurrence a_t = e^w a_{t-1} + e^{k_t} v_t, b_t likewise,
  wkv_t = (a_{t-1} + e^{u+k_t} v_t) / (b_{t-1} + e^{u+k_t}); exact in real arithmetic, but
  e^{k} overflows float64 for k > 709.78 (then it raises OverflowError rather than return NaN);
* ``"stable"``: the CUDA kernel's running-max recurrence, with o the running max exponent and
  q the past's total weight in units of e^o (a = p e^o, b = q e^o in the kernel)::

        no = max(o, u + k_t);  A = e^{o - no};  B = e^{u + k_t - no}
        wkv_t = (A p + B v_t) / (A q + B)
        no = max(w + o, k_t);  A = e^{w + o - no};  B = e^{k_t - no}
        p = A p + B v_t;  q = A q + B;  o = no

  computed here with the running mean m = p / q in place of p (wkv_t = lam m + (1 - lam) v_t,
  lam = A q / (A q + B), and m updated the same way): the same function, but a sum p of many
  values near float64's maximum never overflows, and each step's convex combination is kept within
  [min(m, v_t), max(m, v_t)], where its exact value lies;
* ``"scan"``: the same running sums as a log-depth prefix scan
  (docs/mixers.md#rwkv-4-wkv-as-a-prefix-scan). A segment of n tokens is (n, o, q, m): total weight q e^o, weighted mean m of its
  values; token j is (1, k_j, 1, v_j). Combining an earlier segment X with a later one Y decays X
  by e^{n_Y w}::

        n = n_X + n_Y;  o = max(o_X + n_Y w, o_Y)
        a_X = q_X e^{o_X + n_Y w - o};  a_Y = q_Y e^{o_Y - o};  q = a_X + a_Y
        m = (a_X m_X + a_Y m_Y) / q                 (kept within [min(m_X, m_Y), max(m_X, m_Y)])

  which is associative (it composes the affine maps a -> e^{n w} a + segment), so ceil(log2 L)
  doubling steps (Hillis-Steele) give every inclusive prefix. wkv_t then reads the prefix that ends
  at t - 1 and adds the bonus term as the stable form does. Every exponent is shifted by the
  running max, as the CUDA kernel's, so no step overflows.

Layout: k, v (B, H, L, D) (RWKV-4 is (B, T, C): C = H * D channels); w, u (H, D) or (D,).
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from .._validate import as_float_array, choice, count, finite_result
from .._validate import mixers as VX
from ..logistic import mul_sigmoid

FORMS = ("stable", "recurrent", "parallel", "scan")


def rwkv4_w(time_decay):
    """The kernel's w = -exp(time_decay) from RWKV-4's learned ``time_decay`` parameter."""
    with np.errstate(over="ignore"):
        w = -np.exp(as_float_array(time_decay, "time_decay"))
    return finite_result(w, "w = -exp(time_decay)", "time_decay")


class _Setup:
    def __init__(self, w, u, k, v):
        self.k = as_float_array(k, "k", ndim=4)
        self.v = as_float_array(v, "v", ndim=4)
        VX.same_shape_as(self.v, "v", self.k, "k")
        B, H, L, D = self.k.shape
        self.w = np.broadcast_to(VX.per_channel(w, "w", H, D), (B, H, D))
        self.u = np.broadcast_to(VX.per_channel(u, "u", H, D), (B, H, D))
        self.L = L
        VX.wkv_exponent_range(self.w, self.u, self.k, L)  # no exponent of the forms overflows


def log_weights(w, u, k):
    """log of the unnormalised WKV weights, (B, H, L_t, L_j, D): (t-1-j) w + k_j for j < t,
    u + k_t for j = t, -inf for j > t. The parallel form and the worked example read these."""
    return _log_weights(_Setup(w, u, k, k))


def _log_weights(s: "_Setup") -> np.ndarray:
    """``log_weights`` of checked inputs (wkv's parallel form)."""
    t = np.arange(s.L)
    lag = (t[:, None] - 1 - t[None, :]).astype(float)  # t - 1 - j
    past = lag[None, None, :, :, None] * s.w[:, :, None, None, :] + s.k[:, :, None, :, :]
    cur = s.u[:, :, None, :] + s.k  # (B, H, L, D)
    out = np.where((lag >= 0)[None, None, :, :, None], past, -np.inf)
    idx = np.arange(s.L)
    out[:, :, idx, idx, :] = cur
    return out


class RecurrentOverflow(ValueError, OverflowError):
    """``wkv(form="recurrent")`` left float64 range: a ValueError (the contract's error; catch that),
    also an OverflowError as earlier versions raised."""


def wkv(w, u, k, v, *, form="stable"):
    """RWKV-4 WKV (module doc), (B, H, L, D). ``form``: "stable" (CUDA kernel), "recurrent"
    (naive; raises ``RecurrentOverflow``, a ValueError, where e^k overflows or underflows, as a kernel
    without the max shift would give inf/NaN), "parallel", "scan" (log-depth prefix scan)."""
    s = _Setup(w, u, k, v)
    choice(form, "form", FORMS)
    if form == "parallel":
        lw = _log_weights(s)
        lw = lw - logsumexp(lw, axis=3, keepdims=True)
        with np.errstate(over="ignore", invalid="ignore"):
            y = np.einsum("bhtjd,bhjd->bhtd", np.exp(lw), s.v)
        # a convex combination of v_0..v_t: within their running min and max (a sum of terms near
        # float64's maximum may round past it; the exact average never does)
        return np.clip(np.nan_to_num(y, nan=0.0), np.minimum.accumulate(s.v, axis=2), np.maximum.accumulate(s.v, axis=2))
    if form == "scan":
        return _scan_form(s, combine_segments)
    out = np.empty_like(s.k)
    if form == "recurrent":
        a = b = np.zeros(s.w.shape)
        with np.errstate(over="ignore", invalid="ignore"):
            for t in range(s.L):
                ek, euk = np.exp(s.k[:, :, t]), np.exp(s.u + s.k[:, :, t])
                out[:, :, t] = (a + euk * s.v[:, :, t]) / (b + euk)
                a, b = np.exp(s.w) * a + ek * s.v[:, :, t], np.exp(s.w) * b + ek
        return VX.recurrent_wkv_in_range(out, RecurrentOverflow)
    if form == "stable":
        m = q = np.zeros(s.w.shape)
        # "no past yet": -inf, exactly (the kernel's MIN_VALUE = -1e38 stands in for it, which gives
        # 0/0 at t = 0 once u + k_0 < -1e38: A = e^0 = 1 weights an empty past, B = e^(u+k-o) = 0)
        o = np.full(s.w.shape, -np.inf)
        for t in range(s.L):
            kt, vt = s.k[:, :, t], s.v[:, :, t]
            no = np.maximum(o, s.u + kt)
            A, Bc = np.exp(o - no), np.exp(s.u + kt - no)
            out[:, :, t] = _blend(A * q, m, Bc, vt)
            no = np.maximum(s.w + o, kt)
            A, Bc = np.exp(s.w + o - no), np.exp(kt - no)
            m, q, o = _blend(A * q, m, Bc, vt), A * q + Bc, no
        return out
    raise AssertionError(form)  # checked by choice above


def _blend(ax, mx, ay, my):
    """(ax mx + ay my) / (ax + ay) for weights ax, ay >= 0 (not both 0), as lam mx + (1 - lam) my, kept within
    [min(mx, my), max(mx, my)]: a convex combination never leaves its range, whatever the magnitudes."""
    lam = ax / (ax + ay)
    with np.errstate(over="ignore", invalid="ignore"):
        y = lam * mx + (1.0 - lam) * my
    return np.clip(np.nan_to_num(y, nan=0.0), np.minimum(mx, my), np.maximum(mx, my))


def combine_segments(earlier, later, w):
    """The scan's operator: segment ``earlier`` followed by ``later``, each (n, o, q, m) (module doc,
    form "scan"); n (L,) token counts, o, q, m (B, H, L, D); w (B, H, D) the per-step log-decay."""
    nx, ox, qx, mx = earlier
    ny, oy, qy, my = later
    ox = ox + ny[:, None] * w[:, :, None, :]  # decay the earlier segment over the later one's tokens
    o = np.maximum(ox, oy)
    ax, ay = qx * np.exp(ox - o), qy * np.exp(oy - o)
    return nx + ny, o, ax + ay, _blend(ax, mx, ay, my)


def prefix_scan_steps(L: int) -> int:
    """Doubling steps the "scan" form takes for L tokens: ceil(log2 L) (0 for L <= 1)."""
    return max(count(L, "L") - 1, 0).bit_length()


def wkv_prefix_scan(w, u, k, v, *, combine=None):
    """``wkv(form="scan")`` with the segment operator as an argument (default ``combine_segments``):
    a kernel author can run their own operator through the same scan; any operator that is not the
    associative composition of the module doc gives a different answer at some length."""
    return _scan_form(_Setup(w, u, k, v), combine_segments if combine is None else combine)


def _scan_form(s: _Setup, combine) -> np.ndarray:
    """Hillis-Steele inclusive scan of the tokens under ``combine``, then the bonus read."""
    if s.L == 0:
        return np.empty_like(s.k)
    n = np.ones(s.L)
    o, q, m = s.k.copy(), np.ones_like(s.k), s.v.copy()
    d = 1
    while d < s.L:  # after the step with offset d, position t holds the segment (t - 2d, t]
        _, on, qn, mn = combine((n[:-d], o[:, :, :-d], q[:, :, :-d], m[:, :, :-d]),
                                (n[d:], o[:, :, d:], q[:, :, d:], m[:, :, d:]), s.w)
        n = np.concatenate([n[:d], n[:-d] + n[d:]])
        o, q, m = (np.concatenate([x[:, :, :d], y], axis=2) for x, y in ((o, on), (q, qn), (m, mn)))
        d *= 2
    # the past of token t is the prefix ending at t - 1; token 0 has none (o = -inf, weight q = 0)
    B, H, _, D = s.k.shape
    op = np.concatenate([np.full((B, H, 1, D), -np.inf), o[:, :, :-1]], axis=2)
    qp = np.concatenate([np.zeros((B, H, 1, D)), q[:, :, :-1]], axis=2)
    mp = np.concatenate([np.zeros((B, H, 1, D)), m[:, :, :-1]], axis=2)
    cur = s.u[:, :, None, :] + s.k
    no = np.maximum(op, cur)
    return _blend(np.exp(op - no) * qp, mp, np.exp(cur - no), s.v)


def rwkv4_time_mixing_output(r, wkv_out):
    """out_t = sigmoid(r_t) * wkv_t (RWKV-4 ``model.py`` ``RWKV_TimeMix.forward``: ``sr * wkv``)."""
    r = as_float_array(r, "r", ndim=4)
    wkv_out = as_float_array(wkv_out, "wkv_out", shape=r.shape, shape_doc="(B, H, L, D) of r")
    return mul_sigmoid(wkv_out, r)  # refimpl.logistic: sigmoid(r) exact below r = -709.8, where expit is 0


__all__ = ["FORMS", "log_weights", "prefix_scan_steps", "wkv_prefix_scan", "rwkv4_time_mixing_output", "rwkv4_w", "wkv"]
