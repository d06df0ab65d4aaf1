"""Auxiliary router losses: the product balance loss and its variants, CV^2, z-loss,
and the importance and load losses of noisy top-k gating (Shazeer et al. 2017).

Product balance loss (Switch Transformer eqs. 4-6; docs/notes.md#balance-loss):

    L = alpha * c * sum_e f_e * P_e

    f_e  fraction of (real) tokens whose assignment counts for expert e, before
         dropping: ``f="k_hot"``: e is among the token's top-k (each token
         counts once per selected expert, sum_e f_e = k); ``f="top1"``: e is the
         token's first choice (sum_e f_e = 1)
    P_e  mean over (real) tokens of the router probability p_te
         (``probs="normalized_scores"``: of p_te / sum_e' p_te', which is
         DeepSeek-V3's s' for sigmoid scores and equals p for softmax)
    c    the normalisation: ``scale="E"`` (Switch, GShard, Mixtral, flaxformer),
         ``"E/k"`` (DeepSpeed top-k, Megablocks, DeepSeek f'_i = E/(kT) count_i),
         ``"1"`` (the notes' other form, r_e without the E factor, docs/errata.md#e5) or ``"1/E"``
         (fairscale: ``mean_e(me * ce)``)

Value under uniform routing (P_e = 1/E and f_e = m/E with m = k for k-hot, 1
for top-1): ``alpha * c * m / E``. So E with top-1 f gives alpha (Switch), E
with k-hot f gives alpha*k (Mixtral, flaxformer), E/k with k-hot f gives alpha
(DeepSpeed top-k, DeepSeek), "1" with k-hot f gives alpha*k/E (the notes' no-E form),
"1/E" with top-1 f gives alpha/E^2 (fairscale). docs/errata.md#e5.

``groups``: the T tokens are G consecutive equal groups (sequences for
DeepSeek's sequence-wise loss, token groups for flaxformer); the loss is the
mean over groups of each group's loss. Pooling over layers: see
:func:`balance_loss_layers`.

Padding: tokens with ``token_mask`` False are excluded from both f and P, and
the means run over real tokens only (HF ``load_balancing_loss_func`` with an
attention mask). Several libraries differ here (see each preset's notes).

CV^2 (Shazeer et al. 2017; tensor2tensor ``cv_squared``): population variance
over mean squared, ``var(x) / (mean(x)^2 + eps)``, eps = 1e-10. The notes'
"alpha * CV(f)^2" is ``alpha * cv_squared(f)``. With sum_e f_e = 1,
``E * sum_e f_e^2 = 1 + CV(f)^2`` (exactly, with eps = 0).

Router z-loss (ST-MoE, Zoph et al. 2022): mean over real tokens of
logsumexp(z_t)^2.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from scipy.special import ndtr

from ..softmax import logsumexp, softmax
from .. import _validate as V
from .._validate import as_float_array
from .._validate import moe as VM
from .select import _top_k

F_KINDS = ("k_hot", "top1")
SCALES = ("E", "E/k", "1", "1/E")
P_KINDS = ("softmax", "normalized_scores")
CV_EPS = 1e-10


def _check_alpha(alpha) -> float:
    return V.real_number(alpha, "alpha")


def scale_factor(scale: str, num_experts: int, k: int) -> float:
    """The constant c of ``alpha * c * sum_e f_e P_e``."""
    V.choice(scale, "scale", SCALES)
    num_experts = V.count(num_experts, "num_experts", minimum=1)
    k = V.count(k, "k", minimum=1)
    return {"E": float(num_experts), "E/k": num_experts / k, "1": 1.0, "1/E": 1.0 / num_experts}[scale]


def product_balance_loss(f, P, *, alpha=1.0, scale="E", k=1) -> float:
    """alpha * c * sum_e f_e P_e from the statistics themselves (f, P of shape (E,)).

    docs/notes.md#balance-loss: f = [100, 80, 50, 26] / 256, P = [0.35, 0.30, 0.22, 0.13],
    alpha = 0.01, scale "E": 0.01147.
    """
    f = as_float_array(f, "f", ndim=1, shape_doc="(E,)", min_size={0: 1})
    P = as_float_array(P, "P", shape=f.shape, shape_doc="(E,), the same shape as f")
    alpha, c = _check_alpha(alpha), scale_factor(scale, f.shape[0], k)
    with np.errstate(over="ignore", invalid="ignore"):
        value = alpha * c * float(np.dot(f, P))
    return V.finite_result(value, "the loss", "f, P, alpha")


def routing_fractions(routing, f: str = "k_hot") -> np.ndarray:
    """f (E,): fraction of real tokens assigned to each expert before dropping."""
    routing = V.routing(routing)
    V.choice(f, "f", F_KINDS)
    cols = routing.indices if f == "k_hot" else routing.indices[:, :1]
    real = routing.token_mask
    n = max(int(real.sum()), 1)
    return np.bincount(cols[real].ravel(), minlength=routing.num_experts) / n


def mean_probabilities(routing, probs: str = "softmax") -> np.ndarray:
    """P (E,): mean router probability over real tokens."""
    routing = V.routing(routing)
    V.choice(probs, "probs", P_KINDS)
    p = routing.probs
    if probs == "normalized_scores":
        # a row whose sigmoid scores all underflowed has no distribution: it counts 0 (as the
        # router's gates do with a zero denominator), never NaN
        s = p.sum(axis=-1, keepdims=True)
        p = np.where(s > 0, p / np.where(s > 0, s, 1.0), 0.0)
    real = routing.token_mask
    return p[real].sum(axis=0) / max(int(real.sum()), 1)


@dataclasses.dataclass(frozen=True)
class BalanceLoss:
    """A named variant of the product balance loss (see the module docstring)."""

    f: str = "k_hot"
    scale: str = "E"
    probs: str = "softmax"

    def __post_init__(self):
        for name, allowed in (("f", F_KINDS), ("scale", SCALES), ("probs", P_KINDS)):
            V.choice(getattr(self, name), name, allowed)

    def uniform_value(self, k: int, num_experts: int, alpha: float = 1.0) -> float:
        """alpha * c * m / E: the value when P and f are uniform."""
        m = k if self.f == "k_hot" else 1
        return alpha * scale_factor(self.scale, num_experts, k) * m / num_experts

    def __call__(self, routing, *, alpha=1.0, groups: int = 1) -> float:
        return balance_loss(routing, alpha=alpha, f=self.f, scale=self.scale,
                            probs=self.probs, groups=groups)


def _split_groups(routing, groups: int):
    """The routing's T tokens as ``groups`` consecutive equal groups (checked: ``VM.token_groups``)."""
    size = routing.num_tokens // groups
    for g in range(groups):
        sl = slice(g * size, (g + 1) * size)
        yield dataclasses.replace(
            routing, probs=routing.probs[sl], indices=routing.indices[sl], gates=routing.gates[sl],
            kept=routing.kept[sl], position=routing.position[sl], token_mask=routing.token_mask[sl],
        )


