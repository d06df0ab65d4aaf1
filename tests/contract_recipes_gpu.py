"""Fuzz recipes for the gpu facade's public callables (``gpu.__all__``), on the OpenCL backend
(PoCL on this CPU; the fuzz skips these where pyopencl or a platform is missing, naming it).

Each facade function takes the arguments of its refimpl counterpart plus ``backend`` and launch
options, so a recipe draws the counterpart's valid call (its recipe in ``R``), keeps the keywords the
facade accepts and adds launch options; the engine breaks one argument at a time. The facade may
also refuse a valid option its kernel lacks with ``gpu.UnsupportedOption`` (documented), never
silently. ``moe_permute`` has an exact oracle (its integers and rows are a bit-exact permutation).
"""

from __future__ import annotations

import inspect

import numpy as np
from hypothesis import strategies as st

from .contract_recipes import R, Recipe, _gpu_call


def _accepted(name: str) -> set:
    import gpu

    return set(inspect.signature(getattr(gpu, name)).parameters) - {"backend"}


UNSUPPORTED = ("mask", "bias", "dropout_mask", "dropout_p")  # valid attention options the kernels refuse by name
F32_RANGE = r"^\w+: expected values within float32 range"  # the facade's documented refusal (it computes in float32)


def _from(counterpart: str, name: str, kinds: dict, extra=None, **kw):
    """gpu.<name>'s recipe: the valid calls of ``counterpart``'s recipe, restricted to the facade's
    keywords the kernels implement (an option in UNSUPPORTED is only ever the broken argument), plus
    ``extra(draw, d)`` launch options. The counterpart is looked up when a call is drawn: the family
    modules register into R in any import order (tests/contract_recipes.py imports them at its end)."""
    accepted = _accepted(name) - set(UNSUPPORTED)

    def build(draw):
        d = {n: v for n, v in R[counterpart].build(draw).items() if n in accepted}
        if extra is not None:
            d.update(extra(draw, d))
        return d

    R[f"gpu.{name}"] = Recipe(build, kinds, call=_gpu_call(name), **kw)


ATTN = dict(q="array", k="array", v="array", causal="bool", align="name", window="window", scale="float",
            softcap="float", mask="bool_array", bias="array", dropout_p="prob", block_q="count", block_k="count")


def _blocks(draw, d):
    out = {}
    if draw(st.booleans()):
        out["block_q"], out["block_k"] = draw(st.sampled_from([16, 32])), draw(st.sampled_from([16, 32]))
    return out


def _threads(draw, d):
    return {"threads": draw(st.sampled_from([32, 64, 128]))} if draw(st.booleans()) else {}


_from("refimpl.flash_attention_backward", "flash_attention_backward", dict(ATTN, dout="array", out="array", lse="lse"),
      _blocks, finite="no_nan_posinf")
_from("refimpl.split_kv_attention", "split_kv_attention", dict(ATTN, num_splits="count"), _blocks,
      finite="no_nan_posinf")
_from("refimpl.apply_rope", "apply_rope", dict(x="array", positions="int_array", layout="name", rotary_dim="count",
                                              base="float", scaling="object", threads="count"), _threads)
_from("refimpl.norms.rms_norm", "rms_norm", dict(x="array", weight="array", eps="nonneg_float", eps_placement="name",
                                                 weight_offset="real", preset="name", threads="count"), _threads,
      refusal=F32_RANGE)  # x at any magnitude
_from("refimpl.norms.layer_norm", "layer_norm", dict(x="array", weight="array", bias="array", eps="nonneg_float",
                                                     threads="count"), _threads, refusal=F32_RANGE)
_from("refimpl.moe.apply_experts", "moe_experts", dict(x="array", routing="routing", experts="experts", layout="name",
                                                       threads="count"), _threads)


def _paged(draw):
    """A valid paged decode: B sequences of seq_lens[b] tokens in a pool of NB blocks of bs slots,
    each sequence's blocks distinct (a permutation of the pool), the n newest tokens queried."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    B, Hkv, G, D = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 4))
    bs, MB = draw(st.sampled_from([1, 2, 4])), draw(st.integers(1, 3))
    NB = B * MB
    seq_lens = rng.integers(1, MB * bs + 1, size=B)
    n = draw(st.integers(1, int(seq_lens.min())))
    table = rng.permutation(NB).reshape(B, MB)
    d = dict(q=rng.uniform(-3, 3, (B, Hkv * G, n, D)), k_pool=rng.uniform(-3, 3, (NB, Hkv, bs, D)),
             v_pool=rng.uniform(-3, 3, (NB, Hkv, bs, D)), block_table=table, seq_lens=seq_lens)
    if draw(st.booleans()):
        d["window"] = (draw(st.none() | st.integers(0, 4)), 0)
    if draw(st.booleans()):
        d["softcap"] = draw(st.floats(0.5, 30.0))
    return d


R["gpu.paged_attention"] = Recipe(
    _paged, dict(q="array", k_pool="array", v_pool="array", block_table="int_array", seq_lens="int_array",
                 window="window", scale="float", softcap="float"),
    call=_gpu_call("paged_attention"), finite="no_nan_posinf")


def _gla_build(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    B, H, L, K, V = 1, draw(st.integers(1, 2)), draw(st.integers(1, 6)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    d = dict(q=rng.uniform(-1, 1, (B, H, L, K)), k=rng.uniform(-1, 1, (B, H, L, K)), v=rng.uniform(-1, 1, (B, H, L, V)))
    if draw(st.booleans()):
        d["g"] = -rng.uniform(0, 2, (B, H, L) if draw(st.booleans()) else (B, H, L, K))
    if draw(st.booleans()):
        d["initial_state"] = rng.uniform(-1, 1, (B, H, K, V))
    return d


def _gla_call(fn, kw):
    import warnings

    import gpu

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the alias warns by design (tests/gpu check it)
        return gpu.gated_linear_attention(backend="opencl", **kw)


R["gpu.gated_linear_attention"] = Recipe(
    _gla_build, dict(q="array", k="array", v="array", g="array", initial_state="array", scale="float",
                     chunk_size="count"),
    call=_gla_call)


def same_rows_as_routing(kw, p):
    """gpu.moe_permute is a bit-exact permutation of x's rows by the routing's kept choices: counts
    per expert, row_of -1 exactly where dropped, token[row_of[t, j]] = t, the row inside the bin of
    expert indices[t, j], x_perm's row = float32(x[t]), and every other row (an empty slot) zero."""
    r = kw["routing"]
    x = np.asarray(kw["x"], dtype=np.float64)
    kept, idx = np.asarray(r.kept), np.asarray(r.indices)
    E = np.asarray(r.counts).shape[0]
    assert np.array_equal(p.counts, np.bincount(idx[kept], minlength=E)), "moe_permute: counts"
    assert np.array_equal(p.row_of < 0, ~kept), "moe_permute: row_of -1 exactly where a choice is dropped"
    for t, j in zip(*np.nonzero(kept)):
        row = int(p.row_of[t, j])
        e = int(idx[t, j])
        assert p.offsets[e] <= row < p.offsets[e + 1], "moe_permute: a row outside its expert's bin"
        assert p.token[row] == t, "moe_permute: token of a kept choice's row"
        assert np.array_equal(p.x_perm[row], x[t].astype(np.float32)), "moe_permute: x_perm row not x's row"
    empty = p.token < 0
    assert not np.any(p.x_perm[empty]), "moe_permute: an empty slot is not zero"


_from("refimpl.moe.apply_experts", "moe_permute", dict(x="array", routing="routing", layout="name", threads="count"),
      _threads, oracle=same_rows_as_routing)
