"""The MoE forward's rounding terms in a kernel's own precision (``properties.moe``'s bounds).

``_expert_rounding``: a first-order bound on one expert (FFN or SwiGLU) evaluated in the adapter's
precision against the float64 spec; ``_combine_rounding``: the gated sum of those over the experts
with the combine's own roundings. ``properties.moe`` (``check_sparse_equals_dense``,
``check_dispatch_combine``, ``check_fused_forward``) adds them to its precision bound; the
derivations are in the docstrings.
"""

from __future__ import annotations

import numpy as np

import refimpl.moe as M

from .comparison import U32, UNIT_ROUNDOFF
from .moe_protocol import precision_from_unit_roundoff
from .precision import precision_of

U64 = 2.0**-53


def _prec(impl) -> str:
    """The adapter's precision (``properties.precision``; the deprecated ``unit_roundoff`` of an
    object that is not an MoEAdapter is mapped with a DeprecationWarning)."""
    u = getattr(impl, "unit_roundoff", None)
    if u is not None and getattr(impl, "precision", None) is None:
        return precision_from_unit_roundoff(u, impl.name)
    return precision_of(impl)


# max |act'| of the experts' activations (relu 1, gelu (erf) 1.1289 at x = 1.4142..., silu 1.0998 at
# x = 2.3994...), rounded up; and ulps of float32 erf/exp-based activation routines (CUDA, OpenCL and
# libm evaluate gelu and silu within 2 to 4 ulps of |act|), both for :func:`_expert_rounding`
ACT_LIPSCHITZ = 1.13
ACT_ULPS = 4


def _expert_rounding(impl, expert, x):
    """(T, D) first-order bound on |F_hat(x) - F(x)|: an expert evaluated by a kernel of the
    adapter's precision p (unit roundoff u_p: weights, biases, the hidden layer and the output
    stored in p; every dot product accumulated in a = float32, or float64 for p = float64, in any
    order, so a sum of n terms errs by at most n u_a sum |terms|), against the float64 spec F.
    x is exactly representable in p (drawn so). With |.| elementwise:

      FFN  y = act(x W1 + b1) W2 + b2:
        A   = |x| |W1| + |b1|                           the first GEMM's terms
        da  = (u_p + (D + 1) u_a) A                      W1, b1 stored in p; D products and a bias summed
        dh  = L da + (ACT_ULPS u_a + u_p) |h|            act Lipschitz L, its own ulps, h stored in p
        dF  = dh |W2| + (u_p + (H + 1) u_a) (|h| |W2| + |b2|) + u_p |F|
      SwiGLU  y = (silu(x Wg) * (x Wu)) Wd:
        dag = (u_p + D u_a) |x| |Wg|,  dau = (u_p + D u_a) |x| |Wu|
        dg  = L dag + ACT_ULPS u_a |silu(ag)|;  dh = |silu(ag)| dau + |au| dg + dg dau + (u_a + u_p) |h|
        dF  = dh |Wd| + (u_p + H u_a) |h| |Wd| + u_p |F|

    These terms scale with the expert's own intermediate magnitudes, not with |F|: an expert whose
    output cancels (|F| << |h| |W2|) errs by u_a |h| |W2| however small F is. None for an expert of
    another type (its adapter's bound is then the property's own)."""
    from refimpl.moe.experts import FFNExpert, SwiGLUExpert

    p = _prec(impl)
    up = UNIT_ROUNDOFF[p]
    ua = U64 if p == "float64" else U32
    x = np.asarray(x, dtype=np.float64)
    ax, D = np.abs(x), x.shape[1]
    L = ACT_LIPSCHITZ
    if isinstance(expert, FFNExpert):
        if expert.act not in ("relu", "gelu", "silu"):
            return None
        W1, W2 = expert.W1, expert.W2
        b1 = np.zeros(W1.shape[1]) if expert.b1 is None else expert.b1
        b2 = np.zeros(W1.shape[0]) if expert.b2 is None else expert.b2
        H = W1.shape[1]
        da = (up + (D + 1) * ua) * (ax @ np.abs(W1) + np.abs(b1))
        h = np.abs(M.experts.activation(expert.act, x @ W1 + b1))
        dh = L * da + (ACT_ULPS * ua + up) * h
        dF = dh @ np.abs(W2) + (up + (H + 1) * ua) * ((h @ np.abs(W2)) + np.abs(b2))
    elif isinstance(expert, SwiGLUExpert):
        Wg, Wu, Wd = expert.Wg, expert.Wu, expert.Wd
        H = Wg.shape[1]
        ag, au = x @ Wg, x @ Wu
        dag = (up + D * ua) * (ax @ np.abs(Wg))
        dau = (up + D * ua) * (ax @ np.abs(Wu))
        g = np.abs(ag / (1.0 + np.exp(-ag)))
        dg = L * dag + ACT_ULPS * ua * g
        h = g * np.abs(au)
        dh = g * dau + np.abs(au) * dg + dg * dau + (ua + up) * h
        dF = dh @ np.abs(Wd) + (up + H * ua) * (h @ np.abs(Wd))
    else:
        return None
    return dF + up * np.abs(np.asarray(expert(x), dtype=np.float64))


def _combine_rounding(impl, case, G):
    """(T, D) first-order bound on |y_hat - sum_e G[:, e] FFN_e(x)| of a kernel of the adapter's
    precision that combines its own gates G exactly as returned (G is the adapter's, so the gates'
    own rounding is not in it): each expert term errs by |G_e| dF_e (:func:`_expert_rounding`),
    and the combine's k products and k - 1 additions in u_a plus the store in u_p add
    (k u_a + u_p) sum_e |G_e| (|F_e| + dF_e). This term is what the naive baseline (experts in
    float64, rounded once) and a floor scaled by |y| both miss when the k = E gated terms
    cancel. None when an expert is of another type."""
    p = _prec(impl)
    up = UNIT_ROUNDOFF[p]
    ua = U64 if p == "float64" else U32
    k = int(np.count_nonzero(G, axis=1).max(initial=0))
    total = np.zeros(case.x.shape)
    for e, ex in enumerate(case.experts):
        dF = _expert_rounding(impl, ex, case.x)
        if dF is None:
            return None
        g = np.abs(G[:, [e]])
        F = np.abs(np.asarray(ex(case.x), dtype=np.float64))
        total += g * dF + (k * ua + up) * g * (F + dF)
    return total
