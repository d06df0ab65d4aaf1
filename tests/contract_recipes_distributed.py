"""Fuzz recipes of refimpl.distributed (layouts, ring / Ulysses attention, expert-parallel MoE,
the simulator, the communication-volume formulas). Registered into contract_recipes.R.

Only each submodule's ``__all__`` is fuzzed: the rank programs, their messages and pure steps
(``ring.forward_step``, ``ulysses.scatter_heads``, ``expert_parallel.program`` ...) are the
executable spec of the algorithm, driven by the entry points with validated arguments.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
from hypothesis import strategies as st

import refimpl
from refimpl import moe
from refimpl.distributed import sharding as SH
from refimpl.distributed.messages import Exchange

from properties.tolerance import flash_forward_bounds

from .contract_recipes import R, arr, recipe

P_ = "refimpl.distributed."
Log = refimpl.distributed.simulate.Log


def _fresh_log(fn, kw):
    """Call with a copy of a valid ``log``: a Log is the documented out-parameter that receives the
    counted messages (the one argument these functions write to), so the caller's is not reused."""
    if isinstance(kw.get("log"), Log):
        kw = dict(kw, log=copy.deepcopy(kw["log"]))
    return fn(**kw)


def _layout(draw, L, P=None):
    """A contiguous or zig-zag layout of 0..L-1 over P ranks."""
    P = draw(st.integers(1, 3)) if P is None else P
    if draw(st.booleans()):
        return list(SH.zigzag(SH.even_sizes(L, 2 * P)))
    return list(SH.contiguous(SH.even_sizes(L, P)))


def _index_list(draw, lo=0, hi=4, n=(1, 4)):
    return draw(st.lists(st.integers(lo, hi), min_size=n[0], max_size=n[1]))


# --- sharding ------------------------------------------------------------------


def _partitions(kw, res):
    """A layout's ranks hold 0..L-1 exactly once, L the sum of the sizes."""
    L = sum(kw.get("sizes", kw.get("chunk_sizes")))
    got = np.sort(np.concatenate(res))
    assert np.array_equal(got, np.arange(L)), f"layout does not partition 0..{L - 1}: {res}"


recipe(P_ + "sharding.contiguous", kinds=dict(sizes="index_list"), oracle=_partitions)(
    lambda draw: dict(sizes=_index_list(draw)))
recipe(P_ + "sharding.zigzag", kinds=dict(chunk_sizes="index_list"), oracle=_partitions)(
    lambda draw: dict(chunk_sizes=_index_list(draw) * 2))
recipe(P_ + "sharding.even_sizes", kinds=dict(L="count", parts="count"))(
    lambda draw: dict(L=draw(st.integers(0, 9)), parts=draw(st.integers(1, 4))))


# shard and gather move rows: -inf entries (the lse of a fully masked row) pass through, as documented
@recipe(P_ + "sharding.shard", kinds=dict(x="array_neginf", positions="array_list", axis="axis"),
        finite="no_nan_posinf")
def _(draw):
    L = draw(st.integers(1, 6))
    return dict(x=arr(draw, (2, 1, L, 2)), positions=_layout(draw, L), axis=2)


def _gather_inverts_shard(kw, res):
    back = SH.shard(res, kw["positions"], kw["axis"])
    assert all(np.array_equal(a, b) for a, b in zip(back, kw["parts"])), "shard(gather(parts)) != parts"


@recipe(P_ + "sharding.gather", kinds=dict(parts="array_list", positions="array_list", axis="axis"),
        finite="no_nan_posinf", oracle=_gather_inverts_shard)
def _(draw):
    L = draw(st.integers(1, 6))
    pos = _layout(draw, L)
    return dict(parts=SH.shard(arr(draw, (1, 2, L, 2)), pos), positions=pos, axis=2)


