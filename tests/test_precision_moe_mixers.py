"""The precision rule separates correct float32 / bfloat16 MoE and mixer implementations from wrong ones.

For each kind: a correct implementation in float32 and in bfloat16 (``properties.lowp_moe``,
``properties.lowp_mixers``: float32 arithmetic by a form other than the naive baseline, outputs
stored in the precision) passes, and a wrong one run in the same precision is rejected. The MoE
near-tie rule is shown on hand-built cases: a float32 router that picks the other expert of a
near-tie passes, one that picks a clearly worse expert fails, naming both scores.
"""

import dataclasses
import warnings

import numpy as np
import pytest

import refimpl.moe as M
from properties import lowp_mixers as LM
from properties import lowp_moe as LR
from properties import mixers_linear, mixers_scan
from properties import moe as MP
from properties.core import run_property
from properties.moe_cases import RouteCase

from ._meta import assert_rejects

MIXER_PROPS = {p.name: p for p in mixers_linear.PROPERTIES + mixers_scan.PROPERTIES}
MAIN = {"linear_attention": ("la_matches_recurrent", "la_extreme_gates"),
        "delta_rule": ("delta_matches_recurrent", "delta_extreme_gates"),
        "wkv": ("wkv_matches_definition", "wkv_extreme_exponents"),
        "ssm_scan": ("scan_matches_sequential", "scan_extreme_decays")}
MOE_PROPS = {p.name: p for p in MP.PROPERTIES}


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("kind", LM.KINDS)
def test_low_precision_mixer_bound_separates_correct_from_wrong(kind, precision):
    for name in MAIN[kind]:
        run_property(MIXER_PROPS[name], LM.correct(kind, precision), max_examples=20)
    assert_rejects(MIXER_PROPS[MAIN[kind][0]], LM.wrong(kind, precision), max_examples=200)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_low_precision_router_bound_separates_correct_from_wrong(precision):
    good = LR.router(precision)
    for name in ("moe_route_matches_reference", "moe_topk_softmax_commute", "moe_after_drop_renormalises_kept"):
        run_property(MOE_PROPS[name], good, max_examples=20)
    for bug in ("topk_unsorted", "no_renormalize"):
        assert_rejects(MOE_PROPS["moe_route_matches_reference"], LR.router(precision, bug), max_examples=200)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("name, wrong", [("moe_gradients_match_reference", "seed_diagonal_jacobian"),
                                         ("moe_forward_matches_reference", "forward_raw_probs"),
                                         ("moe_vjp_fd", "vjp_x_ignores_router"),
                                         ("moe_balance_loss_matches_reference", "balance_ignores_groups"),
                                         ("moe_noisy_gating_matches_reference", "load_loss_doubled_consistent")])
def test_low_precision_moe_functions_pass_and_a_wrong_one_fails(name, wrong, precision):
    """Every MoE function in float32/bf16 (refimpl's from rounded inputs, stored in the precision)
    passes; the bundled wrong function run the same way is rejected."""
    run_property(MOE_PROPS[name], LR.moe(precision), max_examples=10)
    assert_rejects(MOE_PROPS[name], LR.moe(precision, MP.WRONG[wrong]), max_examples=100)


def _sigmoid_case(z, k=1):
    return RouteCase(np.array(z, dtype=float), k, {"score": "sigmoid", "normalize": "none", "capacity": None})


def _forced(indices_of):
    """A float32 router (``properties.lowp_moe``) whose selection is replaced by ``indices_of(z)``."""
    base = LR.router("float32")

    def route(z, k, **o):
        r = base.route(z, k, **o)
        idx = np.asarray(indices_of(np.asarray(z)), dtype=np.int64)
        probs = np.asarray(r.probs)
        return dataclasses.replace(r, indices=idx, gates=np.take_along_axis(probs, idx, axis=-1),
                                   kept=np.ones(idx.shape, bool), position=np.zeros(idx.shape, np.int64),
                                   counts=np.bincount(idx.ravel(), minlength=z.shape[1]).astype(np.int64))
    return dataclasses.replace(base, name="forced", route=route)


