"""The Mamba block (Gu & Dao 2023, Fig. 3): in-projection, causal conv1d, selective scan, gate, out-projection.

docs/hybrid.md#the-mamba-block. Per token x_t (d_model), with d_inner = expand * d_model,
R = dt_rank (default ceil(d_model / 16)) and N = d_state::

    [u_t ; z_t] = x_t W_in (+ b_in)                     W_in (d_model, 2 d_inner): u first, the gate z second
    u'_t = silu(conv1d_causal(u)_t + b_conv)            depthwise, width d_conv (refimpl.mixers.ssm.causal_conv1d)
    [r_t ; B_t ; C_t] = u'_t W_x                        W_x (d_inner, R + 2N), no bias
    delta_t = softplus(r_t W_dt + b_dt)                 W_dt (R, d_inner); b_dt inside the softplus
    A = -exp(A_log)                                     A_log (d_inner, N)
    y_t = selective_scan(u', delta, A, B, C, D)_t * silu(z_t)      (refimpl.mixers.ssm, ZOH-A / Euler-B)
    out_t = y_t W_out (+ b_out)                         W_out (d_inner, d_model)

A residual layer around it is pre-norm, out = x + mixer(norm(x)) (mamba_ssm ``modules/block.py``
``Block``; :class:`refimpl.hybrid.MambaLayer`).

Parameters (:func:`mamba_params`): 2 d_model d_inner (W_in) + d_inner d_conv (+ d_inner conv bias)
+ d_inner (R + 2N) (W_x) + R d_inner + d_inner (W_dt, b_dt) + d_inner N (A_log) + d_inner (D)
+ d_inner d_model (W_out) (+ 2 d_inner + d_model with the projection biases).

Conventions: row vectors times (in, out) matrices as :mod:`refimpl.block`; torch's ``nn.Linear``
stores the transpose. Checked against mamba_ssm 2.3.2 ``mamba_ssm/modules/mamba_simple.py``
``Mamba.forward`` (its non-fused path with ``ops/selective_scan_interface.py`` ``selective_scan_ref``)
and transformers 5.25.0 ``models/mamba/modeling_mamba.py`` ``MambaMixer.forward`` (the torch path),
``tests/test_seeds_libraries.py``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

from ._validate import as_float_array, check_budget, count, finite_result, flag, instance, positive_int
from ._validate import layers as _V
from .mixers.ssm import causal_conv1d, selective_scan


@dataclasses.dataclass(frozen=True)
class MambaWeights:
    """One Mamba mixer's parameters (module doc); the optional biases are None when absent."""

    in_proj: np.ndarray
    conv_weight: np.ndarray
    x_proj: np.ndarray
    dt_proj: np.ndarray
    dt_bias: np.ndarray
    A_log: np.ndarray
    D: np.ndarray
    out_proj: np.ndarray
    conv_bias: Optional[np.ndarray] = None
    in_proj_bias: Optional[np.ndarray] = None
    out_proj_bias: Optional[np.ndarray] = None

    def __post_init__(self):
        for name, w in _V.mamba_weights(self).items():  # validated float64 copies: no aliasing of the caller's arrays
            object.__setattr__(self, name, w)

    @property
    def d_model(self) -> int:
        return self.in_proj.shape[0]

    @property
    def d_inner(self) -> int:
        return self.in_proj.shape[1] // 2

    @property
    def d_state(self) -> int:
        return self.A_log.shape[1]

    @property
    def dt_rank(self) -> int:
        return self.dt_proj.shape[0]

    def num_params(self) -> int:
        return int(sum(np.size(getattr(self, f.name)) for f in dataclasses.fields(self) if getattr(self, f.name) is not None))


def mamba_params(d_model: int, *, d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_rank: Optional[int] = None,
                 conv_bias: bool = True, bias: bool = False) -> int:
    """Parameters of one Mamba mixer (module doc); defaults as mamba_simple ``Mamba.__init__`` (dt_rank "auto" =
    ceil(d_model / 16), conv_bias=True, bias=False)."""
    d_model, N, W, e = (positive_int(v, n) for v, n in ((d_model, "d_model"), (d_state, "d_state"), (d_conv, "d_conv"),
                                                         (expand, "expand")))
    R = math.ceil(d_model / 16) if dt_rank is None else positive_int(dt_rank, "dt_rank")
    di = e * d_model
    n = 2 * d_model * di + di * W + di * (R + 2 * N) + R * di + di + di * N + di + di * d_model
    if flag(conv_bias, "conv_bias"):
        n += di
    if flag(bias, "bias"):
        n += 2 * di + d_model
    return n