def _gmask_kwargs(draw, L):
    d = dict(L=L)
    if draw(st.booleans()):
        d["causal"] = draw(st.booleans())
    if draw(st.booleans()):
        d["window"] = (draw(st.none() | st.integers(0, 3)), draw(st.none() | st.integers(0, 3)))
    if draw(st.booleans()) and L:
        d["mask"] = refimpl.masks.Document(np.sort(np.random.default_rng(draw(st.integers(0, 9))).integers(0, 2, L)))
    return d


# positions from the validated m.L, a Python int (np.arange of a broken np.uint64 L would be float64)
@recipe(P_ + "sharding.GlobalMask", kinds=dict(L="count", causal="bool", window="window", mask="mask"),
        call=lambda fn, kw: (lambda m: m.visible(np.arange(min(m.L, 6)), np.arange(min(m.L, 6))))(fn(**kw)))
def _(draw):
    return _gmask_kwargs(draw, draw(st.integers(0, 6)))


@recipe(P_ + "sharding.visible_pairs_per_rank", P_ + "ring.ring_num_steps",
        kinds=dict(gmask="object", positions="array_list"))
def _(draw):
    L = draw(st.integers(1, 8))
    return dict(gmask=SH.GlobalMask(**_gmask_kwargs(draw, L)), positions=_layout(draw, L))


# --- ring and Ulysses attention ---------------------------------------------------

CP_KINDS = dict(q="array", k="array", v="array", positions="array_list", causal="bool", window="window",
                mask="mask", scale="float", softcap="float", log="object", driver="callable")


def _cp_build(draw, *, backward, ulysses):
    P = draw(st.integers(1, 3))
    B, D, Dv = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    Hkv = P * draw(st.integers(1, 2)) if ulysses else draw(st.integers(1, 2))
    Hq = Hkv * draw(st.integers(1, 2))
    L = draw(st.integers(1, 6))
    d = dict(q=arr(draw, (B, Hq, L, D)), k=arr(draw, (B, Hkv, L, D)), v=arr(draw, (B, Hkv, L, Dv)),
             positions=_layout(draw, L, P))
    d.update({n: v for n, v in _gmask_kwargs(draw, L).items() if n != "L"})
    if draw(st.booleans()):
        d["scale"] = draw(st.floats(0.1, 2.0))
    if draw(st.booleans()):
        d["softcap"] = draw(st.floats(0.5, 20.0))
    if draw(st.booleans()):
        d["log"] = Log(P)
    if backward:
        d["dout"] = arr(draw, (B, Hq, L, Dv))
    return d


def _matches_gathered_attention(kw, res):
    """The forward equals refimpl.attention on the gathered sequence, within the split-KV bound
    (properties.tolerance.flash_forward_bounds with one chunk per block: the test of
    tests/test_distributed.py, whose measured worst is 0.02 of it)."""
    out, lse = res[:2]
    names = ("causal", "window", "mask", "scale", "softcap")
    akw = {n: kw[n] for n in names if n in kw}
    ref_out, ref_lse = refimpl.attention(kw["q"], kw["k"], kw["v"], **akw)
    L = kw["q"].shape[2]
    chunks = 6 * len(kw["positions"])
    atol_out, atol_lse = flash_forward_bounds(kw["q"], kw["k"], kw["v"], block_k=max(1, L), chunks=chunks,
                                              scale=kw.get("scale"), softcap=kw.get("softcap"), lse=ref_lse)
    # Underflow (Higham 2002, eq. 2.8): a product or quotient landing in the subnormal range carries an
    # ABSOLUTE error <= eta / 2, eta = 2**-1074, which the relative bound above (proportional to
    # max|v|) does not cover when v itself is subnormal. On the path to one output entry there are at
    # most 2 (L + chunks + 4) such roundings (the L weighted terms of each partial, its normalisation,
    # the merge weights), and later factors (weights exp(s - m) <= 1, divisions by sums >= 1) do not
    # amplify them; so, per entry, both results differ from the exact one by <= (L + chunks + 4) eta.
    atol_out = atol_out + 2 * (L + chunks + 4) * np.nextafter(0.0, 1.0)
    assert np.abs(out - ref_out).max(initial=0.0) <= atol_out, "out differs from refimpl.attention"
    fin = np.isfinite(ref_lse)
    assert np.array_equal(fin, np.isfinite(lse)), "masked rows differ from refimpl.attention"
    assert np.abs(lse[fin] - ref_lse[fin]).max(initial=0.0) <= atol_lse, "lse differs from refimpl.attention"


