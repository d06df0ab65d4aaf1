"""Hypothesis strategies for the MoE properties.

Cases carry small NumPy arrays drawn from an explicit seed (Hypothesis draws the
seed and the shape/option choices, NumPy the numbers: fast, reproducible,
shrinkable in the choices). They cover the edges the design asks for: T = 1,
k = E, E = 1, capacity 0 and capacity above every count, all tokens to one
expert, ties (integer-valued logits), near-ties (two experts one unit in the last place of
the adapter's precision apart), extreme logits (|z| up to 1e4), padding. Every float input is
drawn exactly representable in the adapter's precision (``caps.precision``, rounded with
``properties.precision.round_inputs``), so the adapter and the spec see the same numbers.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from .precision import round_inputs, unit_roundoff
from .strategy_cache import sampled

ALL_DROP_ORDERS = ("k_major", "token_major", "priority", "per_expert_top_prob",
                   "per_expert_top_masked_logit", "random")
BASIC_DROP_ORDERS = ("k_major", "token_major")
POSITION_ORDERS = ("k_major", "token_major", "priority")
NORMALIZE = ("none", "before_drop", "after_drop")
CAPACITY_KINDS = ("none", "zero", "finite")  # capacity None, 0, an int >= 1 (option "capacity")
_CAPACITY_NEEDS = {"any": CAPACITY_KINDS, "finite": ("zero", "finite"), "none": ("none",)}


def _pretty(self, p, cycle):
    p.text(repr(self))


@dataclasses.dataclass(frozen=True)
class RouteCase:
    """logits (T, E), k, route options, an optional padding mask."""

    logits: np.ndarray
    k: int
    options: dict
    padding_mask: Optional[np.ndarray] = None

    def kwargs(self) -> dict:
        kw = dict(self.options)
        if self.padding_mask is not None:
            kw["padding_mask"] = self.padding_mask
        return kw

    def side_by_side(self) -> list:
        """Snippet lines routing with the adapter and with refimpl.moe.route."""
        return [
            "import refimpl.moe",
            "got = impl.route(case.logits, case.k, **case.kwargs())",
            "ref = refimpl.moe.route(case.logits, case.k, **case.kwargs())",
            "for f in ('indices', 'kept', 'position', 'counts', 'gates'):",
            "    print(f, np.asarray(getattr(got, f)).tolist(), 'refimpl:', np.asarray(getattr(ref, f)).tolist())",
        ]

    def __repr__(self):
        z = self.logits
        return (f"RouteCase(T={z.shape[0]}, E={z.shape[1]}, k={self.k}, options={self.options}, "
                f"padding={None if self.padding_mask is None else self.padding_mask.astype(int).tolist()}, "
                f"logits={np.array2string(z, precision=4, threshold=64)})")

    _repr_pretty_ = _pretty


# The routing cases' strategies, each built once (building one per draw was a third of the time
# spent drawing a case, ``python -m properties`` against a router). Same arguments, so the same
# labels and the same derandomised examples as strategies built in place.
_SEED = st.integers(0, 2**32 - 1)
_BOOL = st.booleans()
_LOGIT_KIND = st.sampled_from(["normal", "integer", "one_expert", "equal", "extreme", "near_tie"])
_NORMAL_SCALE = st.sampled_from([0.5, 2.0, 8.0])
_integers = functools.lru_cache(maxsize=None)(st.integers)
_sampled = functools.lru_cache(maxsize=None)(st.sampled_from)  # tuples only (hashable)


@functools.lru_cache(maxsize=None)
def _capacity_any(hi):
    return st.one_of(st.none(), st.integers(0, hi), st.integers(0, 2))


def _precision(caps) -> str:
    return getattr(caps, "precision", "float64") or "float64"


def _logits(draw, rng, T, E, kind=None, precision="float64"):
    kind = kind or draw(_LOGIT_KIND)
    if kind == "near_tie":  # every token: expert b one ulp (of the precision) above expert a
        z = round_inputs(precision, rng.standard_normal((T, E)) * 2.0)
        if E > 1:
            a, b = rng.choice(E, size=2, replace=False)
            z[:, b] = z[:, a] * (1 + np.sign(z[:, a]) * 2 * unit_roundoff(precision))
        return z
    if kind == "normal":
        return rng.standard_normal((T, E)) * draw(_NORMAL_SCALE)
    if kind == "integer":  # ties between experts and between tokens
        return rng.integers(-2, 3, size=(T, E)).astype(np.float64)
    if kind == "one_expert":  # every token prefers the same expert
        z = rng.standard_normal((T, E))
        z[:, rng.integers(E)] += 20.0
        return z
    if kind == "equal":
        return np.zeros((T, E))
    return rng.standard_normal((T, E)) * 1e4


def allowed(caps, option: str, values) -> tuple:
    """``values`` less those the adapter declines (caps: properties.core.Declared);
    Unsupported when nothing is left (the property cannot run for this adapter)."""
    if hasattr(caps, "require"):
        return caps.require(option, tuple(values))
    return tuple(values)


def route_case(caps=frozenset({"route"}), *, drop_orders=None, normalize=None, **kw):
    """A routing problem. ``caps``: the implementation's capabilities decide which
    drop orders and whether padding masks are drawn; declined drop orders and
    normalisations are never drawn."""
    if drop_orders is None:
        drop_orders = ALL_DROP_ORDERS if "route.drop_orders" in caps else BASIC_DROP_ORDERS
    cap = kw.get("capacity", "any")
    kw["capacity_kinds"] = allowed(caps, "capacity", _CAPACITY_NEEDS[cap]) if cap in _CAPACITY_NEEDS else ()
    return _route_case(caps, drop_orders=allowed(caps, "drop_order", drop_orders),
                       normalize=allowed(caps, "normalize", normalize or NORMALIZE), **kw)


def _capacity(draw, kinds, wanted, T, k, E):
    """A capacity of the kinds not declined: the unrestricted draws when nothing is declined."""
    if wanted == "none":
        return None
    if set(kinds) == set(_CAPACITY_NEEDS[wanted]):
        if wanted == "any":
            return draw(_capacity_any(T * k + 1))
        return draw(_integers(0, max(1, (T * k) // max(E, 1))))
    kind = draw(_sampled(tuple(kinds)))
    if kind == "none":
        return None
    if kind == "zero":
        return 0
    hi = T * k + 1 if wanted == "any" else max(1, (T * k) // max(E, 1))
    return draw(_integers(1, hi))


@st.composite
def _route_case(draw, caps, *, drop_orders, normalize, capacity="any", capacity_kinds=(),
                logit_kinds=None, min_E=1, max_T=12, max_E=8, padding=None):
    seed = draw(_SEED)
    rng = np.random.default_rng(seed)
    T = draw(_integers(1, max_T))
    E = draw(_integers(min_E, max_E))
    k = draw(_integers(1, E))
    prec = _precision(caps)
    z = round_inputs(prec, _logits(draw, rng, T, E, draw(_sampled(tuple(logit_kinds))) if logit_kinds else None, prec))
    options = {"normalize": draw(_sampled(tuple(normalize))),
               "drop_order": draw(_sampled(tuple(drop_orders)))}
    if options["drop_order"] == "random":
        options["seed"] = draw(_integers(0, 1000))
    if capacity in _CAPACITY_NEEDS:
        options["capacity"] = _capacity(draw, capacity_kinds, capacity, T, k, E)
    mask = None
    want_padding = ("route.padding" in caps) if padding is None else padding
    if want_padding and draw(_BOOL):
        mask = rng.random(T) < 0.7
    return RouteCase(z, k, options, mask)


@dataclasses.dataclass(frozen=True)
class PermutationCase:
    route: RouteCase
    perm: np.ndarray

    def __repr__(self):
        return f"PermutationCase({self.route!r}, perm={self.perm.tolist()})"

    _repr_pretty_ = _pretty


@st.composite
def permutation_case(draw, caps=frozenset({"route"})):
    """Routing whose outcome does not depend on token order: dropless (any order), or
    a probability-keyed order with continuous logits (no ties), plus a permutation."""
    orders = ("priority", "per_expert_top_prob") if "route.drop_orders" in caps else ()
    orders = tuple(o for o in orders if o in getattr(caps, "allowed", lambda o, v: v)("drop_order", orders))
    mode = draw(sampled(("dropless",) + orders))
    if mode == "dropless":
        case = draw(route_case(caps, capacity="none", padding=False))
    else:
        case = draw(route_case(caps, drop_orders=(mode,), capacity="finite", logit_kinds=("normal",),
                               padding=False, min_E=2))
        from refimpl.moe import router_scores

        p = router_scores(case.logits, "softmax")
        keys = p.max(axis=1)[:, None] if mode == "priority" else p
        # the keys that order tokens must be distinct (ties fall back to token order), and in a
        # lower precision further apart than its resolution of probabilities (32 u_p + 16 E u32,
        # above 2 x the score bound of properties.moe): a near-tie may be ordered either way
        gap = 32 * unit_roundoff(_precision(caps)) + 16 * case.logits.shape[1] * 2.0**-24 if _precision(caps) != "float64" else 0.0
        assume(all(np.min(np.diff(np.sort(col)), initial=np.inf) > gap for col in keys.T))
    perm = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).permutation(case.logits.shape[0])
    return PermutationCase(case, perm)


@dataclasses.dataclass(frozen=True)
class CapacityCase:
    tokens: int
    experts: int
    k: int
    factor: float
    k_in_capacity: bool
    rounding: str
    min_capacity: int
    multiple_of: int


@st.composite
def capacity_case(draw):
    return CapacityCase(
        tokens=draw(st.integers(0, 5000)), experts=draw(st.integers(1, 64)), k=draw(st.integers(1, 8)),
        factor=draw(st.one_of(st.sampled_from([0.5, 1.0, 1.25, 1.5, 2.0]),
                              st.floats(0.0, 4.0, allow_nan=False, allow_infinity=False))),
        k_in_capacity=draw(st.booleans()), rounding=draw(sampled(["floor", "ceil", "round"])),
        min_capacity=draw(sampled([0, 0, 4, 8])), multiple_of=draw(sampled([1, 1, 4])),
    )


@dataclasses.dataclass(frozen=True)
class VectorCase:
    x: np.ndarray
    scale: float

    def __repr__(self):
        return f"VectorCase(x={self.x.tolist()}, scale={self.scale})"

    _repr_pretty_ = _pretty


def loads_case(caps=None):
    """Integer loads per expert (some uniform), and a positive scale factor (integer loads
    below 100 are exact in every precision)."""
    return _loads_case()


@st.composite
def _loads_case(draw):
    E = draw(st.integers(1, 64))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        x = np.full(E, float(draw(st.integers(1, 50))))
    else:
        x = rng.integers(0, 100, size=E).astype(np.float64)
        assume(x.sum() > 0)
    return VectorCase(x, draw(sampled([1e-2, 0.5, 3.0, 1e3])))


# ---------------------------------------------------------------------------
# gradient cases: selections kept away from ties, smooth experts


def _with_margin(rng, T, E, k, margin, scale):
    """Logits whose k-th and (k+1)-th entries of every row differ by >= margin, and
    all entries of a row by >= margin / 4 (so no perturbation of size << margin
    changes the selection)."""
    z = np.empty((T, E))
    for t in range(T):
        gaps = margin / 4 + rng.random(E - 1) * scale
        if 1 <= k < E:
            gaps[k - 1] += margin
        row = -np.concatenate([[0.0], np.cumsum(gaps)]) + rng.standard_normal() * scale
        z[t] = row[rng.permutation(E)]
    return z


@dataclasses.dataclass(frozen=True)
class GradCase:
    """A differentiable MoE problem: x (T, D), router W (E, D), experts, k, options, dy."""

    x: np.ndarray
    W: np.ndarray
    experts: tuple
    k: int
    options: dict
    dy: np.ndarray

    @property
    def logits(self):
        return self.x @ self.W.T

    def __repr__(self):
        return (f"GradCase(T={self.x.shape[0]}, D={self.x.shape[1]}, E={self.W.shape[0]}, k={self.k}, "
                f"options={self.options}, logits={np.array2string(self.logits, precision=4)})")

    _repr_pretty_ = _pretty


def _min_gap(z, k):
    s = -np.sort(-z, axis=-1)
    gaps = [np.min(s[:, :-1] - s[:, 1:])] if z.shape[1] > 1 else [np.inf]
    return float(min(gaps))


@st.composite
def grad_case(draw, *, normalize=None, score=None, k=None, capacity="any", min_E=2, max_E=5, drop_orders=None,
              precision="float64"):
    """Small smooth problems for finite differences: x and W drawn (in ``precision``), logits
    z = x W^T with all gaps >= 1e-3 (a central difference with step h moves z by at most
    |W| h ~ 1e-6) and >= 4 (D + 2) u_p sum_d |x_d W_ed| (a computation of z in precision p
    cannot reorder two experts), GELU/SiLU/SwiGLU experts, position-based drop orders only."""
    from refimpl.moe import random_experts

    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    T, D = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    E = draw(st.integers(min_E, max_E))
    kk = draw(st.integers(1, E)) if k is None else k
    assume(kk <= E)
    x, W = round_inputs(precision, rng.standard_normal((T, D)), rng.standard_normal((E, D)) * 1.5)
    resolvable = 4 * (D + 2) * unit_roundoff(precision) * float(np.max(np.abs(x) @ np.abs(W).T))
    assume(_min_gap(x @ W.T, kk) >= max(1e-3, resolvable))
    kind = draw(sampled(["ffn_gelu", "ffn_silu", "swiglu"]))
    experts = tuple(random_experts(E, D, 3, kind="swiglu" if kind == "swiglu" else "ffn",
                                   act="gelu" if kind == "ffn_gelu" else "silu", bias=kind != "swiglu",
                                   seed=int(rng.integers(2**31))))
    options = {"normalize": draw(sampled(normalize or NORMALIZE)),
               "score": draw(sampled(score or ("softmax", "sigmoid"))),
               "drop_order": draw(sampled(drop_orders or BASIC_DROP_ORDERS)),
               "route_scale": draw(sampled([1.0, 2.5]))}
    if capacity == "any":
        options["capacity"] = draw(st.one_of(st.none(), st.integers(0, T)))
    elif capacity == "none":
        options["capacity"] = None
    return GradCase(x, W, experts, kk, options, round_inputs(precision, rng.standard_normal((T, D))))


@dataclasses.dataclass(frozen=True)
class LogitGradCase:
    logits: np.ndarray
    k: int
    options: dict

    def __repr__(self):
        return f"LogitGradCase(k={self.k}, options={self.options}, logits={np.array2string(self.logits, precision=4)})"

    _repr_pretty_ = _pretty


@st.composite
def logit_grad_case(draw, *, normalize=None, score=None, capacity="any", k=None, max_E=6, drop_orders=None,
                    precision="float64"):
    """Logits with every gap >= 0.05 / 4 (kept by the rounding to ``precision``: bfloat16 moves
    an O(1) logit by <= 2^-8 ~ 0.004), a selection no finite-difference step moves."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    T, E = draw(st.integers(1, 5)), draw(st.integers(2, max_E))
    kk = draw(st.integers(1, E)) if k is None else k
    assume(kk <= E)
    z = round_inputs(precision, _with_margin(rng, T, E, kk, margin=0.05, scale=draw(sampled([0.3, 1.5]))))
    assume(_min_gap(z, kk) >= 0.0125)
    options = {"normalize": draw(sampled(normalize or NORMALIZE)),
               "score": draw(sampled(score or ("softmax", "sigmoid"))),
               "drop_order": draw(sampled(drop_orders or BASIC_DROP_ORDERS)),
               "route_scale": draw(sampled([1.0, 16.0]))}
    if capacity == "any":
        options["capacity"] = draw(st.one_of(st.none(), st.integers(0, T)))
    else:
        options["capacity"] = None
    return LogitGradCase(z, kk, options)


