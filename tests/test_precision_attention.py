"""The precision rule on the attention family: a correct float32 / bf16 / fp16 implementation passes
and the same implementation with one mistake is rejected (softmax and merge, attention forward and
backward, the flash-kind backward, decoding, MLA, the context-parallel ring).

The low-precision adapters live with their kinds (``properties.tiled``, ``properties.softmax``,
``properties.decode``, ``properties.mla``, ``properties.distributed``); the MoE and mixer kinds are in
tests/test_precision_moe_mixers.py, the layers in tests/test_precision_layers.py.
"""

import pytest

from properties import attention as A
from properties import decode as D
from properties import distributed as DP
from properties import flash as F
from properties import mla as MLA
from properties import softmax as S
from properties import tiled
from properties.core import run_property, supports

from ._meta import assert_rejects


def _prop(props, name):
    return next(p for p in props if p.name == name)


# --- softmax and merge ------------------------------------------------------------------------

LOWP_SOFTMAX_BUGS = (("sharpened", "softmax_matches"), ("online_no_rescale", "online_equals_two_pass"),
                     ("average", "merge_partition"))


@pytest.mark.parametrize("precision", ("float32", "bfloat16", "float16"))
def test_low_precision_softmax_and_merge_pass_and_their_bugs_are_rejected(precision):
    """The precision rule separates a correct fused float32-inside softmax / merge (results in
    the precision) from the same with one mistake."""
    def adapter(kind, bug=None):
        return S.lowp_merge_adapter(precision, bug) if kind == "merge" else S.lowp_softmax_adapter(precision, bug)

    for prop in S.PROPERTIES:
        run_property(prop, adapter(prop.kind), max_examples=30)
    for bug, name in LOWP_SOFTMAX_BUGS:
        prop = _prop(S.PROPERTIES, name)
        assert_rejects(prop, adapter(prop.kind, bug))


# --- attention --------------------------------------------------------------------------------

BACKWARD = [p for p in A.PROPERTIES if p.name in ("backward_matches_reference", "backward_finite_differences")]


@pytest.mark.parametrize("precision", ("float32", "bfloat16"))
@pytest.mark.parametrize("prop", BACKWARD, ids=lambda p: p.name)
def test_low_precision_backward_passes_and_its_bugs_are_rejected(precision, prop):
    """The precision rule separates a correct float32 / bf16 FA2 backward (properties.tiled:
    P and dS rounded to the precision before their GEMMs, float32 accumulation) from the same
    backward with the rowsum(dO * O) term dropped, tanh' forgotten or taken as 1 - t, or dk from
    one head."""
    run_property(prop, tiled.lowp_backward_adapter(precision), max_examples=10)
    for bug in tiled.BACKWARD_BUGS:
        assert_rejects(prop, tiled.lowp_backward_adapter(precision, bug))


@pytest.mark.parametrize("precision", ("float32", "bfloat16"))
@pytest.mark.parametrize("prop", BACKWARD, ids=lambda p: p.name)
def test_torch_autograd_backward_passes(precision, prop):
    """A correct kernel computing the softcap derivative the library way (torch autograd:
    1 - y * y from the saved float32 / bf16 tanh y) passes the backward bound."""
    torch_eager = pytest.importorskip("properties.torch_eager", reason="torch not installed")
    pytest.importorskip("torch", reason="torch not installed")
    run_property(prop, torch_eager.adapter(precision), max_examples=25)