def test_near_tie_rule_accepts_the_other_expert_and_rejects_a_clearly_worse_one():
    """sigmoid(18) and sigmoid(19) are both 1.0 in float32 (spec: 1 - 1.5e-8 and 1 - 5.6e-9): a float32
    router picks expert 0 (lower id among its equal scores) where the spec picks 1: a near-tie, passes.
    Picking expert 2 (score 0.27) is clearly worse: fails, naming both scores and the resolution."""
    case = _sigmoid_case([[18.0, 19.0, -1.0]])
    assert M.route(case.logits, 1, **case.options).indices.tolist() == [[1]]
    good = LR.router("float32")
    assert good.route(case.logits, 1, **case.options).indices.tolist() == [[0]]
    MP.check_route_matches_reference(good, case)
    with pytest.raises(AssertionError, match="not a near-tie"):
        MP.check_route_matches_reference(_forced(lambda z: [[2]]), case)
    # the same router declared float64 fails: at float64 the two scores are resolved
    with pytest.raises(AssertionError):
        MP.check_route_matches_reference(dataclasses.replace(good, precision="float64"), case)


def test_exact_ties_still_go_to_the_lower_id_in_low_precision():
    case = RouteCase(np.zeros((1, 3)), 1, {"normalize": "none", "capacity": None})
    MP.check_route_matches_reference(LR.router("bfloat16"), case)
    with pytest.raises(AssertionError, match="exactly equal"):
        MP.check_route_matches_reference(_forced(lambda z: [[2]]), case)


def test_underflowed_ties_of_different_logits_may_follow_the_logit_order():
    """Logits (0, -2000, -1000), k = 2: the probabilities of experts 1 and 2 underflow to 0 in every
    precision. The exact order is expert 2 first (the logit order, which SGLang 0.5.23's
    moe_fused_gate keeps); the float64 spec ties them and takes expert 1 (lower id). Both pass. With
    equal logits the tie is exact: the higher id still fails."""
    opts = {"normalize": "none", "capacity": None}
    case = RouteCase(np.array([[0.0, -2000.0, -1000.0]]), 2, opts)
    assert M.route(case.logits, 2, **opts).indices.tolist() == [[0, 1]]
    for picks in ([[0, 2]], [[0, 1]]):
        MP.check_route_matches_reference(_forced(lambda z, p=picks: p), case)
    exact = RouteCase(np.array([[0.0, -2000.0, -2000.0]]), 2, opts)
    with pytest.raises(AssertionError, match="exactly equal"):
        MP.check_route_matches_reference(_forced(lambda z: [[0, 2]]), exact)


def test_float32_router_declared_float64_fails_with_a_hint():
    """The issue's report: a float32 router without a declaration failed with "probs differ by
    1.89e-08 > 1.24e-14" and no hint; the message now says what to declare."""
    rng = np.random.default_rng(0)
    case = RouteCase(rng.standard_normal((6, 5)).astype(np.float32).astype(float), 2,
                     {"normalize": "after_drop", "capacity": None})
    with pytest.raises(AssertionError, match='declares precision="float32"'):
        MP.check_route_matches_reference(dataclasses.replace(LR.router("float32"), precision="float64"), case)
    MP.check_route_matches_reference(LR.router("float32"), case)


def test_unit_roundoff_is_deprecated_and_mapped_to_precision():
    with pytest.warns(DeprecationWarning, match="precision='float32'"):
        a = MP.MoEAdapter(name="old", route=M.route, capabilities=frozenset({"route"}), unit_roundoff=2.0**-24)
    assert a.precision == "float32" and a.unit_roundoff is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert MP.MoEAdapter(name="new", precision="bfloat16").precision == "bfloat16"
    with pytest.raises(ValueError, match=r"^unit_roundoff: expected the unit roundoff of a precision .*, got 1e-05"):
        MP.MoEAdapter(name="bad", unit_roundoff=1e-5)
