"""The checks of ``refimpl.mixers``: feature maps and their widths, gates and decays (log-space, <= 0),
the delta rule's beta, FAVOR+ and random-feature matrices, Linformer projections, RWKV-4's channels and
exponent range, the selective scan's groups, steps and stable A, the library presets' shapes.

Each takes plain values (arrays, shapes, option tuples, error classes) and raises through ``fail`` or
the generic validators; this package never imports ``refimpl.mixers``.
"""

from __future__ import annotations

import numpy as np

from .arrays import as_float_array, leading_shape
from .budget import FLOAT_MAX
from .scalars import fail


# ---------------------------------------------------------------------------
# feature maps (linear attention, gated kernel attention)


def mapped_features(out, x_shape: tuple, name: str) -> np.ndarray:
    """What a callable feature map returned for x (B, H, L, d): (B, H, L, d_phi), finite."""
    out = as_float_array(out, f"feature_map({name})", ndim=4)
    if out.shape[:3] != x_shape[:3]:
        fail("feature_map", f"a map that keeps the leading (B, H, L) = {x_shape[:3]}", str(out.shape))
    return out


def feature_map_name(feature_map, maps) -> str:
    """A named feature map (a key of ``maps``); callables are checked by ``mapped_features``."""
    if not isinstance(feature_map, str) or feature_map not in maps:
        fail("feature_map", f"one of {sorted(maps)} or a callable", repr(feature_map))
    return feature_map


def feature_widths(fq: np.ndarray, fk: np.ndarray) -> None:
    """linear_attention: phi(k) as wide as phi(q), and k's (B, H) those of q."""
    if fq.shape[3] != fk.shape[3]:
        fail("k", f"phi(k) as wide as phi(q) = {fq.shape[3]} (k's last axis equal to q's)", str(fk.shape[3]))
    if fk.shape[:2] != fq.shape[:2]:
        fail("k", f"leading shape (B, H) of q = {fq.shape[:2]}", f"shape {fk.shape}")


def leading_bhl(x: np.ndarray, name: str, ref: np.ndarray, ref_name: str, axes: str = "(B, H, L)") -> None:
    """x's leading (B, H, L) equal to ref's (``axes`` names them as the caller's docstring does)."""
    if x.shape[:3] != ref.shape[:3]:
        fail(name, f"leading shape {axes} of {ref_name} = {ref.shape[:3]}", str(x.shape))


def same_feature_shape(fq: np.ndarray, fk: np.ndarray) -> None:
    if fq.shape != fk.shape:
        fail("feature_map", "phi(q) and phi(k) of one shape", f"{fq.shape} and {fk.shape}")


# ---------------------------------------------------------------------------
# gates and decays


def log_gates(g, B: int, H: int, L: int, K: int) -> np.ndarray:
    """gated linear attention's g: (B, H, L) or (B, H, L, K) log-space gates <= 0, as (B, H, L, 1 or K)."""
    g = as_float_array(g, "g")
    if g.shape == (B, H, L):
        g = g[..., None]
    elif g.shape != (B, H, L, K):
        fail("g", f"shape (B, H, L) = {(B, H, L)} or (B, H, L, K) = {(B, H, L, K)}", str(g.shape))
    if (g > 0).any():
        fail("g", "log-space gates <= 0 (a decay, never a growth)", repr(float(np.max(g))))
    return g


def delta_beta(beta, B: int, H: int, L: int, V: int) -> np.ndarray:
    """The delta rule's beta: (B, H, L) or per value channel (B, H, L, V), as (B, H, L, 1 or V)."""
    beta = as_float_array(beta, "beta")
    if beta.shape == (B, H, L):
        return beta[..., None]
    if beta.shape != (B, H, L, V):
        fail("beta", f"(B, H, L) = {(B, H, L)} or (B, H, L, V)", str(beta.shape))
    return beta