def test_saturated_softcap_derivative_is_within_the_bound():
    """Where tanh saturates, 1 - t^2 from a float32 t keeps no correct digit: torch's float32
    autograd erred 112x past the bound before the bound had the term for it (dq 1.23e-11 vs
    1.10e-13 here; properties.attention_lowp, "Softcap derivative")."""
    pytest.importorskip("torch", reason="torch not installed")
    import numpy as np

    from properties import torch_eager
    from properties.attention_cases import AttnCase

    def col(*x):
        return np.asarray(x, np.float32).astype(np.float64).reshape(1, 1, -1, 1)

    case = AttnCase(q=col(1.0), k=col(4.03848123550415, 4.293227195739746, 2.9832210540771484, 4.055756092071533),
                    v=col(0.8539033532142639, -0.3136857748031616, 0.635085940361023, 1.2538721561431885),
                    kwargs={"softcap": 0.5}, seed=0)  # raw / c = 6..8.6: t' = 1e-7..3e-5
    impl = torch_eager.adapter("float32")
    A.check_backward_matches_reference(impl, case)
    A.check_backward_finite_differences(impl, case)


@pytest.mark.parametrize("precision", ("float32", "bfloat16", "float16"))
def test_low_precision_forward_passes_every_property(precision):
    """The correct low-precision tiled forward passes the forward properties at ordinary sizes
    (the tile-scale runs and the cross-tile bugs are tests/test_tile_scale.py)."""
    impl = tiled.lowp_backward_adapter(precision)
    for prop in A.PROPERTIES:
        if prop.name in ("matches_reference", "convex_combination", "key_permutation_invariance",
                         "gqa_equals_repeated_mha", "causal_ignores_future", "extreme_scores"):
            run_property(prop, impl, max_examples=15)


# --- the flash kind ---------------------------------------------------------------------------


def _lowp_flash(precision, bug=None):
    """properties.tiled's forward and FA2 backward in ``precision`` as a flash adapter (one tile
    for the backward: its rounding, not its tiling, is what the precision rule judges)."""
    def forward(q, k, v, *, block_q, block_k, variant, **kw):
        return tiled.tiled_attention(q, k, v, precision=precision, **kw)

    def backward(q, k, v, out, lse, dout, *, block_q, block_k, **kw):
        return tiled.lowp_attention_backward(q, k, v, dout, precision=precision, bug=bug, **kw)

    caps = frozenset(tiled.TILED_CAPS | {"fa2", "backward"})
    return F.FlashAdapter(f"lowp_flash[{precision}]" + (f"[bug={bug}]" if bug else ""), forward, caps,
                          backward=backward, precision=precision)


@pytest.mark.parametrize("precision", ("float32", "bfloat16"))
def test_low_precision_flash_backward(precision):
    """Flash-kind backward properties honour the adapter's precision: a correct one passes, one
    without the rowsum(dO * O) term is rejected."""
    for prop in F.PROPERTIES:
        if prop.name in ("flash_backward_matches_reference", "flash_backward_finite_differences"):
            run_property(prop, _lowp_flash(precision), max_examples=8)
            assert_rejects(prop, _lowp_flash(precision, "no_D"))


# --- decoding, MLA, the ring ------------------------------------------------------------------


@pytest.mark.parametrize("precision", ("float32", "bfloat16", "float16"))
def test_low_precision_decoder_passes_and_its_bug_is_rejected(precision):
    """The precision rule separates a correct low-precision decoder (RoPE'd q, k and each step's
    attention in the precision) from the same decoder rotating each chunk from position 0."""
    for prop in D.PROPERTIES:
        if supports(D.lowp_decoder(precision), prop):
            run_property(prop, D.lowp_decoder(precision), max_examples=25)
    assert_rejects(D.PROPERTIES[0], D.lowp_decoder(precision, "rope_positions_from_zero"))


@pytest.mark.parametrize("precision", ("float32", "bfloat16", "float16"))
def test_low_precision_mla_passes_and_its_bugs_are_rejected(precision):
    """The precision rule separates DeepSeek's einsums run in the precision (every product
    rounded) from the same with each wrong variant."""
    for prop in MLA.PROPERTIES:
        run_property(prop, MLA.lowp_mla_adapter(precision), max_examples=15)
        for bug in prop.rejects:
            assert_rejects(prop, MLA.lowp_mla_adapter(precision, bug))