@dataclasses.dataclass(frozen=True)
class NoisyCase:
    clean: np.ndarray
    std: np.ndarray
    noise: np.ndarray
    k: int

    def __repr__(self):
        return f"NoisyCase(k={self.k}, clean={np.array2string(self.clean, precision=4)})"

    _repr_pretty_ = _pretty


def noisy_case(caps=None):
    """Noisy top-k gating inputs (``_noisy_case``) in the adapter's precision."""
    return _noisy_case(_precision(caps))


@st.composite
def _noisy_case(draw, precision="float64"):
    """Noisy top-k gating inputs whose noisy logits H are separated by >= 0.05 (the
    top-k set and every kth_excluding threshold stay put under the FD step; clean, std and
    noise rounded to ``precision`` move H by a few u_p |H|, far less)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    T, E = draw(st.integers(1, 5)), draw(st.integers(2, 6))
    k = draw(st.integers(1, E - 1))
    H = _with_margin(rng, T, E, k, margin=0.2, scale=1.0)
    std = 0.2 + rng.random((T, E))
    noise = rng.standard_normal((T, E))
    clean, std, noise = round_inputs(precision, H - noise * std, std, noise)
    return NoisyCase(clean=clean, std=std, noise=noise, k=k)


# ---------------------------------------------------------------------------


def uniform_batch(E: int, n_groups: int, repeats: int, seed: int) -> np.ndarray:
    """Logits (repeats * E, E) under which routing is uniform for any preset: every
    expert is the first choice of exactly ``repeats`` tokens, in the top-k of
    exactly ``k * repeats``, and the mean probability of every expert is 1/E.

    Row (a, b) puts base[e] at sigma(e), where sigma shifts the group of e by a and
    its place inside the group by b: a transitive set of permutations that
    preserves the expert groups, so group-limited top-k is equivariant under it
    (base has distinct entries and distinct group scores).
    """
    rng = np.random.default_rng(seed)
    g = E // n_groups
    base = rng.standard_normal(E) * 2.0
    rows = []
    for a in range(n_groups):
        for b in range(g):
            row = np.empty(E)
            for e in range(E):
                G, w = divmod(e, g)
                row[((G + a) % n_groups) * g + (w + b) % g] = base[e]
            rows.append(row)
    return np.tile(np.array(rows), (repeats, 1))


@dataclasses.dataclass(frozen=True)
class PresetCase:
    preset: str
    k: int
    E: int
    repeats: int
    seed: int


@st.composite
def preset_case(draw):
    from refimpl.moe import presets

    name = draw(sampled(sorted(presets.ALL)))
    p = presets.ALL[name]
    E = draw(sampled([8, 16]) if p.options.n_groups else st.integers(2, 12))
    k = p.k if p.k is not None else draw(st.integers(1, E))
    assume(p.supports(k, E))
    return PresetCase(name, k, E, draw(st.integers(1, 3)), draw(st.integers(0, 2**32 - 1)))


def honouring(caps, make, **kw):
    """``make(**kw)`` (grad_case, logit_grad_case) with normalize, score and drop
    orders restricted to what the adapter does not decline."""
    kw["normalize"] = allowed(caps, "normalize", kw.get("normalize") or NORMALIZE)
    kw["score"] = allowed(caps, "score", kw.get("score") or ("softmax", "sigmoid"))
    kw["drop_orders"] = allowed(caps, "drop_order", BASIC_DROP_ORDERS)
    kw["precision"] = _precision(caps)
    cap = kw.get("capacity", "any")
    kinds = allowed(caps, "capacity", _CAPACITY_NEEDS[cap])
    if set(kinds) != set(_CAPACITY_NEEDS[cap]):  # grad cases draw None or 0..T: keep only dropless
        if "none" not in kinds:
            from .core import Unsupported

            raise Unsupported(f"declines capacity None, which the gradient cases need ({list(kinds)} left)")
        kw["capacity"] = "none"
    return make(**kw)