def delta_log_gates(g, B: int, H: int, L: int) -> np.ndarray:
    """The gated delta rule's g: (B, H, L) log-gates <= 0."""
    g = as_float_array(g, "g")
    leading_shape(g, "g", (B, H, L), "(B, H, L)")
    if g.ndim != 3 or (g > 0).any():
        fail("g", "(B, H, L) log-gates <= 0", repr(float(np.max(g))))
    return g


def gate_weight(W, name: str, H: int, D: int, d_phi: int) -> np.ndarray:
    """A gate projection (G, D) or (H, G, D), G = 1 or d_phi, as (H, G, D)."""
    W = as_float_array(W, name)
    if W.ndim == 2:
        W = np.broadcast_to(W, (H,) + W.shape)
    if W.ndim != 3 or W.shape[0] != H or W.shape[2] != D or W.shape[1] not in (1, d_phi):
        fail(name, f"shape (G, {D}) or ({H}, G, {D}) with G = 1 or d_phi = {d_phi}", str(W.shape))
    return W


# ---------------------------------------------------------------------------
# random features (FAVOR+, trigonometric), Linformer


def feature_matrix(x, W, xname: str) -> tuple:
    """x (B, H, L, d) and random features W (m, d), m >= 1."""
    x = as_float_array(x, xname, ndim=4)
    W = as_float_array(W, "W", ndim=2, min_size={0: 1})
    if W.shape[1] != x.shape[3]:
        fail("W", f"shape (m, {x.shape[3]}) (the head dim of {xname})", str(W.shape))
    return x, W


def favor_logit_range(x: np.ndarray, W: np.ndarray, names: str) -> None:
    """|W x - |x|^2/2| <= |W| |x| + |x|^2/2: below FLOAT_MAX / 4 neither term nor a difference of two
    logits overflows. Beyond it the features are not computed (an error, never NaN)."""
    with np.errstate(over="ignore"):  # a bound beyond float64 is inf, refused below
        xn = max(np.abs(x).max(initial=0.0) * np.sqrt(x.shape[3]), 0.0)
        wn = np.abs(W).max(initial=0.0) * np.sqrt(W.shape[1])
        wide = xn * wn
    if xn > np.sqrt(FLOAT_MAX / 4) or (wide > FLOAT_MAX / 4):
        fail(names, "FAVOR+ logits W x - |x|^2/2 within float64",
             f"bounds that may overflow (|x| <= {xn:.3g}, |w_i| <= {wn:.3g}); rescale {names.split(',')[0]}")


def head_dim(k: np.ndarray, d: int) -> None:
    if k.shape[3] != d:
        fail("k", f"head dim d = {d} of q", f"shape {k.shape}")


def kernel_points(x: np.ndarray, y: np.ndarray) -> None:
    """gaussian_kernel: y (B, H, Ly, d) with the (B, H, d) of x."""
    if y.shape[:2] != x.shape[:2] or y.shape[3] != x.shape[3]:
        fail("y", f"shape (B, H, Ly, d) with (B, H, d) of x = {x.shape[:2] + x.shape[3:]}", str(y.shape))


def projection(P, name: str, L: int) -> np.ndarray:
    """A Linformer projection (k_proj, L), k_proj >= 1."""
    P = as_float_array(P, name, ndim=2, min_size={0: 1})
    if P.shape[1] != L:
        fail(name, f"shape (k_proj, {L}) (projecting the {L} positions of k)", str(P.shape))
    return P


def same_projection(F: np.ndarray, E: np.ndarray) -> None:
    if F.shape != E.shape:
        fail("F", f"the shape of E {E.shape}", str(F.shape))


# ---------------------------------------------------------------------------
# RWKV-4


def same_shape_as(x: np.ndarray, name: str, ref: np.ndarray, ref_name: str) -> None:
    """x of exactly ref's shape (v of k, z of u)."""
    if x.shape != ref.shape:
        fail(name, f"the shape of {ref_name} {ref.shape}", str(x.shape))


