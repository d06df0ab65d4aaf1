"""Properties of training losses (kind "loss"), against refimpl.losses.

Adapter: ``cross_entropy(logits (N, V), targets (N,), ignore_index) -> mean``,
``cross_entropy_grad(...) -> (N, V)``, ``causal_lm_loss(logits (B, L, V), tokens (B, L))``,
``sft_loss(logits, tokens, response_mask)`` (mean over response tokens of the batch).

Tolerance: per row, logsumexp(z) - z_y errs by <= (V + 4) u (|z|max + 1) (max-subtracted
sum of V terms); the mean of N such rows adds N u relative; factor 8 for safety. The
gradient p - onehot: |p| <= 1 with (V + 4) u relative error per entry.

Precision (``properties.precision``): logits are drawn representable in the adapter's
precision; lower precisions are held to 2x the error of the naive computation in that
precision (``naive_cross_entropy``, ``naive_cross_entropy_grad``: max-subtracted log-sum-exp,
every elementwise step rounded to the precision, sums in float32, as an eager framework
computes F.cross_entropy in that dtype) plus ``precision.layer_floor`` (the bound above at
u = u32, plus 4 u_p |loss|). Targets, ignore_index and masks are integers: exact.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np
from hypothesis import strategies as st

from refimpl import losses as L
from refimpl.softmax import logsumexp, softmax

from .core import Property
from .precision import compare_layer, naive_ops, precision_of, round_inputs
from .protocol import Capability, Kind, Option
from .tolerance import U64, compare_close
from .strategy_cache import sampled

KINDS = (
    Kind("loss", "softmax cross-entropy, causal-LM and SFT losses; compared with refimpl.losses",
         {"cross_entropy": "cross_entropy(logits (N, V), targets (N,) int, ignore_index) -> float (mean over counted rows)",
          "cross_entropy_grad": "cross_entropy_grad(logits, targets, ignore_index) -> (N, V)",
          "causal_lm_loss": "causal_lm_loss(logits (B, L, V), tokens (B, L)) -> float",
          "sft_loss": "sft_loss(logits (B, L, V), tokens (B, L), response_mask (B, L) bool) -> float"},
         ("cross_entropy",),
         {"grad": Capability("supplies the gradient with respect to the logits", ("cross_entropy_grad",)),
          "lm": Capability("supplies the causal-LM and SFT losses", ("causal_lm_loss", "sft_loss"))},
         options={"ignored_targets": Option(
             "batches with some targets ignored, or with every target ignored (the spec's loss and gradient are "
             "0 there; torch.nn.functional.cross_entropy(reduction='mean') gives NaN, 0/0: decline 'all')",
             ("some", "all"))}),
)


@dataclasses.dataclass(frozen=True)
class LossAdapter:
    name: str
    cross_entropy: Callable
    cross_entropy_grad: Optional[Callable] = None
    causal_lm_loss: Optional[Callable] = None
    sft_loss: Optional[Callable] = None
    capabilities: frozenset = frozenset({"grad", "lm"})
    kind: str = "loss"
    precision: str = "float64"
    declines: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class CECase:
    z: np.ndarray
    t: np.ndarray
    ignore_index: int
    seed: int

    def __repr__(self):
        return f"CECase(z{self.z.shape}, max|z|={np.abs(self.z).max():.3g}, targets={self.t.tolist()}, ignore_index={self.ignore_index})"


def _ignored(caps) -> tuple:
    return caps.allowed("ignored_targets", ("some", "all")) if hasattr(caps, "allowed") else ("some", "all")


@st.composite
def ce_case(draw, caps=None):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    N, V = draw(st.integers(1, 6)), draw(st.integers(1, 9))
    z = rng.standard_normal((N, V)) * draw(sampled([1.0, 10.0, 1e3]))
    ignore = draw(sampled([-100, -1, V]))  # torch's default, and others a tokenizer may use
    t = rng.integers(0, V, N)
    ok = _ignored(caps)
    fractions = [0.0] + ([0.3] if "some" in ok else []) + ([1.0] if "all" in ok else [])
    t[rng.random(N) < draw(sampled(fractions))] = ignore
    if "all" not in ok and (t == ignore).all():
        t[0] = 0  # keep one counted row
    return CECase(round_inputs(getattr(caps, "precision", "float64"), z), t, ignore, seed)


def _ce_tol(z, count):
    return 8 * (z.shape[-1] + 4 + count) * U64 * (np.abs(z).max() + 1)


def _ce_terms(z, valid):
    """Size of the terms of a mean of lse(z) - z_y (for ``precision.layer_floor``): |lse| + |z_y|
    on counted rows (they cancel when the target dominates)."""
    if not valid.any():
        return 0.0
    return float(np.max(np.abs(logsumexp(z[valid], axis=-1))) + np.max(np.abs(z[valid])))


def check_cross_entropy(impl, case: CECase):
    """mean over non-ignored rows of logsumexp(z) - z_y; 0.0 when every row is ignored."""
    valid = case.t != case.ignore_index
    rows = logsumexp(case.z, axis=-1) - np.take_along_axis(case.z, np.where(valid, case.t, 0)[:, None], 1)[:, 0]
    want = float(rows[valid].mean()) if valid.any() else 0.0
    got = impl.cross_entropy(case.z, case.t, case.ignore_index)
    p = precision_of(impl)
    compare_layer("cross_entropy", np.float64(got), np.float64(want), precision=p,
                  float64_bound=_ce_tol(case.z, len(case.t)),
                  naive=lambda: naive_cross_entropy(p, case.z, case.t, case.ignore_index),
                  magnitude=_ce_terms(case.z, valid), context=f"{impl.name}; {case!r}")


def check_grad_p_minus_onehot(impl, case: CECase):
    """dCE/dz = (softmax(z) - onehot(y)) / count on counted rows, 0 on ignored rows; each
    counted row sums to 0 and only its target entry is negative."""
    g = np.asarray(impl.cross_entropy_grad(case.z, case.t, case.ignore_index), dtype=np.float64)
    valid = case.t != case.ignore_index
    count = max(int(valid.sum()), 1)
    p = softmax(case.z, axis=-1)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(p)), np.where(valid, case.t, 0)] = 1.0
    want = np.where(valid[:, None], p - onehot, 0.0) / count
    prec = precision_of(impl)
    compare_layer("cross_entropy_grad", g, want, precision=prec, float64_bound=8 * (case.z.shape[-1] + 4) * U64,
                  naive=lambda: naive_cross_entropy_grad(prec, case.z, case.t, case.ignore_index), magnitude=1.0 / count,
                  context=f"{impl.name}; {case!r}")


@dataclasses.dataclass(frozen=True)
class LMCase:
    z: np.ndarray
    tokens: np.ndarray
    response: np.ndarray
    seed: int

    def __repr__(self):
        return f"LMCase(z{self.z.shape}, tokens={self.tokens.tolist()}, response={self.response.astype(int).tolist()})"


@st.composite
def lm_case(draw, caps=None):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    B, Lq, V = draw(st.integers(1, 3)), draw(st.integers(2, 7)), draw(st.integers(2, 8))
    z = rng.standard_normal((B, Lq, V)) * draw(sampled([1.0, 5.0]))
    tokens = rng.integers(0, V, (B, Lq))
    if draw(st.booleans()):  # padding at the end of one sequence
        tokens[0, Lq - 1:] = L.IGNORE_INDEX
    prompt = rng.integers(0, Lq, B)
    response = (np.arange(Lq)[None, :] >= prompt[:, None]) & (tokens != L.IGNORE_INDEX)
    if "all" not in _ignored(caps) and not response[:, 1:].any():  # SFT (and LM) need a counted target
        tokens[:, -1] = np.where(tokens[:, -1] == L.IGNORE_INDEX, 0, tokens[:, -1])
        response[:, -1] = True
    return LMCase(round_inputs(getattr(caps, "precision", "float64"), z), tokens, response, seed)


def _pairs_loss(z, targets):
    """Mean of logsumexp(z_t) - z_t[target_t] over the given (logit row, target) pairs."""
    valid = targets != L.IGNORE_INDEX
    if not valid.any():
        return 0.0
    rows = logsumexp(z, axis=-1) - np.take_along_axis(z, np.where(valid, targets, 0)[..., None], -1)[..., 0]
    return float(rows[valid].mean())


def check_causal_lm_shift(impl, case: LMCase):
    """Logits at t are scored against the token at t + 1 (the label shift)."""
    want = _pairs_loss(case.z[:, :-1], case.tokens[:, 1:])
    got = impl.causal_lm_loss(case.z, case.tokens)
    p = precision_of(impl)
    compare_layer("causal_lm_loss", np.float64(got), np.float64(want), precision=p,
                  float64_bound=_ce_tol(case.z, case.z.size),
                  naive=lambda: _naive_pairs(p, case.z[:, :-1], case.tokens[:, 1:]),
                  magnitude=_ce_terms(case.z[:, :-1], case.tokens[:, 1:] != L.IGNORE_INDEX),
                  context=f"{impl.name}; {case!r}")


def check_sft_response_only(impl, case: LMCase):
    """SFT loss is the mean -log p over response targets only, and is >= 0 (docs/errata.md#e17: the sign)."""
    targets = np.where(case.response, case.tokens, L.IGNORE_INDEX)[:, 1:]
    want = _pairs_loss(case.z[:, :-1], targets)
    got = impl.sft_loss(case.z, case.tokens, case.response)
    ctx = f"{impl.name}; {case!r}"
    p = precision_of(impl)
    compare_layer("sft_loss", np.float64(got), np.float64(want), precision=p, float64_bound=_ce_tol(case.z, case.z.size),
                  naive=lambda: _naive_pairs(p, case.z[:, :-1], targets),
                  magnitude=_ce_terms(case.z[:, :-1], targets != L.IGNORE_INDEX), context=ctx)
    if got < 0:
        raise AssertionError(f"sft_loss is negative ({got}): a cross-entropy is >= 0 "
                             f"(the minus sign, docs/errata.md#e17); {ctx}")


# ----------------------------------------------------------------------------
# naive baselines in a precision (properties.precision)


def _naive_softmax_parts(ops, z):
    """(z, e = exp(z - max), s = sum e) naively: every step rounded, the sum in float32."""
    z = ops.r(z)
    m = np.max(z, axis=-1, keepdims=True)
    with np.errstate(over="ignore", under="ignore"):
        e = ops.r(np.exp(ops.r(z - m)))
    return z, m, e, ops.sum(e, keepdims=True)


def naive_cross_entropy(precision, z, t, ignore_index):
    """Mean over counted rows of lse(z) - z_y (0.0 when none), computed naively in ``precision``."""
    ops = naive_ops(precision)
    valid = np.asarray(t) != ignore_index
    if not valid.any():
        return 0.0
    z, m, e, s = _naive_softmax_parts(ops, z)
    lse = ops.r(m + ops.r(np.log(s)))[:, 0]
    picked = np.take_along_axis(z, np.where(valid, t, 0)[:, None], 1)[:, 0]
    rows = ops.r(lse - picked)[valid]
    return float(ops.out(ops.r(ops.sum(rows, axis=0) / ops.compute(rows.size))))


def naive_cross_entropy_grad(precision, z, t, ignore_index):
    """(softmax(z) - onehot(y)) / count on counted rows, naively in ``precision``."""
    ops = naive_ops(precision)
    valid = np.asarray(t) != ignore_index
    _, _, e, s = _naive_softmax_parts(ops, z)
    g = ops.r(e / s)
    g[np.arange(len(g)), np.where(valid, t, 0)] = ops.r(g[np.arange(len(g)), np.where(valid, t, 0)] - 1)
    g = np.where(valid[:, None], ops.r(g / ops.compute(max(int(valid.sum()), 1))), 0)
    return ops.out(g)


def _naive_pairs(precision, z, targets):
    return naive_cross_entropy(precision, np.asarray(z).reshape(-1, z.shape[-1]), np.asarray(targets).reshape(-1),
                               L.IGNORE_INDEX)


# ----------------------------------------------------------------------------
# adapters


def _ref_ce(z, t, ii):
    return L.cross_entropy(z, t, ignore_index=ii)


def _ref_grad(z, t, ii):
    return L.cross_entropy_grad(z, t, ignore_index=ii)


def _ce_counts_ignored(z, t, ii):
    return L.cross_entropy(z, t, ignore_index=ii, reduction="sum") / len(t)


def _ce_no_max(z, t, ii):
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        rows = np.log(np.exp(z).sum(-1)) - np.take_along_axis(z, np.where(t != ii, t, 0)[:, None], 1)[:, 0]
    valid = t != ii
    return float(rows[valid].mean()) if valid.any() else 0.0


def _grad_onehot_minus_p(z, t, ii):
    return -L.cross_entropy_grad(z, t, ignore_index=ii)


def _grad_not_divided(z, t, ii):
    return L.cross_entropy_grad(z, t, ignore_index=ii, reduction="sum")


def _lm_no_shift(z, tok):
    return L.cross_entropy(np.asarray(z).reshape(-1, z.shape[-1]), np.asarray(tok).reshape(-1))


def _ref_sft(z, tok, m):
    return L.sft_loss(z, tok, m)


def _sft_no_minus(z, tok, m):
    return -L.sft_loss(z, tok, m)


def _sft_counts_prompt(z, tok, m):
    return L.causal_lm_loss(z, tok)


REFIMPL = LossAdapter("refimpl.losses", _ref_ce, _ref_grad, L.causal_lm_loss, _ref_sft)
BUNDLED = [REFIMPL]


def in_precision(adapter, precision: str, name: str | None = None):
    """``adapter`` declaring ``precision``, its results stored in that precision (a kernel
    whose loss and gradient tensors have that dtype)."""
    from .precision import round_inputs as _r

    def wrap(fn):
        return None if fn is None else (lambda *a: _r(precision, fn(*a)))

    methods = {f: wrap(getattr(adapter, f)) for f in ("cross_entropy", "cross_entropy_grad", "causal_lm_loss",
                                                      "sft_loss")}
    return dataclasses.replace(adapter, name=name or f"{adapter.name}[{precision}]", precision=precision, **methods)


def _wrong(name, **kw):
    return dataclasses.replace(REFIMPL, name=f"wrong[{name}]", **kw)


WRONG = {
    "ce_averages_over_ignored_rows": _wrong("ce_averages_over_ignored_rows", cross_entropy=_ce_counts_ignored),
    "ce_without_max_subtraction": _wrong("ce_without_max_subtraction", cross_entropy=_ce_no_max),
    "grad_onehot_minus_p": _wrong("grad_onehot_minus_p", cross_entropy_grad=_grad_onehot_minus_p),
    "grad_not_divided_by_count": _wrong("grad_not_divided_by_count", cross_entropy_grad=_grad_not_divided),
    "missing_label_shift": _wrong("missing_label_shift", causal_lm_loss=_lm_no_shift),
    "sft_missing_minus_sign": _wrong("sft_missing_minus_sign", sft_loss=_sft_no_minus),
    "sft_counts_prompt_tokens": _wrong("sft_counts_prompt_tokens", sft_loss=_sft_counts_prompt),
}
# the same mistakes in float32 / bfloat16 kernels: the low-precision bound still rejects them
WRONG.update({f"{bug}_{p}": in_precision(WRONG[bug], p) for bug, p in (
    ("ce_averages_over_ignored_rows", "bfloat16"), ("grad_not_divided_by_count", "float32"),
    ("missing_label_shift", "float32"), ("missing_label_shift", "bfloat16"), ("sft_counts_prompt_tokens", "bfloat16"))})

PROPERTIES = [
    Property("cross_entropy_matches", "loss", check_cross_entropy, lambda caps: ce_case(caps),
             "CE = mean over non-ignored rows of logsumexp(z) - z_y (0 if all ignored), stable for |z| ~ 1e3",
             rejects=("ce_averages_over_ignored_rows", "ce_without_max_subtraction",
                      "ce_averages_over_ignored_rows_bfloat16")),
    Property("cross_entropy_grad_p_minus_onehot", "loss", check_grad_p_minus_onehot, lambda caps: ce_case(caps),
             "dCE/dz = (softmax(z) - onehot(y)) / count, 0 on ignored rows", requires=frozenset({"grad"}),
             rejects=("grad_onehot_minus_p", "grad_not_divided_by_count", "grad_not_divided_by_count_float32")),
    Property("causal_lm_label_shift", "loss", check_causal_lm_shift, lambda caps: lm_case(caps),
             "causal LM loss pairs logits at t with the token at t + 1", requires=frozenset({"lm"}),
             rejects=("missing_label_shift", "missing_label_shift_float32", "missing_label_shift_bfloat16")),
    Property("sft_loss_response_only", "loss", check_sft_response_only, lambda caps: lm_case(caps),
             "SFT loss = mean -log p over response targets only, >= 0 (docs/errata.md#e17)", requires=frozenset({"lm"}),
             rejects=("sft_missing_minus_sign", "sft_counts_prompt_tokens", "sft_counts_prompt_tokens_bfloat16")),
]
