"""Training losses: cross-entropy with ignore-index, the causal-LM label shift, SFT on
response tokens only, z-loss and the MoE auxiliary loss with their coefficients
(docs/notes.md#lm-loss, docs/notes.md#sft-loss, docs/notes.md#router-collapse).

    CE(z, y)  = -log softmax(z)_y = logsumexp(z) - z_y          one row of logits z (V,)
    dCE/dz    = softmax(z) - onehot(y)                          (the "p - y" gradient)

Reduction (torch ``F.cross_entropy``, ``ignore_index=-100``, ``reduction="mean"``): rows
whose target is ``ignore_index`` contribute nothing, and the mean divides by the number of
the other rows. With every row ignored torch 2.13 returns NaN (0/0); this spec returns 0.0
(no NaN from finite inputs), a stated difference.

Causal LM (docs/notes.md#lm-loss): position t predicts token t+1, so the loss pairs
logits[:, :-1] with tokens[:, 1:] (the notes' snippet; HF ``ForCausalLMLoss`` pads the
labels with ignore_index and shifts them, the same pairs). Forgetting the shift trains
the model to copy its input.

SFT (docs/notes.md#sft-loss): the same cross-entropy counted only where the *target* token is a
response token: L = -(1/L_y) sum_t log P(y_t | p, y_<t). The notes' second form drops the
minus sign (docs/errata.md#e17): it equals -L, and descending it would maximise the loss.
Normalisation is a convention: ``normalize="tokens"`` (HF: mean over every response
token of the batch) or ``"sequences"`` (the notes' 1/L_y per sequence, then the mean over
sequences); they differ when response lengths differ.

Auxiliary terms, added with coefficients:

    L = L_lm + z_coef * mean_t logsumexp(z_t)^2            (PaLM output z-loss, 1e-4)
             + aux_coef * sum_layers balance_loss          (Switch/Mixtral: 0.01)
             + router_z_coef * sum_layers router z-loss    (ST-MoE: 1e-3)

The z-loss and the balance loss are ``refimpl.moe.losses`` (one definition each).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from . import moe
from ._validate import as_float_array, bool_array, choice, count, finite_result, real_number, routing as _routing
from ._validate import layers as _V
from ._validate import losses as _VL
from .softmax import logsumexp, softmax

IGNORE_INDEX = -100
REDUCTIONS = ("mean", "sum", "none")


class _CE:
    """Validated logits (N, V), targets (N,), the valid-row mask and per-row losses."""

    def __init__(self, logits, targets, ignore_index):
        self.z, self.t, ignore_index = _VL.ce_inputs(logits, targets, ignore_index)
        self.valid = self.t != ignore_index
        safe_t = np.where(self.valid, self.t, 0)
        self.safe_t = safe_t
        picked = np.take_along_axis(self.z, safe_t[:, None], axis=1)[:, 0]
        with np.errstate(over="ignore", invalid="ignore"):
            self.rows = np.where(self.valid, logsumexp(self.z, axis=-1) - picked, 0.0)
        # lse(z) - z_target <= max z - min z: beyond float64 only for logits spanning more than its range
        finite_result(self.rows, "a loss lse(z) - z_target", "logits")
        self.count = int(self.valid.sum())


def cross_entropy(logits, targets, *, ignore_index: int = IGNORE_INDEX, reduction: str = "mean"):
    """Softmax cross-entropy of logits (N, V) against integer targets (N,) (torch semantics)."""
    choice(reduction, "reduction", REDUCTIONS)
    ce = _CE(logits, targets, ignore_index)
    if reduction == "none":
        return ce.rows
    with np.errstate(over="ignore"):
        total = float(ce.rows.sum())
        if reduction == "mean":
            if not ce.count:
                return 0.0
            # the sum of finite losses may overflow where their mean does not: then sum the rows / count
            total = total / ce.count if np.isfinite(total) else float((ce.rows / ce.count).sum())
    return finite_result(total, f"the {reduction} of the losses", "logits")


def cross_entropy_grad(logits, targets, *, ignore_index: int = IGNORE_INDEX, reduction: str = "mean") -> np.ndarray:
    """dL/dlogits = (softmax(z) - onehot(y)) on valid rows, 0 on ignored rows, / count for "mean"."""
    choice(reduction, "reduction", ("mean", "sum"))
    ce = _CE(logits, targets, ignore_index)
    g = softmax(ce.z, axis=-1)
    g[np.arange(len(g)), ce.safe_t] -= 1.0
    g = np.where(ce.valid[:, None], g, 0.0)
    return g / ce.count if (reduction == "mean" and ce.count) else g


def shift_labels(tokens, *, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """labels[:, t] = tokens[:, t + 1], the last position ignore_index (HF ForCausalLMLoss); int64."""
    tok = _VL.token_array(tokens, "tokens", 2, "(B, L)")
    B, L = tok.shape  # L = 0: no position, no label (not one ignore_index)
    return np.concatenate([tok[:, 1:], np.full((B, min(L, 1)), _VL.ignore_index_arg(ignore_index), dtype=np.int64)],
                          axis=1)


def shift_right(tokens, start_token: int) -> np.ndarray:
    """Decoder input of teacher forcing: [BOS, y_1, ..., y_{L-1}] from y (B, L); int64
    (docs/notes.md#encoder-decoder)."""
    tok = _VL.token_array(tokens, "tokens", 2, "(B, L)")
    start = count(start_token, "start_token")
    B, L = tok.shape  # L = 0: no position, no BOS
    return np.concatenate([np.full((B, min(L, 1)), start, dtype=np.int64), tok[:, :-1]], axis=1)


def causal_lm_loss(logits, tokens, *, ignore_index: int = IGNORE_INDEX) -> float:
    """Mean next-token cross-entropy: logits (B, L, V) at t against tokens (B, L) at t + 1;
    tokens equal to ignore_index (padding, masked prompt) are not counted."""
    z, tok = _VL.lm_logits(logits, tokens)
    _VL.target_ids(tok[:, 1:], z.shape[-1], _VL.ignore_index_arg(ignore_index), "tokens")
    labels = shift_labels(tok, ignore_index=ignore_index)
    B, L, V = z.shape  # named: -1 is ambiguous for an empty batch
    return cross_entropy(z.reshape(B * L, V), labels.reshape(B * L), ignore_index=ignore_index)


def causal_lm_loss_grad(logits, tokens, *, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """d causal_lm_loss / d logits, shape (B, L, V) (the last position's gradient is 0)."""
    z, tok = _VL.lm_logits(logits, tokens)
    _VL.target_ids(tok[:, 1:], z.shape[-1], _VL.ignore_index_arg(ignore_index), "tokens")
    labels = shift_labels(tok, ignore_index=ignore_index)
    B, L, V = z.shape
    return cross_entropy_grad(z.reshape(B * L, V), labels.reshape(B * L), ignore_index=ignore_index).reshape(z.shape)


def sft_labels(tokens, response_mask, *, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """tokens with every non-response position replaced by ignore_index (before the shift)."""
    tok = _VL.token_array(tokens, "tokens", 2, "(B, L)")
    m = bool_array(response_mask, "response_mask", shape=tok.shape, shape_doc="(B, L) of tokens")
    return np.where(m, tok, np.int64(_VL.ignore_index_arg(ignore_index)))


def sft_loss(logits, tokens, response_mask, *, normalize: str = "tokens", ignore_index: int = IGNORE_INDEX) -> float:
    """Cross-entropy over response tokens only (the prompt is context, not target).

    logits (B, L, V); tokens (B, L) = prompt followed by response (and padding);
    response_mask (B, L) True on response tokens. ``normalize``: "tokens" or "sequences".
    """
    choice(normalize, "normalize", ("tokens", "sequences"))
    labels = sft_labels(tokens, response_mask, ignore_index=ignore_index)
    if normalize == "tokens":
        return causal_lm_loss(logits, labels, ignore_index=ignore_index)
    z, _ = _VL.lm_logits(logits, labels)
    per_seq = [causal_lm_loss(z[b:b + 1], labels[b:b + 1], ignore_index=ignore_index) for b in range(z.shape[0])]
    has = [bool((labels[b, 1:] != ignore_index).any()) for b in range(z.shape[0])]
    vals = [v for v, h in zip(per_seq, has) if h]
    top = max(vals, default=0.0)  # the mean as top * mean(v / top): per-sequence losses near float64's maximum
    return top * float(np.mean(np.divide(vals, top))) if top > 0 else 0.0  # have a finite mean, but not a finite sum


def output_z_loss(logits, tokens=None, *, ignore_index: int = IGNORE_INDEX) -> float:
    """mean over counted positions of logsumexp(z_t)^2 (PaLM's auxiliary loss on the LM head;
    ``refimpl.moe.z_loss``); with ``tokens`` only positions with a next-token target count."""
    z = _VL.class_logits(logits)
    ignore_index = _VL.ignore_index_arg(ignore_index)
    mask = None
    if tokens is not None:
        z, tok = _VL.lm_logits(z, tokens)
        mask = (shift_labels(tok, ignore_index=ignore_index) != ignore_index).reshape(tok.size)
    rows, V = math.prod(z.shape[:-1]), z.shape[-1]  # named: -1 is ambiguous for an empty batch
    return moe.z_loss(z.reshape(rows, V), padding_mask=mask)


@dataclasses.dataclass(frozen=True)
class LossTerms:
    lm: float
    z: float
    balance: float
    router_z: float
    total: float


def training_loss(logits, tokens, *, routings: Sequence = (), router_logits: Sequence = (), z_coef: float = 0.0,
                  aux_coef: float = 0.0, router_z_coef: float = 0.0, balance_options=None,
                  ignore_index: int = IGNORE_INDEX) -> LossTerms:
    """L = L_lm + z_coef z + aux_coef sum_l balance_l + router_z_coef sum_l zloss_l.

    routings: one ``refimpl.moe.Routing`` per MoE layer; router_logits: their logits (T, E).
    ``balance_options``: keyword arguments of ``refimpl.moe.balance_loss`` (f, scale, ...),
    alpha fixed to 1 so that ``aux_coef`` is the one coefficient.
    """
    lm = causal_lm_loss(logits, tokens, ignore_index=ignore_index)
    zc, ac, rc = (real_number(c, n, minimum=0.0) for c, n in ((z_coef, "z_coef"), (aux_coef, "aux_coef"),
                                                               (router_z_coef, "router_z_coef")))
    z = output_z_loss(logits, tokens, ignore_index=ignore_index) if zc else 0.0
    opts = _VL.balance_options(balance_options, "dict of refimpl.moe.balance_loss keyword arguments")
    routings, router_logits = _VL.layer_list(routings, "routings"), _VL.layer_list(router_logits, "router_logits")
    bal = float(sum(moe.balance_loss(_routing(r, f"routings[{i}]"), alpha=1.0, **opts) for i, r in enumerate(routings)))
    rz = 0.0
    for i, l in enumerate(router_logits):
        rz += moe.z_loss(as_float_array(l, f"router_logits[{i}]", ndim=2, shape_doc="(T, E)"))
    with np.errstate(over="ignore", invalid="ignore"):
        total = lm + zc * z + ac * bal + rc * rz
    return LossTerms(lm, z, bal, float(rz), finite_result(total, "the total loss",
                                                              "z_coef, aux_coef, router_z_coef"))


# ----------------------------------------------------------------------------
# docs/notes.md#router-collapse, docs/errata.md#e29: router collapse without a balance loss


@dataclasses.dataclass(frozen=True)
class CollapseResult:
    """loads (steps, E): fraction of tokens per expert at each step (top-1 routing)."""

    loads: np.ndarray

    def final_loads(self, last: int = 20) -> np.ndarray:
        """Mean load per expert over the last ``last`` steps (at least 1; all steps if fewer)."""
        last = count(last, "last", minimum=1)
        return self.loads[-last:].mean(axis=0)

    def experts_used(self, last: int = 20, threshold: float = 0.01) -> int:
        """Experts that received more than ``threshold`` of the tokens over the last steps."""
        return int((self.final_loads(last) > threshold).sum())


def router_collapse_simulation(*, aux_coef: float, seed: int = 0, steps: int = 300, tokens: int = 256,
                               d: int = 8, num_experts: int = 8, lr: float = 0.5) -> CollapseResult:
    """A Switch-style top-1 MoE (y = p_e(x) x A_e, linear experts, gate = router probability)
    regressing y* = x M by SGD on 0.5 mean ||y - y*||^2 (+ aux_coef * balance loss, E sum f P).

    Rich get richer: an expert that gets tokens learns, so the router's gradient
    (dL/dp_e = (y - y*).f_e(x)) favours it more; experts that get no tokens get no
    gradient and never learn. Everything is drawn from ``seed``. The balance loss is
    ``refimpl.moe.balance_loss`` and its gradient ``refimpl.moe.balance_loss_grad``.
    """
    aux = real_number(aux_coef, "aux_coef", minimum=0.0)
    lr = real_number(lr, "lr", minimum=0.0, min_open=True)
    rng = np.random.default_rng(count(seed, "seed", maximum=None))
    steps = count(steps, "steps", maximum=10**6)
    E, T, d = (count(v, n, minimum=1, maximum=2**20) for v, n in ((num_experts, "num_experts"), (tokens, "tokens"),
                                                                    (d, "d")))
    M_star = rng.standard_normal((d, d)) / np.sqrt(d)
    A = rng.standard_normal((E, d, d)) * 0.05 / np.sqrt(d)
    W = rng.standard_normal((d, E)) * 0.01
    loads = []
    for step in range(steps):
        x = rng.standard_normal((T, d))
        with np.errstate(over="ignore", invalid="ignore"):
            z = x @ W
        _VL.simulation_finite(np.isfinite(A).all() and np.isfinite(z).all(), lr, step)
        r = moe.route(z, 1)
        e = r.indices[:, 0]
        p = r.probs[np.arange(T), e]
        f = np.einsum("td,tdk->tk", x, A[e])
        res = (p[:, None] * f - x @ M_star) / T  # dL/dy
        dA = np.zeros_like(A)
        np.add.at(dA, e, p[:, None, None] * x[:, :, None] * res[:, None, :])
        dp = (res * f).sum(axis=1)
        dz = dp[:, None] * p[:, None] * ((np.arange(E)[None, :] == e[:, None]) - r.probs)  # dp_e/dz_j
        if aux:  # the gradient overflowed: name this function's argument, not alpha
            with _V.renamed(_V.wrapped(f"aux_coef, lr: expected a balance-loss coefficient at which the simulation "
                                       f"stays finite, got aux_coef={aux_coef!r} (", "); use a smaller aux_coef"),
                            errors=(ValueError,)):
                dz = dz + moe.balance_loss_grad(r, z, alpha=aux)
        with np.errstate(over="ignore", invalid="ignore"):
            A -= lr * dA
            W -= lr * (x.T @ dz)
        loads.append(np.bincount(e, minlength=E) / T)
    return CollapseResult(np.array(loads))


__all__ = [
    "CollapseResult", "IGNORE_INDEX", "LossTerms", "causal_lm_loss", "causal_lm_loss_grad", "cross_entropy", "cross_entropy_grad",
    "output_z_loss", "router_collapse_simulation", "sft_labels", "sft_loss", "shift_labels", "shift_right", "training_loss",
]