def per_channel(x, name: str, H: int, D: int) -> np.ndarray:
    """RWKV-4's w or u: (H, D) or (D,)."""
    x = as_float_array(x, name)
    if x.shape not in ((D,), (H, D)):
        fail(name, f"shape (H, D) = {(H, D)} or (D,)", str(x.shape))
    return x


def wkv_exponent_range(w: np.ndarray, u: np.ndarray, k: np.ndarray, L: int) -> None:
    """Every exponent the WKV forms take lies within |w| max(L - 1, 1) + 2 |k| + |u| of 0: below
    FLOAT_MAX / 2 none overflows (a difference of two of them included)."""
    mx = lambda a: float(np.abs(a).max(initial=0.0))  # noqa: E731
    if mx(w) * max(L - 1, 1) + 2 * mx(k) + mx(u) > FLOAT_MAX / 2:
        fail("w, u, k", f"log-weights (t-1-j) w + k_j and u + k_t within float64 "
             f"(|w| (L-1) + 2|k| + |u| <= {FLOAT_MAX / 2:.3g})", "a bound beyond it")


def recurrent_wkv_in_range(out: np.ndarray, error: type) -> np.ndarray:
    """The naive recurrence's output (result range): finite, else ``error`` (RecurrentOverflow)."""
    if not np.isfinite(out).all():
        fail("k, u, w", "exp(k), exp(u + k) and exp(w) within float64 for form='recurrent' (k <= 709.78, and not "
             "every e^k underflowing, k >= -745)", "values beyond; form='stable' is the same function without "
             "overflow", error=error)
    return out


# ---------------------------------------------------------------------------
# selective scan (Mamba), SSD (Mamba-2)


def head_groups(G: int, n: int, what: str) -> None:
    """B and C's G groups divide the n heads (channels): ``what`` names n, e.g. "heads 4"."""
    if G == 0 or n % G:
        fail("B", f"a number of groups that divides the number of {what}", str(G))


def step_sizes(delta: np.ndarray, name: str = "delta", after: str = " (after delta_bias and softplus)",
               shown: str = "") -> None:
    """Discretisation steps >= 0."""
    if (delta < 0).any():
        fail(name, f"step sizes >= 0{after}", f"{shown}{float(np.min(delta))!r}")


def stable_diagonal(A: np.ndarray) -> None:
    if (A > 0).any():
        fail("A", "a stable diagonal A <= 0 (Mamba uses A = -exp(A_log))", repr(float(np.max(A))))


def stable_head_decay(A: np.ndarray) -> None:
    if (A > 0).any():
        fail("A", "a stable decay a_h <= 0 per head (Mamba-2 uses A = -exp(A_log))", f"max {float(A.max())!r}")


def ssd_skip(D, H: int, P: int) -> np.ndarray:
    """SSD's D: (H,) or (H, P), as (H, P) (a broadcast view)."""
    Da = as_float_array(D, "D")
    if Da.shape not in ((H,), (H, P)):
        fail("D", f"shape (H,) = ({H},) or (H, P) = ({H}, {P})", str(Da.shape))
    return np.broadcast_to(Da if Da.ndim == 2 else Da[:, None], (H, P))


def time_invariant(arrays, L: int) -> None:
    """form='convolution': delta, B and C constant along L (axis 2), given as (array, name) pairs."""
    for arr, name in arrays:
        if L and not np.array_equal(arr, np.broadcast_to(arr[:, :, :1], arr.shape)):
            fail(f"form, {name}", "a time-invariant SSM for form='convolution'", f"{name} varying along L")


def mamba_B(Bm: np.ndarray) -> None:
    """mamba ``selective_scan_ref``'s variable B: (B, N, L) or (B, G, N, L)."""
    if Bm.ndim not in (3, 4):
        fail("B", "(B, N, L) or (B, G, N, L)", f"shape {Bm.shape}")


def default_scale_features(q: np.ndarray) -> None:
    """fla's default scale K^-0.5 needs K >= 1 features."""
    if q.shape[-1] == 0:
        fail("q", "K >= 1 features for the default scale K^-0.5", f"shape {q.shape}")