@pytest.mark.parametrize("precision", ("float32", "bfloat16", "float16"))
def test_low_precision_ring_passes_and_its_bug_is_rejected(precision):
    """The precision rule separates a correct low-precision ring (blocks by a bf16/fp16/fp32
    flash kernel, float32 merge) from the same ring merging its last partial twice."""
    for name in ("cp_ring_forward_matches_attention", "cp_ring_extreme_scores"):
        run_property(_prop(DP.PROPERTIES, name), DP.lowp_ring_adapter(precision), max_examples=20)
    assert_rejects(_prop(DP.PROPERTIES, "cp_ring_forward_matches_attention"), DP.lowp_ring_adapter(precision, "merge_twice"))


# --- the rounding floor's cheap q-scaled term ------------------------------------------------------


def _floor_problems():
    """Hard cases for the floor: near-uniform and near-one-hot weights, v = k (the covariance bound
    is tight there), masked and fully masked rows, GQA, one key, one query, extreme magnitudes."""
    import numpy as np

    rng = np.random.default_rng(5)
    for B, Hq, Hkv, Lq, Lk, Dk, Dv, mag in ((1, 2, 1, 65, 129, 8, 8, 0.3), (1, 2, 2, 33, 17, 16, 4, 3.0),
                                           (2, 1, 1, 1, 1, 4, 4, 1.0), (1, 1, 1, 7, 40, 8, 8, 30.0),
                                           (1, 4, 2, 12, 12, 8, 8, 1e3)):
        q = rng.standard_normal((B, Hq, Lq, Dk)) * mag
        k = rng.standard_normal((B, Hkv, Lk, Dk)) * mag
        vis = rng.random((B, 1, Lq, Lk)) < 0.7
        vis[..., 0, :] = False  # a fully masked row
        vis = np.broadcast_to(vis, (B, Hq, Lq, Lk))
        yield q, k, rng.standard_normal((B, Hkv, Lk, Dv)), vis
        if Dk == Dv:
            yield q, k, k.copy(), np.ones((B, Hq, Lq, Lk), bool)  # v = k: v and k co-vary


def test_cheap_q_operand_term_bounds_the_exact_one():
    """The Cauchy-Schwarz bound of the q-scaled term (properties.attention_lowp module docstring)
    is >= the exact (Lq, Lk) @ (Lk, Dv D) form on every entry (up to float64 cancellation), and the
    floor built on it is never below the exact floor and at most FLOOR_SLACK (floor + margin) above."""
    import numpy as np

    from properties import attention_lowp as AL

    for q, k, v, vis in _floor_problems():
        scale = q.shape[-1] ** -0.5
        K, V = AL._rep(k, v, q.shape[1])
        P, out, _, raw, _ = AL._spec_weights(q, K, V, vis, scale, None, None)
        exact, sq_k = AL._value_operand_sq(q, K, V, P, out, scale)
        cheap, sq_k2 = AL._value_operand_sq(q, K, V, P, out, scale, exact=False)
        assert np.array_equal(sq_k, sq_k2)
        sq = (scale * q) ** 2  # the expansions' float64 cancellation: u64 x their uncancelled terms
        noise = 1e-13 * (P @ V**2) * np.sum(sq * (P @ K**2), axis=-1, keepdims=True) + 1e-300
        assert np.all(cheap >= exact - noise)
        for precision in ("float32", "bfloat16"):
            for margin in (0.0, 1.0):
                fl, fl_lse = AL.rounding_floor(q, k, v, vis, scale, precision, margin=margin)
                AL._value_operand_sq, keep = (lambda *a, exact=True: keep(*a)), AL._value_operand_sq
                try:  # the floor with the exact term everywhere
                    fl_exact, fl_lse_exact = AL.rounding_floor(q, k, v, vis, scale, precision, margin=margin)
                finally:
                    AL._value_operand_sq = keep
                assert fl_exact * (1 - 1e-12) <= fl <= fl_exact + AL.FLOOR_SLACK * (fl_exact + margin)
                assert fl_lse == fl_lse_exact
