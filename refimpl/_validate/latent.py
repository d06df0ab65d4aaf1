"""Latent-attention arguments: multi-head latent attention (``refimpl.mla``: its weights, dims, inputs
and caches), the Perceiver-style latent block (``refimpl.latent``) and pooled memory
(``refimpl.pooled_memory``: window and group sizes).

Classes are passed in: this module imports nothing above the package."""

from __future__ import annotations

from .arrays import as_float_array
from .scalars import _type, count, fail, flag, instance, positive_float, positive_int

# --- refimpl.mla ---------------------------------------------------------------------------------


def even_rope_dim(d_rope) -> int:
    """d_rope: a positive even count (RoPE rotates pairs)."""
    d = positive_int(d_rope, "d_rope")
    if d % 2:
        fail("d_rope", "an even number", d)
    return d


def mla_weights(W_q, W_dkv, W_ukv, W_o, num_heads, d_nope, d_rope, d_v) -> dict:
    """The four MLA matrices as float64 arrays {name: array}, with shapes that agree with the dims:
    W_q (d_model, H (d_nope + d_rope)), W_dkv (d_model, d_c + d_rope), W_ukv (d_c, H (d_nope + d_v)),
    W_o (H d_v, d_model); d_rope even."""
    H, dn, dr, dv = (positive_int(x, n) for x, n in ((num_heads, "num_heads"), (d_nope, "d_nope"),
                                                      (d_rope, "d_rope"), (d_v, "d_v")))
    W = {n: as_float_array(a, n, ndim=2) for n, a in (("W_q", W_q), ("W_dkv", W_dkv), ("W_ukv", W_ukv), ("W_o", W_o))}
    d_model, d_c = W["W_q"].shape[0], W["W_ukv"].shape[0]
    expect = {"W_q": ((d_model, H * (dn + dr)), "(d_model, num_heads (d_nope + d_rope))", "num_heads, d_nope, d_rope"),
              "W_dkv": ((d_model, d_c + dr), "(d_model, d_c + d_rope)", "d_rope"),
              "W_ukv": ((d_c, H * (dn + dv)), "(d_c, num_heads (d_nope + d_v))", "num_heads, d_nope, d_v"),
              "W_o": ((H * dv, d_model), "(num_heads d_v, d_model)", "num_heads, d_v")}
    for n, (shape, doc, dims) in expect.items():
        if W[n].shape != shape:
            fail(f"{n}, {dims}", f"{n} of shape {doc} = {shape}", str(W[n].shape))
    even_rope_dim(dr)
    return W


def mla_init_dims(d_model, num_heads, d_c, d_nope, d_rope, d_v) -> tuple:
    """(d_model, H, d_c, d_nope, d_rope, d_v): positive counts, d_rope even."""
    dims = tuple(positive_int(x, n) for x, n in ((d_model, "d_model"), (num_heads, "num_heads"), (d_c, "d_c"),
                                                  (d_nope, "d_nope"), (d_rope, "d_rope"), (d_v, "d_v")))
    even_rope_dim(dims[4])
    return dims


def latent_cache_update(c_kv, k_pe, B: int, d_c: int, d_rope: int) -> tuple:
    """(c_kv (B, n, d_c), k_pe (B, n, d_rope)) for a latent cache of batch B, d_c and d_rope."""
    c_kv = as_float_array(c_kv, "c_kv", ndim=3)
    k_pe = as_float_array(k_pe, "k_pe", shape=(B, c_kv.shape[1], d_rope),
                          shape_doc="(batch, n, d_rope), the cache's batch and d_rope")
    if c_kv.shape[::2] != (B, d_c):
        fail("c_kv", f"shape (batch, n, d_c) = ({B}, *, {d_c}), the cache's batch and d_c", str(c_kv.shape))
    return c_kv, k_pe


def mla_attention_inputs(x, d_model: int, absorbed, cache, scale, dims: tuple, caches: tuple) -> tuple:
    """(x, absorbed, scale) of ``mla_attention``: x (B, L, d_model); ``cache`` None or the form's cache
    (``caches`` = (latent cache class, naive cache class)) with the dims of x and the weights
    (``dims`` = (H, d_nope, d_rope, d_v, d_c)); scale None or finite > 0."""
    x = as_float_array(x, "x", ndim=3)
    if x.shape[2] != d_model:
        fail("x", f"d_model = {d_model}", str(x.shape))
    absorbed = flag(absorbed, "absorbed")
    H, dn, dr, dv, d_c = dims
    if cache is not None:
        want = caches[0] if absorbed else caches[1]
        instance(cache, "cache", want, f"{want.__name__} (the {'absorbed' if absorbed else 'naive'} form's cache)")
        got = (cache.store.B, cache.d_c, cache.d_rope) if absorbed else (cache.B, cache.Hkv, cache.D, cache.Dv)
        expect = (x.shape[0], d_c, dr) if absorbed else (x.shape[0], H, dn + dr, dv)
        if got != expect:
            fail("cache", f"dims {expect} for x and weights", str(got))
    return x, absorbed, None if scale is None else positive_float(scale, "scale")


def mla_dims(weights_or_dims, cls) -> tuple:
    """(H, d_nope, d_rope, d_v, d_c) of a ``cls`` (MLAWeights) or of such a tuple of positive counts."""
    if isinstance(weights_or_dims, cls):
        w = weights_or_dims
        return w.num_heads, w.d_nope, w.d_rope, w.d_v, w.d_c
    if not isinstance(weights_or_dims, (tuple, list)) or len(weights_or_dims) != 5:
        fail("weights_or_dims", "MLAWeights or (H, d_nope, d_rope, d_v, d_c)", repr(weights_or_dims), error=TypeError)
    return tuple(positive_int(x, f"weights_or_dims[{i}]") for i, x in enumerate(weights_or_dims))


# --- refimpl.latent ------------------------------------------------------------------------------


def heads_of_width(d: int, H: int) -> None:
    """num_heads H divides the model width d."""
    if d % H:
        fail("num_heads", f"a divisor of d_model = {d}", H)


def weight_tuple(t, name: str, n: int, shape=None) -> tuple:
    """A weights field: a tuple of n float64 arrays, each checked under the name weights.<field>[i]."""
    if not isinstance(t, tuple) or len(t) != n:
        fail(f"weights.{name}", f"a tuple of {n} arrays", _type(t), error=TypeError)
    return tuple(as_float_array(a, f"weights.{name}[{i}]", shape=shape) for i, a in enumerate(t))


# --- refimpl.pooled_memory -----------------------------------------------------------------------


def pooled_params(window, g1, g2, mid_range) -> tuple:
    """(w, g1, g2, R): window and group sizes positive, g2 a multiple of g1, the mid range R >= 0 a
    multiple of g2 (so the grids nest)."""
    w, g1, g2 = positive_int(window, "window"), positive_int(g1, "g1"), positive_int(g2, "g2")
    R = count(mid_range, "mid_range")
    if g2 % g1:
        fail("g2", f"a multiple of g1 = {g1}", g2)
    if R % g2:
        fail("mid_range", f"a multiple of g2 = {g2}", R)
    return w, g1, g2, R


def pooled_qkv(q, k, v) -> tuple:
    """q, k (L, D) and v (L, Dv) as float64, L, D, Dv >= 1."""
    k = as_float_array(k, "k", ndim=2, shape_doc="(L, D)", min_size={0: 1, 1: 1})
    q = as_float_array(q, "q", shape=k.shape, shape_doc="(L, D), as k")
    v = as_float_array(v, "v", shape=(k.shape[0], None), shape_doc="(L, Dv)", min_size={1: 1})
    return q, k, v