def _cp_recipe(name, *, backward, ulysses):
    kinds = dict(CP_KINDS, dout="array") if backward else CP_KINDS
    # forward: lse = -inf on a row whose mask hides every key (documented, as refimpl.attention)
    recipe(name, kinds=kinds, finite="all" if backward else "no_nan_posinf", call=_fresh_log,
           oracle=None if backward else _matches_gathered_attention)(
        lambda draw: _cp_build(draw, backward=backward, ulysses=ulysses))


_cp_recipe(P_ + "ring.ring_attention", backward=False, ulysses=False)
_cp_recipe(P_ + "ring.ring_attention_backward", backward=True, ulysses=False)
_cp_recipe(P_ + "ulysses.ulysses_attention", backward=False, ulysses=True)
_cp_recipe(P_ + "ulysses.ulysses_attention_backward", backward=True, ulysses=True)


# --- expert parallel ---------------------------------------------------------------

recipe(P_ + "expert_parallel.contiguous_placement", kinds=dict(E="count", P="count"))(
    lambda draw: (lambda P: dict(E=P * draw(st.integers(1, 3)), P=P))(draw(st.integers(1, 3))))


@recipe(P_ + "expert_parallel.expert_parallel_moe",
        kinds=dict(xs="array_list", router_weight="array", experts="experts", k="count", owner="int_array",
                   capacity_convention="name", log="object", driver="callable", reroute="bool",
                   capacity_factor="nonneg_float"), call=_fresh_log)
def _(draw):
    P, E, D = draw(st.integers(1, 3)), draw(st.integers(2, 4)), draw(st.integers(1, 3))
    xs = [arr(draw, (draw(st.integers(0, 4)), D)) for _ in range(P)]
    d = dict(xs=xs, router_weight=arr(draw, (E, D)), experts=moe.random_experts(E, D, 2, seed=draw(st.integers(0, 9))),
             k=draw(st.integers(1, E)), owner=np.array([draw(st.integers(0, P - 1)) for _ in range(E)]),
             capacity_convention=draw(st.sampled_from(["local", "global"])))
    if draw(st.booleans()):
        d["capacity_factor"] = draw(st.floats(0.5, 2.0))
    if draw(st.booleans()):
        d["log"] = Log(P)
    if d["capacity_convention"] == "local" and draw(st.booleans()):
        d["reroute"] = True
    return d


# --- the simulator ----------------------------------------------------------------


def _ring_shift(r, P, value):
    """A toy rank program: pass ``value`` once around the ring, return what came back (an int)."""
    got = yield Exchange({(r + 1) % P: value}, ((r - 1) % P,))
    return got[(r - 1) % P]


class _Programs(list):
    """Zero-argument factories of generators, made fresh at each call (a generator runs once)."""


def _run_call(fn, kw):
    progs = kw.get("programs")
    if isinstance(progs, _Programs):
        kw = dict(kw, programs=[f() for f in progs])
    return _fresh_log(fn, kw)


recipe(P_ + "simulate.Log", kinds=dict(num_ranks="count"))(lambda draw: dict(num_ranks=draw(st.integers(1, 5))))


@recipe(P_ + "simulate.run", kinds=dict(programs="object", log="object"), call=_run_call,
        oracle=lambda kw, res: None if res == [(r - 1) % len(res) for r in range(len(res))] else
        (_ for _ in ()).throw(AssertionError(f"run: ring shift gave {res}")))