def balance_loss(routing, *, alpha=1.0, f="k_hot", scale="E", probs="softmax", groups=1) -> float:
    """alpha * c * sum_e f_e P_e from a Routing (module docstring), mean over ``groups``."""
    routing = V.routing(routing)
    alpha = _check_alpha(alpha)
    c = scale_factor(scale, routing.num_experts, routing.k)
    V.choice(f, "f", F_KINDS), V.choice(probs, "probs", P_KINDS)
    groups = VM.token_groups(groups, routing.num_tokens)
    per_group = [
        alpha * c * float(np.dot(routing_fractions(r, f), mean_probabilities(r, probs)))
        for r in _split_groups(routing, groups)
    ]
    with np.errstate(over="ignore", invalid="ignore"):
        value = float(np.mean(per_group))
    return V.finite_result(value, "the loss", "alpha")


def balance_loss_layers(routings: Sequence, *, alpha=1.0, f="k_hot", scale="E",
                        probs="softmax", pool="concat") -> float:
    """The balance loss of several layers' routings (same T, E, k).

    pool="concat": one loss over all layers' tokens together (HF Mixtral
    ``load_balancing_loss_func`` concatenates the layers' gate logits);
    "mean" / "sum": mean / sum of the per-layer losses (Megablocks
    ``batched_load_balancing_loss`` is the mean; DeepSpeed and T5X add the
    per-layer losses). For pooled f and P the concatenated loss differs from the
    mean of per-layer losses in general; both equal the uniform value when every
    layer is uniform.
    """
    routings = VM.layer_routings(routings)
    V.choice(pool, "pool", ("concat", "mean", "sum"))
    if pool == "concat":
        cat = dataclasses.replace(
            routings[0],
            probs=np.concatenate([r.probs for r in routings]),
            indices=np.concatenate([r.indices for r in routings]),
            gates=np.concatenate([r.gates for r in routings]),
            kept=np.concatenate([r.kept for r in routings]),
            position=np.concatenate([r.position for r in routings]),
            token_mask=np.concatenate([r.token_mask for r in routings]),
            counts=np.sum([r.counts for r in routings], axis=0),
        )
        return balance_loss(cat, alpha=alpha, f=f, scale=scale, probs=probs)
    losses = [balance_loss(r, alpha=alpha, f=f, scale=scale, probs=probs) for r in routings]
    return float(np.mean(losses) if pool == "mean" else np.sum(losses))


