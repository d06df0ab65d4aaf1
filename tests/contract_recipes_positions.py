"""Fuzz recipes for the positions family: RoPE, KV caches and decoding, receptive fields, MLA.

Registered into ``tests.contract_recipes.R`` (see that module for the Recipe fields). Cache
classes are fuzzed through construction followed by one ``update`` (their only public effect);
``decode_step`` mutates the cache it is given by design (the engine compares cache objects by
type, and replays determinism on a deep copy taken before the first call).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import refimpl
from refimpl import kv_cache as KV
from refimpl import masks as M
from refimpl import mla as MLA

from .contract_recipes import R, Recipe, arr, recipe, twin_state_check

small = st.integers(1, 4)

# --- RoPE ----------------------------------------------------------------------

SCALINGS = [
    None,
    {"rope_type": "linear", "factor": 2.0},
    {"rope_type": "dynamic", "factor": 2.0, "max_position_embeddings": 8, "seq_len": 20},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "mscale": 1.0, "mscale_all_dim": 0.5,
     "beta_fast": 16, "truncate": False},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 16},
]


def _scaling(draw, d):
    sc = draw(st.sampled_from(SCALINGS))
    return None if sc is None or (sc["rope_type"] == "dynamic" and d < 4) else dict(sc)


def _rope_kw(draw, D):
    """Valid apply_rope keywords for head dim D (even)."""
    out = {}
    if draw(st.booleans()):
        out["layout"] = draw(st.sampled_from(["half", "interleaved"]))
    d = draw(st.sampled_from([None] + list(range(2, D + 1, 2))))
    if d is not None:
        out["rotary_dim"] = d
    if draw(st.booleans()):
        out["base"] = draw(st.sampled_from([10000.0, 500000.0, 2.0]))
    sc = _scaling(draw, d or D)
    if sc is not None:
        out["scaling"] = sc
    return out


ROPE_KINDS = dict(layout="name", rotary_dim="count", base="float", scaling="object")


@recipe("refimpl.apply_rope", kinds=dict(ROPE_KINDS, x="array", positions="int_array"))
def _(draw):
    B, H, L, D = draw(small), draw(st.integers(1, 2)), draw(st.integers(1, 5)), 2 * draw(small)
    shape = draw(st.sampled_from([(L,), (B, L)]))
    pos = np.random.default_rng(draw(st.integers(0, 99))).integers(0, draw(st.sampled_from([10, 2**40])), shape)
    return dict(x=arr(draw, (B, H, L, D)), positions=pos, **_rope_kw(draw, D))


@recipe("refimpl.rope.rope_definition", kinds=dict(ROPE_KINDS, x="array", positions="int_array"))
def _(draw):
    B, H, L, D = draw(small), draw(st.integers(1, 2)), draw(st.integers(1, 5)), 2 * draw(small)
    shape = draw(st.sampled_from([(L,), (B, L)]))
    pos = np.random.default_rng(draw(st.integers(0, 99))).integers(0, draw(st.sampled_from([10, 2**40])), shape)
    return dict(x=arr(draw, (B, H, L, D)), positions=pos, **_rope_kw(draw, D))


@recipe("refimpl.convert_layout", kinds=dict(x="array", src="name", dst="name", rotary_dim="count"))
def _(draw):
    D = draw(st.integers(2, 8))
    d = draw(st.sampled_from([None] * (D % 2 == 0) + list(range(2, D + 1, 2))))
    return dict(x=arr(draw, (draw(small), D)), src=draw(st.sampled_from(["half", "interleaved"])),
                dst=draw(st.sampled_from(["half", "interleaved"])), rotary_dim=d)


@recipe("refimpl.layout_permutation", kinds=dict(head_dim="count", rotary_dim="count"))
def _(draw):
    D = draw(st.integers(2, 9))
    return dict(head_dim=D, rotary_dim=draw(st.sampled_from([None] * (D % 2 == 0) + list(range(2, D + 1, 2)))))


@recipe("refimpl.rope_frequencies", kinds=dict(rotary_dim="count", base="float", scaling="object"))
def _(draw):
    d = 2 * draw(st.integers(1, 8))
    return dict(rotary_dim=d, base=draw(st.sampled_from([10000.0, 1e6, 3.0])), scaling=_scaling(draw, d))


recipe("refimpl.rope.base_frequencies", kinds=dict(rotary_dim="count", base="float"))(
    lambda draw: dict(rotary_dim=2 * draw(st.integers(1, 8)), base=draw(st.floats(1.5, 1e7))))


@recipe("refimpl.rope.check_positions", kinds=dict(positions="int_array", B="count", L="count"))
def _(draw):
    B, L = draw(small), draw(st.integers(0, 5))
    shape = draw(st.sampled_from([(L,), (B, L)]))
    return dict(positions=np.random.default_rng(draw(st.integers(0, 99))).integers(0, 50, shape), B=B, L=L)


recipe("refimpl.rope.check_rope_kwargs", kinds=dict(rope="object"))(
    lambda draw: dict(rope=_rope_kw(draw, 2 * draw(small))))


@recipe("refimpl.rope.rope_angles", kinds=dict(positions="int_array", theta="array"))
def _(draw):
    pos = np.random.default_rng(draw(st.integers(0, 99))).integers(0, 2**40, (draw(st.integers(0, 2)), draw(small)))
    return dict(positions=pos, theta=refimpl.rope.base_frequencies(2 * draw(small), 10000.0))


recipe("refimpl.rope.yarn_get_mscale", kinds=dict(scale="float", mscale="real"))(
    lambda draw: dict(scale=draw(st.floats(0.1, 64.0)), mscale=draw(st.floats(-2.0, 2.0))))

# --- receptive fields ----------------------------------------------------------


def _interval_mask(draw):
    return draw(st.sampled_from([M.Causal(), M.SlidingWindow(draw(st.integers(0, 3)), 0)]))


recipe("refimpl.receptive_field_matrix", kinds=dict(mask="mask", n="count", layers="count"))(
    lambda draw: dict(mask=draw(st.sampled_from([M.Causal(), M.Full(), M.SlidingWindow(2, 0), M.Strided(2)])),
                      n=draw(st.integers(1, 8)), layers=draw(st.sampled_from([1, 2, 3, 7, 2**40]))))


@recipe("refimpl.receptive_field.receptive_interval", kinds=dict(mask="mask", i="count", layers="count", n="count"))
def _(draw):
    i = draw(st.integers(0, 6))
    return dict(mask=_interval_mask(draw), i=i, layers=draw(st.integers(1, 4)),
                n=draw(st.none() | st.integers(i + 1, 9)))


recipe("refimpl.window_receptive_interval", kinds=dict(i="count", w="count", layers="count"))(
    lambda draw: dict(i=draw(st.integers(0, 50)), w=draw(st.integers(0, 6)), layers=draw(st.integers(1, 5))))

# --- KV caches and decoding -----------------------------------------------------

CACHE_KINDS = dict(num_kv_heads="count", head_dim="count", v_head_dim="count", batch="count", k="array", v="array")


def _cache_args(draw):
    B, Hkv, D = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(small)
    Dv = draw(st.none() | small)
    n = draw(st.integers(0, 5))
    return dict(num_kv_heads=Hkv, head_dim=D, v_head_dim=Dv, batch=B, k=arr(draw, (B, Hkv, n, D)),
                v=arr(draw, (B, Hkv, n, D if Dv is None else Dv)))


def _construct_then_update(fn, kw):
    kw = dict(kw)
    k, v = kw.pop("k"), kw.pop("v")
    cache = fn(**kw)
    K, V = cache.update(k, v)
    out = K, V, cache.contents()
    # the aliasing oracle for the object's state: a caller writing into what update and contents
    # returned leaves the cache as an untouched twin (two updates: the second reads the first's keys)
    half = max(k.shape[2] // 2, 0) if np.ndim(k) == 4 else 0
    twin_state_check(lambda: fn(**kw),
                     lambda c: [c.update(k[:, :, :half], v[:, :, :half]), c.contents(),
                                c.update(k[:, :, half:], v[:, :, half:])],
                     lambda c: c.contents(), f"{getattr(fn, '__name__', fn)}.update/contents")
    return out


recipe("refimpl.ContiguousCache", kinds=CACHE_KINDS, call=_construct_then_update)(_cache_args)
recipe("refimpl.PagedCache", kinds=dict(CACHE_KINDS, block_size="count", num_blocks="count"),
       call=_construct_then_update)(
    lambda draw: dict(_cache_args(draw), block_size=draw(small), num_blocks=draw(st.integers(10, 12))))
recipe("refimpl.RingCache", kinds=dict(CACHE_KINDS, capacity="count"), call=_construct_then_update)(
    lambda draw: dict(_cache_args(draw), capacity=draw(small)))
R["refimpl.kv_cache.KVCache"] = Recipe(
    lambda draw: {n: v for n, v in _cache_args(draw).items() if n not in ("k", "v")},
    {n: k for n, k in CACHE_KINDS.items() if n not in ("k", "v")},
    call=lambda fn, kw: (lambda c: (c.B, c.Hkv, c.D, c.Dv, c.length))(fn(**kw)))


@recipe("refimpl.make_cache", kinds=dict(CACHE_KINDS, kind="name", window="window", block_size="count",
                                         num_blocks="count"), call=_construct_then_update)
def _(draw):
    d = dict(_cache_args(draw), kind=draw(st.sampled_from(["contiguous", "paged", "ring"])))
    if d["kind"] == "ring" or draw(st.booleans()):
        d["window"] = (draw(st.integers(0, 4)), 0)
    if d["kind"] == "paged":
        d.update(block_size=draw(small), num_blocks=draw(st.integers(10, 12)))
    return d


def _decode_args(draw, *, with_cache=True):
    B, Hkv, D, Dv = draw(st.integers(1, 2)), draw(st.integers(1, 2)), 2 * draw(st.integers(1, 2)), draw(small)
    Hq, L = Hkv * draw(st.integers(1, 2)), draw(st.integers(1, 5))
    d = dict(q=arr(draw, (B, Hq, L, D)), k=arr(draw, (B, Hkv, L, D)), v=arr(draw, (B, Hkv, L, Dv)))
    window = draw(st.none() | st.tuples(st.integers(0, 4), st.just(0)))
    if window is not None:
        d["window"] = window
    if draw(st.booleans()):
        d["rope"] = _rope_kw(draw, D)
    if draw(st.booleans()):
        d["scale"] = draw(st.floats(0.1, 2.0))
    if with_cache:
        kind = draw(st.sampled_from(["contiguous", "paged"] + (["ring"] if window is not None else [])))
        cache = KV.make_cache(kind, Hkv, D, Dv, batch=B, window=window, block_size=2, num_blocks=16)
        if draw(st.booleans()):  # a cache already holding earlier tokens
            n0 = draw(small)
            cache.update(arr(draw, (B, Hkv, n0, D)), arr(draw, (B, Hkv, n0, Dv)))
        d["cache"] = cache
    return d


DECODE_KINDS = dict(q="array", k="array", v="array", window="window", rope="object", scale="float")
recipe("refimpl.decode_step", kinds=dict(DECODE_KINDS, cache="object", align="name"))(_decode_args)


@recipe("refimpl.decode", kinds=dict(DECODE_KINDS, cache="object", chunks="index_list"))
def _(draw):
    d = _decode_args(draw)
    L, chunks = d["q"].shape[2], []
    while sum(chunks) < L:
        chunks.append(draw(st.integers(1, L - sum(chunks))))
    return dict(d, chunks=chunks)


recipe("refimpl.kv_cache.prefill_reference", kinds=DECODE_KINDS)(lambda draw: _decode_args(draw, with_cache=False))
recipe("refimpl.kv_cache.decode_definition", kinds=DECODE_KINDS)(lambda draw: _decode_args(draw, with_cache=False))

# --- MLA -------------------------------------------------------------------------


def _dims(draw):
    return dict(d_model=draw(small), num_heads=draw(st.integers(1, 2)), d_c=draw(small), d_nope=draw(small),
                d_rope=2 * draw(st.integers(1, 2)), d_v=draw(small))


def _weights(draw):
    return MLA.init_mla_weights(np.random.default_rng(draw(st.integers(0, 99))), **_dims(draw))


DIM_KINDS = dict(d_model="count", num_heads="count", d_c="count", d_nope="count", d_rope="count", d_v="count")
recipe("refimpl.mla.init_mla_weights", kinds=dict(DIM_KINDS, rng="object"))(
    lambda draw: dict(_dims(draw), rng=np.random.default_rng(draw(st.integers(0, 99)))))


@recipe("refimpl.MLAWeights", kinds=dict(W_q="array", W_dkv="array", W_ukv="array", W_o="array", num_heads="count",
                                         d_nope="count", d_rope="count", d_v="count"))
def _(draw):
    w = _weights(draw)
    return {n: getattr(w, n) for n in ("W_q", "W_dkv", "W_ukv", "W_o", "num_heads", "d_nope", "d_rope", "d_v")}


@recipe("refimpl.mla_attention", kinds=dict(x="array", weights="object", absorbed="bool", cache="object",
                                            scale="float", rope="object"))
def _(draw):
    w = _weights(draw)
    B, L, absorbed = draw(st.integers(1, 2)), draw(small), draw(st.booleans())
    d = dict(x=arr(draw, (B, L, w.W_q.shape[0])), weights=w, absorbed=absorbed)
    if draw(st.booleans()):
        cache = (MLA.MLALatentCache(w.d_c, w.d_rope, batch=B) if absorbed
                 else KV.ContiguousCache(w.num_heads, w.d_nope + w.d_rope, w.d_v, batch=B))
        refimpl.mla_attention(arr(draw, (B, draw(small), w.W_q.shape[0])), w, absorbed=absorbed, cache=cache)
        d["cache"] = cache
    if draw(st.booleans()):
        d["scale"] = draw(st.floats(0.1, 2.0))
    if draw(st.booleans()):
        d["rope"] = {"base": draw(st.sampled_from([10000.0, 50.0]))}
    return d


@recipe("refimpl.mla.mla_definition", kinds=dict(x="array", weights="object", scale="float", rope="object"))
def _(draw):
    w = _weights(draw)
    d = dict(x=arr(draw, (draw(st.integers(1, 2)), draw(small), w.W_q.shape[0])), weights=w)
    if draw(st.booleans()):
        d["scale"] = draw(st.floats(0.1, 2.0))
    if draw(st.booleans()):
        d["rope"] = {"base": draw(st.sampled_from([10000.0, 50.0]))}
    return d


@recipe("refimpl.MLALatentCache", kinds=dict(d_c="count", d_rope="count", batch="count", c_kv="array",
                                             k_pe="array"),
        call=lambda fn, kw: fn(kw["d_c"], kw["d_rope"], batch=kw["batch"]).update(kw["c_kv"], kw["k_pe"]))
def _(draw):
    B, n, d_c, d_rope = draw(st.integers(1, 2)), draw(st.integers(0, 4)), draw(small), draw(small)
    return dict(d_c=d_c, d_rope=d_rope, batch=B, c_kv=arr(draw, (B, n, d_c)), k_pe=arr(draw, (B, n, d_rope)))


@recipe("refimpl.mla.mla_cache_values_per_token", kinds=dict(weights_or_dims="object", form="name"))
def _(draw):
    w = draw(st.sampled_from(["weights", "dims"]))
    wd = _weights(draw) if w == "weights" else tuple(draw(small) for _ in range(5))
    return dict(weights_or_dims=wd, form=draw(st.sampled_from(["naive", "latent"])))


recipe("refimpl.mla.mla_params", kinds=dict(d_model="count", num_heads="count", q_lora_rank="count",
                                            kv_lora_rank="count", d_nope="count", d_rope="count", d_v="count"))(
    lambda draw: dict(d_model=draw(st.integers(1, 7168)), num_heads=draw(st.integers(1, 128)),
                      q_lora_rank=draw(st.integers(0, 1536)), kv_lora_rank=draw(st.integers(1, 512)),
                      d_nope=draw(st.integers(1, 128)), d_rope=draw(st.integers(1, 64)), d_v=draw(st.integers(1, 128))))
recipe("refimpl.mla.mla_softmax_scale", kinds=dict(d_nope="count", d_rope="count", rope_factor="float",
                                                   mscale="real"))(
    lambda draw: dict(d_nope=draw(st.integers(1, 128)), d_rope=draw(st.integers(1, 64)),
                      rope_factor=draw(st.floats(0.5, 40.0)), mscale=draw(st.floats(0.0, 2.0))))