def _(draw):
    P = draw(st.integers(1, 4))
    d = dict(programs=_Programs([lambda r=r: _ring_shift(r, P, r) for r in range(P)]))
    if draw(st.booleans()):
        d["log"] = Log(P)
    return d


@recipe(P_ + "simulate.drive", kinds=dict(make_program="callable", num_ranks="count", log="object"),
        call=_fresh_log)
def _(draw):
    P = draw(st.integers(1, 4))
    d = dict(make_program=lambda r: _ring_shift(r, P, r), num_ranks=P)
    if draw(st.booleans()):
        d["log"] = Log(P)
    return d


# --- communication volume formulas --------------------------------------------------

DIMS = ("B", "Hq", "Hkv", "D", "Dv")


def _dims(draw, names, P=1):
    return {n: (P * draw(st.integers(1, 2)) if n in ("Hq", "Hkv") else draw(st.integers(1, 4))) for n in names}


def _all_gather_volume(kw, res):
    """Equal shards n, S = P: the ring forward sends (P - 1) B Hkv n (D + Dv) floats (module docstring)."""
    sizes, P = kw["sizes"], len(kw["sizes"])
    if len(set(sizes)) == 1 and kw["num_steps"] == P and res:
        want = (P - 1) * kw["B"] * kw["Hkv"] * sizes[0] * (kw["D"] + kw["Dv"])
        assert all(s.floats == want for s in res), f"ring_forward {res} != all-gather volume {want}"


@recipe(P_ + "comm_volume.ring_forward", P_ + "comm_volume.ring_backward",
        kinds=dict(sizes="index_list", num_steps="count", **{n: "count" for n in DIMS if n != "Hq"}))
def _(draw):
    sizes = _index_list(draw, n=(1, 4))
    return dict(sizes=sizes, num_steps=draw(st.integers(1, len(sizes))),
                **_dims(draw, [n for n in DIMS if n != "Hq"]))


@recipe(P_ + "comm_volume.ulysses", P_ + "comm_volume.ulysses_backward",
        kinds=dict(sizes="index_list", **{n: "count" for n in DIMS}))
def _(draw):
    sizes = _index_list(draw, n=(1, 3))
    return dict(sizes=sizes, **_dims(draw, DIMS, len(sizes)))


@recipe(P_ + "comm_volume.kept_rows", kinds=dict(routings="routing_list", owner="int_array"))
def _(draw):
    E, P = draw(st.integers(2, 4)), draw(st.integers(1, 3))
    k = draw(st.integers(1, E))
    rts = [moe.route(arr(draw, (draw(st.integers(0, 4)), E)), k, capacity_factor=1.0) for _ in range(P)]
    return dict(routings=rts, owner=np.array([draw(st.integers(0, P - 1)) for _ in range(E)]))


@recipe(P_ + "comm_volume.expert_parallel", kinds=dict(m="int_array", D="count", k="count", E="count",
                                                        capacity_convention="name"))
def _(draw):
    P = draw(st.integers(1, 3))
    m = np.random.default_rng(draw(st.integers(0, 99))).integers(0, 5, (P, P))
    return dict(m=m, D=draw(st.integers(1, 4)), k=draw(st.integers(1, 2)), E=draw(st.integers(2, 4)),
                capacity_convention=draw(st.sampled_from(["local", "global"])))


@recipe(P_ + "comm_volume.padded_dispatch_floats", kinds=dict(capacity="count", owner="int_array", rank="count",
                                                               D="count"))
def _(draw):
    P = draw(st.integers(1, 3))
    return dict(capacity=draw(st.integers(0, 5)), owner=np.array([draw(st.integers(0, P - 1)) for _ in range(4)]),
                rank=draw(st.integers(0, P - 1)), D=draw(st.integers(1, 4)))


R[P_ + "comm_volume.ring_forward"] = dataclasses.replace(R[P_ + "comm_volume.ring_forward"], oracle=_all_gather_volume)