def init_mamba(seed, *, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
               dt_rank: Optional[int] = None) -> MambaWeights:
    """Weights drawn from ``seed``: N(0, 1/fan_in) matrices, A_log = log(1..N) per channel (S4D-real, as mamba),
    D = 1, dt_bias so that softplus(dt_bias) lies in [0.001, 0.1] (mamba's dt_min, dt_max), conv bias N(0, 0.1^2)."""
    rng = np.random.default_rng(count(seed, "seed", maximum=None))
    d_model, N, W, e = (positive_int(v, n) for v, n in ((d_model, "d_model"), (d_state, "d_state"), (d_conv, "d_conv"),
                                                         (expand, "expand")))
    R = math.ceil(d_model / 16) if dt_rank is None else positive_int(dt_rank, "dt_rank")
    check_budget("d_model, d_state, d_conv, expand, dt_rank",
                 nbytes=16 * mamba_params(d_model, d_state=N, d_conv=W, expand=e, dt_rank=R), what="a Mamba mixer")
    di = e * d_model

    def mat(r, c):
        return rng.standard_normal((r, c)) / np.sqrt(r)

    dt = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), di))
    return MambaWeights(in_proj=mat(d_model, 2 * di), conv_weight=mat(W, di).T, x_proj=mat(di, R + 2 * N),
                        dt_proj=mat(R, di), dt_bias=dt + np.log(-np.expm1(-dt)),  # softplus^-1(dt)
                        A_log=np.log(np.broadcast_to(np.arange(1.0, N + 1), (di, N))), D=np.ones(di),
                        out_proj=mat(di, d_model), conv_bias=0.1 * rng.standard_normal(di))


def mamba_mixer(x, weights: MambaWeights) -> np.ndarray:
    """out (B, L, d_model) of the module doc for x (B, L, d_model)."""
    w = instance(weights, "weights", MambaWeights, "refimpl.mamba_block.MambaWeights")
    x = as_float_array(x, "x", ndim=3, shape=(None, None, w.d_model), shape_doc=f"(B, L, d_model = {w.d_model})")
    Bn, L, _ = x.shape
    di, N, R = w.d_inner, w.d_state, w.dt_rank
    check_budget("x, weights", nbytes=8 * Bn * L * di * (N + 8), what="the scan states (B, L, d_inner, d_state)")
    # each stage's message names the input and every weight that reached that stage (a huge value anywhere
    # upstream may be what overflows downstream)
    names = "x, weights (in_proj, in_proj_bias"
    with np.errstate(over="ignore", invalid="ignore"):
        xz = x @ w.in_proj + (0.0 if w.in_proj_bias is None else w.in_proj_bias)
    xz = finite_result(xz, "the in-projection", names + ")")
    u, z = xz[..., :di], xz[..., di:]
    bias = None if w.conv_bias is None else w.conv_bias[None]
    names += ", conv_weight, conv_bias"
    with _V.renamed(_V.wrapped(f"{names}): expected inputs the causal convolution accepts, got "), errors=(ValueError,)):
        u = causal_conv1d(u[:, None], w.conv_weight[None], bias, activation="silu")[:, 0]  # (B, L, d_inner)
    names += ", x_proj"
    with np.errstate(over="ignore", invalid="ignore"):
        xdbl = finite_result(u @ w.x_proj, "the x-projection", names + ")")
        names += ", dt_proj"
        dt = finite_result(xdbl[..., :R] @ w.dt_proj, "the step projection", names + ")")
    Bm, Cm = xdbl[..., R : R + N], xdbl[..., R + N :]
    names += ", dt_bias, A_log, D"
    with np.errstate(over="ignore"):  # A = -inf (A_log beyond log FLOAT_MAX): the scan refuses it by name
        A = -np.exp(w.A_log)
    with _V.renamed(_V.wrapped(f"{names}): expected inputs the selective scan accepts, got "), errors=(ValueError,)):
        y, _ = selective_scan(u[:, None], dt[:, None], A[None], Bm[:, None], Cm[:, None], w.D[None],
                              z[:, None], delta_bias=w.dt_bias[None], delta_softplus=True)
    names += ", out_proj, out_proj_bias)"
    with np.errstate(over="ignore", invalid="ignore"):
        out = y[:, 0] @ w.out_proj + (0.0 if w.out_proj_bias is None else w.out_proj_bias)
    return finite_result(out, "the output", names)


__all__ = ["MambaWeights", "init_mamba", "mamba_mixer", "mamba_params"]