def cv_squared(x, *, eps: float = CV_EPS) -> float:
    """Squared coefficient of variation: population variance / (mean^2 + eps).

    Scale invariant (up to eps) and 0 iff all entries are equal. A single entry
    gives 0. (Tutel's ``load_importance_loss`` uses torch's default *sample*
    variance instead; this spec pins the population variance of tensor2tensor's
    ``cv_squared`` and docs/conventions.md#moe-defaults.)
    """
    x, eps = VM.cv_inputs(x, eps)
    m = x.mean()
    return float(np.mean((x - m) ** 2) / (m * m + eps))


def cv_squared_loss(routing, *, alpha=1.0, of="loads") -> float:
    """alpha * CV^2 of the expert loads (fractions f, k-hot, pre-drop) or importance
    (sum over real tokens of the probabilities). The notes' alpha * CV(f)^2 (docs/notes.md#balance-loss)."""
    routing = V.routing(routing)
    alpha = _check_alpha(alpha)
    V.choice(of, "of", ("loads", "importance"))
    if of == "loads":
        cv2 = cv_squared(routing_fractions(routing, "k_hot"))
    else:
        cv2 = cv_squared(routing.probs[routing.token_mask].sum(axis=0))
    with np.errstate(over="ignore"):  # alpha CV^2 beyond float64 (alpha = 1e308): a named refusal, not +inf
        return float(V.finite_result(alpha * cv2, "the loss alpha * CV^2", "alpha, routing"))


def z_loss(logits, *, padding_mask=None) -> float:
    """Router z-loss: mean over real tokens of logsumexp(z_t)^2 (ST-MoE eq. 5;
    Mesh TF ``_switch_gating``, flaxformer ``_router_z_loss``, Megablocks
    ``batched_router_zloss``)."""
    z, mask = VM.z_loss_inputs(logits, padding_mask)
    lse = logsumexp(z, axis=-1)
    with np.errstate(over="ignore"):
        value = float(np.sum(np.where(mask, lse**2, 0.0)) / max(int(mask.sum()), 1))
    return V.finite_result(value, "the z-loss", "logits")


# ---------------------------------------------------------------------------
# Shazeer et al. 2017, "Outrageously large neural networks", section 4 and appendix A.
# Noisy top-k gating: H(x)_i = clean_i + noise_i * noise_stddev_i, with clean = x W_g,
# noise_stddev = softplus(x W_noise) and noise ~ N(0, 1), all passed in explicitly.


