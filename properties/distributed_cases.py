"""Hypothesis strategies for the distributed properties (see properties.distributed).

``cp_case``: one sequence over P = 1..4 ranks, a contiguous layout with any
shard sizes (empty shards included) or a zig-zag one from 2P chunk sizes;
GQA, causal, sliding windows (sides None or 0..5), packed-document masks,
softcap, scale; Hkv a multiple of P for Ulysses. Arrays come from a drawn seed.

``ep_case``: P = 1..4 ranks with 0..5 tokens each, E = 1..6 experts placed on
ranks by any owner array (ranks without experts included), k = 1..3, the
normalisations, softmax or sigmoid scores, capacity none / int / factor, the
drop orders each convention supports, and rerouting (local convention) with
more tokens and a small int capacity so backups have free slots next to full
experts.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import strategies as st

import refimpl
import refimpl.moe as M
from refimpl.distributed import expert_parallel as EP
from refimpl.distributed import sharding as SH

from .tolerance import round_to
from .strategy_cache import sampled


@dataclasses.dataclass(frozen=True)
class CPCase:
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    layout: str
    sizes: tuple  # contiguous: per rank; zigzag: the 2P chunks
    kwargs: dict
    seed: int

    @property
    def positions(self):
        return SH.contiguous(self.sizes) if self.layout == "contiguous" else SH.zigzag(self.sizes)

    @property
    def num_ranks(self):
        return len(self.positions)

    def __repr__(self):
        return (f"CPCase(q{self.q.shape}, k{self.k.shape}, v{self.v.shape}, {self.layout}{self.sizes}, "
                f"kwargs={self.kwargs}, seed={self.seed})")

    def _repr_pretty_(self, p, cycle):
        p.text(repr(self))


@st.composite
def cp_case(draw, *, ulysses=False, precision="float64", extreme=False):
    """A sequence sharded over P ranks (contiguous or zigzag, any shard sizes), inputs
    representable in ``precision``. ``extreme``: q, k of magnitude 30 or 60 and no softcap,
    so scores (and the partial lse each rank merges) reach beyond 709, where exp overflows."""
    P = draw(st.integers(1, 4))
    layout = draw(sampled(("contiguous", "zigzag")))
    n = P if layout == "contiguous" else 2 * P
    sizes = tuple(draw(st.lists(st.integers(0, 4 if layout == "contiguous" else 2), min_size=n, max_size=n)))
    if sum(sizes) == 0:
        sizes = (1,) + sizes[1:]
    Hkv = P * draw(st.integers(1, 2)) if ulysses else draw(st.integers(1, 2))
    G, B = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    D, Dv = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kw = {"causal": draw(st.booleans())}
    if draw(st.booleans()):
        side = st.one_of(st.none(), st.integers(0, 5))
        kw["window"] = (draw(side), draw(side))
    if not extreme and draw(st.booleans()):
        kw["softcap"] = draw(sampled((0.5, 3.0)))
    if draw(st.booleans()):
        kw["scale"] = draw(sampled((1.0, 4.0) if extreme else (0.1, 1.0, 4.0)))
    seed = draw(st.integers(0, 2**32 - 1))
    mag = draw(sampled((30.0, 60.0) if extreme else (1.0, 5.0)))
    rng = np.random.default_rng(seed)
    L = sum(sizes)
    if draw(st.integers(0, 3)) == 0:  # packed documents: a global predicate (segment ids by global position)
        kw["mask"] = refimpl.masks.Document(np.sort(rng.integers(0, 3, L)))
    q = round_to(mag * rng.standard_normal((B, Hkv * G, L, D)), precision)
    k = round_to(mag * rng.standard_normal((B, Hkv, L, D)), precision)
    v = round_to(rng.standard_normal((B, Hkv, L, Dv)), precision)
    return CPCase(q, k, v, layout, sizes, kw, seed)


@dataclasses.dataclass(frozen=True)
class EPCase:
    xs: tuple
    W: np.ndarray
    experts: tuple
    k: int
    owner: np.ndarray
    convention: str
    options: dict
    seed: int

    def __repr__(self):
        return (f"EPCase(T_r={[x.shape[0] for x in self.xs]}, D={self.W.shape[1]}, E={self.W.shape[0]}, k={self.k}, "
                f"owner={self.owner.tolist()}, {self.convention}, options={self.options}, seed={self.seed})")

    def _repr_pretty_(self, p, cycle):
        p.text(repr(self))


@st.composite
def ep_case(draw, conventions=("local", "global")):
    P = draw(st.integers(1, 4))
    E = draw(st.integers(1, 6))
    k = draw(st.integers(1, min(E, 3)))
    D, H = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    owner = np.array(draw(st.lists(st.integers(0, P - 1), min_size=E, max_size=E)), dtype=np.int64)
    convention = draw(sampled(conventions))
    orders = EP.GLOBAL_ORDERS if convention == "global" else ("k_major", "token_major", "priority",
                                                               "per_expert_top_prob")
    options = {"normalize": draw(sampled(("none", "before_drop", "after_drop"))),
               "drop_order": draw(sampled(orders)),
               "score": draw(sampled(("softmax", "sigmoid")))}
    cap = draw(sampled(("none", "int", "factor")))
    if cap == "int":
        options["capacity"] = draw(st.integers(0, 3))
    elif cap == "factor":
        options["capacity_factor"] = draw(sampled((0.5, 1.0, 1.5)))
    reroute = convention == "local" and cap != "none" and draw(st.booleans())
    if reroute:  # backups need free slots next to full experts: more tokens, some slack
        options["reroute"] = True
        options.pop("capacity_factor", None)
        options["capacity"] = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    sizes = draw(st.lists(st.integers(2 if reroute else 0, 8 if reroute else 5), min_size=P, max_size=P))
    xs = tuple(rng.standard_normal((n, D)) for n in sizes)
    W = draw(sampled((1.0, 4.0))) * rng.standard_normal((E, D))
    return EPCase(xs, W, tuple(M.random_experts(E, D, H, seed=seed % 1000)), k, owner, convention, options, seed)