@dataclasses.dataclass(frozen=True)
class NoisyTopK:
    """The result of :func:`noisy_top_k_gating`: dense gates (T, E) and what made them."""

    gates: np.ndarray
    noisy_logits: np.ndarray
    indices: np.ndarray


def noisy_top_k_gating(clean_logits, noise_stddev, noise, k: int) -> NoisyTopK:
    """G(x) = softmax(KeepTopK(H(x), k)), H = clean + noise * noise_stddev.

    KeepTopK sets all but the k largest entries to -inf (ties to the lower index),
    so G is 0 outside the top-k and a softmax over the top-k noisy logits inside.
    """
    clean, std, eps, k = VM.noisy_gating_inputs(clean_logits, noise_stddev, noise, k)
    with np.errstate(over="ignore", invalid="ignore"):
        H = V.finite_result(clean + eps * std, "a noisy logit clean + noise * noise_stddev",
                            "clean_logits, noise, noise_stddev")
    idx = _top_k(H, k)
    keep = np.full(H.shape, -np.inf)
    np.put_along_axis(keep, idx, np.take_along_axis(H, idx, axis=-1), axis=-1)
    return NoisyTopK(gates=softmax(keep, axis=-1), noisy_logits=H, indices=idx)


def importance_loss(gates, *, w_importance=1.0) -> float:
    """w * CV(Importance)^2, Importance_e = sum_x G(x)_e (Shazeer 2017 eq. 6-7)."""
    importance = VM.importance(gates)
    w = V.real_number(w_importance, "w_importance")
    VM.cv_inputs(importance, CV_EPS, "gates")
    return w * cv_squared(importance)


def load_probabilities(clean_logits, noisy_logits, noise_stddev, k: int) -> np.ndarray:
    """P(x, i) (T, E) = Phi((clean_i - kth_excluding(H, k, i)) / noise_stddev_i)
    (Shazeer 2017 eq. 9): the probability that expert i stays in the top-k when
    its own noise is redrawn. kth_excluding(H, k, i) is the k-th largest noisy
    logit among the other experts: the (k+1)-th largest of H if i is in the
    top-k, the k-th largest otherwise (tensor2tensor ``_prob_in_top_k``)."""
    clean, H, std, k = VM.load_inputs(clean_logits, noisy_logits, noise_stddev, k)
    threshold, _ = _kth_excluding(H, k)
    with np.errstate(over="ignore", invalid="ignore"):
        u = V.finite_result((clean - threshold) / std, "(clean - threshold) / noise_stddev",
                            "clean_logits, noisy_logits, noise_stddev")
    return ndtr(u)


def kth_excluding(noisy_logits, k):
    """(threshold (T, E), index (T, E)): per token t and expert e, the k-th largest noisy logit among
    the other experts (Shazeer et al. 2017's kth_excluding), and which expert holds it: the threshold
    of the load loss's P(e in top-k). ``noisy_logits`` (T, E) finite, 1 <= k < E."""
    H = as_float_array(noisy_logits, "noisy_logits", ndim=2, shape_doc="(T, E)")
    return _kth_excluding(H, VM.kth_k(k, H.shape[1]))


def _kth_excluding(H: np.ndarray, k: int):
    """(threshold (T, E), index of the expert whose noisy logit is the threshold); 1 <= k < E checked."""
    T, E = H.shape
    order = _top_k(H, k + 1)  # (T, k+1)
    in_top = np.zeros((T, E), dtype=bool)
    np.put_along_axis(in_top, order[:, :k], True, axis=-1)
    idx = np.where(in_top, order[:, [k]], order[:, [k - 1]])  # (T, E)
    return np.take_along_axis(H, idx, axis=-1), idx


def load_loss(clean_logits, noisy_logits, noise_stddev, k: int, *, w_load=1.0) -> float:
    """w * CV(Load)^2, Load_i = sum_x P(x, i) (Shazeer 2017 eq. 8-11)."""
    P = load_probabilities(clean_logits, noisy_logits, noise_stddev, k)
    return V.real_number(w_load, "w_load") * cv_squared(P.sum(axis=0))
