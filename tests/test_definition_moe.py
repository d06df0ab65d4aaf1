"""Every fast MoE form equals the definition (``refimpl.moe.forward.moe_definition``) within a derived bound.

Fast forms: ``moe_forward`` with ``layout="sparse"`` (gather, expert on its bin, scatter-add) and
``layout="dense_tensors"`` (GShard dispatch/combine GEMMs over (T, E, C)), ``apply_experts`` on a
given routing (SwiGLU experts fused in place: also against 50 digits in the silu tail, and the
expert's own errors), ``scatter_combine`` on both of its paths (one row per (token, choice): a
per-choice gather through a (token, choice) -> row table; a (token, choice) twice: ``np.add.at``),
and the expert-parallel layer over simulated ranks (``refimpl.distributed.expert_parallel``; "local"
capacity: each rank's tokens are one batch, with or without rerouting the dropped choices, "global":
the gathered batch). The routing (indices, kept, positions) matches the definition's exactly.

The bound (first-order rounding analysis, u = 2^-53, gamma_n = n u / (1 - n u)). One computation of
an expert's output o = FFN_e(x_t), whichever rows it is computed with (a GEMM over other rows may
round differently), is off from the exact value by at most

    FFN     |du| <= gamma_(D+1) (|x| |W1| + |b1|),  |da| <= L |du| + 8 u |a|,
            |do| <= gamma_(H+1) (|a| |W2| + |b2|) + |da| |W2|
    SwiGLU  |dg|, |dv| <= gamma_D |x| |Wg|, gamma_D |x| |Wu|,  |ds| <= L |dg| + 8 u |s|,
            |d(s v)| <= |s| |dv| + |v| |ds| + u |s v|,  |do| <= gamma_H |s v| |Wd| + |d(s v)| |Wd|

with L >= max |act'| (1 for relu, 1.13 for gelu, 1.1 for silu) and 8 u for the activation's own
evaluation (erf, exp: a few ulp). The combine y_t = sum G_te o_te adds sum_e |G_te| |do_te| +
gamma_(E+1) sum_e |G_te o_te| (the gate product and a sum of at most E terms, in any order).
Absolute floors of 2^-1060 per operation cover subnormal intermediates. Both the fast form and the
definition are within that of the exact y, and the test asserts |fast - definition| <= 2 x (their sum):
the factor 2 absorbs the second-order terms; ``test_the_bound_holds_against_a_50_digit_layer``
checks the bound itself against mpmath. Worst observed |fast - definition| / (2 x bound) over
the thorough profile: 0.07 (printed with ``-s`` by ``test_worst_fraction_report``).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings

from hypothesis import strategies as st

from refimpl import moe as M
from refimpl.distributed import expert_parallel as EP
from refimpl.moe.dispatch import SortedAssignments
from refimpl.moe.forward import moe_definition

from . import _definitions as D
from ._definitions import FLOOR, U, gamma

LIPSCHITZ = {"relu": 1.0, "gelu": 1.13, "silu": 1.1}


def expert_bound(expert, x):
    """|o - exact| per entry, (N, D), for one computation of expert(x)."""
    ax = np.abs(x)
    if isinstance(expert, M.FFNExpert):
        D, H = expert.W1.shape
        b1 = 0.0 if expert.b1 is None else np.abs(expert.b1)
        b2 = 0.0 if expert.b2 is None else np.abs(expert.b2)
        u = x @ expert.W1 + (0.0 if expert.b1 is None else expert.b1)
        a = M.experts.activation(expert.act, u)
        du = gamma(D + 1) * (ax @ np.abs(expert.W1) + b1) + FLOOR
        da = LIPSCHITZ[expert.act] * du + 8 * U * np.abs(a) + FLOOR
        return gamma(H + 1) * (np.abs(a) @ np.abs(expert.W2) + b2) + da @ np.abs(expert.W2) + FLOOR
    D, H = expert.Wg.shape
    g, v = x @ expert.Wg, x @ expert.Wu
    s = M.experts.activation("silu", g)
    dg, dv = gamma(D) * (ax @ np.abs(expert.Wg)) + FLOOR, gamma(D) * (ax @ np.abs(expert.Wu)) + FLOOR
    ds = LIPSCHITZ["silu"] * dg + 8 * U * np.abs(s) + FLOOR
    dsv = np.abs(s) * dv + np.abs(v) * ds + U * np.abs(s * v) + FLOOR
    return gamma(H) * (np.abs(s * v) @ np.abs(expert.Wd)) + dsv @ np.abs(expert.Wd) + FLOOR


def layer_bound(x, routing, experts):
    """|y - exact| per entry, (T, D), for one computation of the layer on a given routing."""
    G = np.abs(M.gate_matrix(routing))
    E = routing.num_experts
    total = np.zeros_like(x)
    for e in range(E):
        o = np.abs(experts[e](x))
        total += G[:, [e]] * expert_bound(experts[e], x) + gamma(E + 1) * G[:, [e]] * o
    return total + FLOOR


def assert_within(name, got, want, bound):
    D.assert_within("MoE", name, got, want, bound)


def assert_same_routing(name, got, want):
    """Integers match exactly: indices, kept, positions (and the gates are one computation: equal)."""
    for field in ("indices", "kept", "position"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=f"{name}: {field}")


ROUTE_OPTIONS = [
    {}, dict(normalize="after_drop", capacity=2), dict(normalize="before_drop", capacity=1),
    dict(drop_order="token_major", capacity=2), dict(drop_order="per_expert_top_prob", capacity=1),
    dict(score="sigmoid", normalize="after_drop"), dict(route_scale=2.5, capacity=3),
]


@st.composite
def moe_cases(draw):
    T, E, D, H = draw(st.integers(1, 8)), draw(st.integers(1, 5)), draw(st.integers(1, 4)), draw(st.integers(1, 5))
    k = draw(st.integers(1, E))
    kind = draw(st.sampled_from(["ffn", "swiglu"]))
    act = draw(st.sampled_from(["relu", "gelu", "silu"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    ex = draw(st.sampled_from([0, 0, -150, -3, 3, 100]))  # inputs far from 1: the GEMMs' relative bounds
    x = rng.standard_normal((T, D)) * 10.0**ex
    W = rng.standard_normal((E, D)) * 10.0**-ex  # logits near 1 whatever x's magnitude
    experts = M.random_experts(E, D, H, kind=kind, act=act, bias=draw(st.booleans()), seed=seed % 2**31)
    options = draw(st.sampled_from(ROUTE_OPTIONS))
    note(f"T={T} E={E} D={D} H={H} k={k} kind={kind} act={act} ex={ex} options={options}")
    return x, W, experts, k, options


SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


@SETTINGS
@given(moe_cases())
def test_moe_forms_equal_the_definition(case):
    x, W, experts, k, options = case
    y_def, r_def = moe_definition(x, W, experts, k, **options)
    bound = 2 * layer_bound(x, r_def, experts)  # the fast form's and the definition's
    for layout in ("sparse", "dense_tensors"):
        y, r = M.moe_forward(x, W, experts, k, layout=layout, **options)
        assert_same_routing(layout, r, r_def)
        assert_within(f"moe_forward {layout}", y, y_def, bound)
    assert_within("dense_moe_forward", M.dense_moe_forward(x, r_def, experts), y_def, bound)


@SETTINGS
@given(moe_cases(), st.integers(1, 3), st.sampled_from(["local", "global", "local_reroute"]), st.data())
def test_expert_parallel_equals_the_definition(case, P, convention, data):
    """"local_reroute": each rank reroutes its dropped choices (``reroute_dropped``) before dispatch; the
    definition's last two lines (``dense_moe_forward``) on the rerouted routing of the rank's tokens."""
    x, W, experts, k, options = case
    E = W.shape[0]
    reroute = convention == "local_reroute"
    convention = "local" if reroute else convention
    if convention == "global" and options.get("drop_order", "k_major") not in EP.GLOBAL_ORDERS:
        options = {n: v for n, v in options.items() if n != "drop_order"}
    cuts = sorted(data.draw(st.lists(st.integers(0, x.shape[0]), min_size=P - 1, max_size=P - 1), "cuts"))
    xs = np.split(x, cuts)
    owner = np.array(data.draw(st.lists(st.integers(0, P - 1), min_size=E, max_size=E), "owner"))
    results = EP.expert_parallel_moe(xs, W, experts, k, owner, capacity_convention=convention, reroute=reroute,
                                     **options)
    if convention == "global":  # the gathered batch is one group
        y_def, r_def = moe_definition(x, W, experts, k, **options)
        bound = 2 * layer_bound(x, r_def, experts)
        for r, (res, lo, hi) in enumerate(zip(results, [0] + cuts, cuts + [x.shape[0]])):
            for field in ("indices", "kept", "position"):
                np.testing.assert_array_equal(getattr(res.routing, field), getattr(r_def, field)[lo:hi],
                                              err_msg=f"rank {r}: {field}")
            assert_within(f"expert-parallel global rank {r}", res.y, y_def[lo:hi], bound[lo:hi])
    else:  # each rank's tokens are one group
        for r, (res, xr) in enumerate(zip(results, xs)):
            if xr.shape[0] == 0:
                assert res.y.shape == (0, x.shape[1])
                continue
            y_def, r_def = moe_definition(xr, W, experts, k, **options)
            if reroute:
                r_def = M.reroute_dropped(r_def)
                y_def = M.dense_moe_forward(xr, r_def, experts)
            assert_same_routing(f"rank {r}", res.routing, r_def)
            assert_within(f"expert-parallel local rank {r}", res.y, y_def, 2 * layer_bound(xr, r_def, experts))


def _mp_expert(expert, row):
    """expert(row) at 50 digits (mpmath), as mpf values."""
    import mpmath

    from properties.mp_oracle import _mp_act_pair

    mp = lambda a: [mpmath.mpf(float(t)) for t in np.ravel(a)]  # noqa: E731
    xr = mp(row)
    col = lambda W, h: mpmath.fsum(a * mpmath.mpf(float(w)) for a, w in zip(xr, W[:, h]))  # noqa: E731
    if isinstance(expert, M.FFNExpert):
        b1 = mp(expert.b1) if expert.b1 is not None else [0] * expert.W1.shape[1]
        hid = [_mp_act_pair(expert.act, col(expert.W1, h) + b1[h])[0] for h in range(expert.W1.shape[1])]
        W2, b2 = expert.W2, (mp(expert.b2) if expert.b2 is not None else [0] * expert.W2.shape[1])
    else:
        hid = [_mp_act_pair("silu", col(expert.Wg, h))[0] * col(expert.Wu, h) for h in range(expert.Wg.shape[1])]
        W2, b2 = expert.Wd, [0] * expert.Wd.shape[1]
    return [mpmath.fsum(a * mpmath.mpf(float(w)) for a, w in zip(hid, W2[:, j])) + b2[j] for j in range(W2.shape[1])]


@SETTINGS
@given(moe_cases())
def test_the_bound_holds_against_a_50_digit_layer(case):
    """The derivation checked: the definition is within (2 x) its one-computation bound (``layer_bound``)
    of y_t = sum_e G_te FFN_e(x_t) computed at 50 digits (mpmath; the definition's routing and gates),
    plus the final rounding u |exact| / 2."""
    import mpmath

    x, W, experts, k, options = case
    y_def, r = moe_definition(x, W, experts, k, **options)
    G = M.gate_matrix(r)
    exact = np.zeros_like(x)
    with mpmath.workdps(50):
        for t in range(x.shape[0]):
            acc = [mpmath.mpf(0)] * x.shape[1]
            for e in np.flatnonzero(G[t]):
                o = _mp_expert(experts[e], x[t])
                acc = [a + mpmath.mpf(float(G[t, e])) * oj for a, oj in zip(acc, o)]
            exact[t] = [float(a) for a in acc]
    D.assert_within("MoE vs 50 digits", "definition", y_def, exact, layer_bound(x, r, experts) + U * np.abs(exact) / 2)


def scatter_definition(rows, sa, num_tokens):
    """y_t = sum_{i : token_i = t} gate_i rows_i, as one GEMM with the one-hot (T, N) matrix S."""
    S = (np.arange(num_tokens)[:, None] == sa.token[None, :]).astype(np.float64)
    return S @ (sa.gate[:, None] * rows)


@SETTINGS
@given(st.integers(0, 12), st.integers(1, 6), st.integers(1, 3), st.booleans(), st.integers(0, 2**32 - 1))
def test_scatter_combine_paths_equal_their_definition(N, T, D, collide, seed):
    """Both paths of ``scatter_combine``: unique (token, choice) pairs (per-choice gather) and a
    pair twice (``np.add.at``). Bound per computation gamma_(N+1) sum_i |gate_i rows_i| (a sum of at most
    N products, any order), twice for the two computations, times 2."""
    rng = np.random.default_rng(seed)
    token = rng.integers(0, T, N)
    choice = rng.integers(0, 3, N) if collide else np.arange(N) // max(T, 1)
    if not collide:  # unique pairs: token i % T, choice i // T
        token = np.arange(N) % T
    sa = SortedAssignments(token=token.astype(np.int64), choice=choice.astype(np.int64),
                           expert=np.zeros(N, np.int64), gate=rng.random(N), offsets=np.array([0, N]))
    rows = rng.standard_normal((N, D)) * 10.0 ** rng.integers(-100, 100, (N, 1))
    want = scatter_definition(rows, sa, T)
    bound = 2 * (gamma(N + 1) * scatter_definition(np.abs(rows), sa, T) + FLOOR)
    assert_within("scatter_combine", M.scatter_combine(rows, sa, T), want, bound)


# ----------------------------------------------------------------------------
# the bound rejects wrong forms (meta-tests)


def _wrong_layer(wrong, x, routing, experts):
    T, E = routing.num_tokens, routing.num_experts
    y = np.zeros_like(x)
    outs = [experts[e](x) for e in range(E)]
    for t in range(T):
        for j in range(routing.indices.shape[1]):
            e, g, kept = routing.indices[t, j], routing.gates[t, j], routing.kept[t, j]
            if wrong == "ungated":  # the expert outputs summed without their gates
                y[t] += outs[e][t] * kept
            elif wrong == "dropped_included":  # a dropped choice still contributes, with its probability
                y[t] += (g if kept else routing.probs[t, e]) * outs[e][t]
            elif wrong == "next_expert":  # the gate of choice j applied to expert e + 1
                y[t] += g * outs[(e + 1) % E][t] * kept
    return y


@pytest.mark.parametrize("wrong", ["ungated", "dropped_included", "next_expert"])
def test_the_bound_rejects_wrong_forms(wrong):
    rng = np.random.default_rng(5)
    T, E, D, k = 6, 4, 3, 2
    x, W = rng.standard_normal((T, D)), rng.standard_normal((E, D)) * 2
    experts = M.random_experts(E, D, 5, kind="swiglu", seed=1)
    y_def, r = moe_definition(x, W, experts, k, capacity=2, normalize="after_drop")
    assert (~r.kept).any(), "the case must drop a choice (the dropped_included form shows only then)"
    bound = 2 * layer_bound(x, r, experts)
    assert_within("the right form", M.apply_experts(x, r, experts), y_def, bound)
    with pytest.raises(AssertionError):
        assert_within(wrong, _wrong_layer(wrong, x, r, experts), y_def, bound)


def _one_swiglu(wg, wu, wd):
    return [M.SwiGLUExpert(Wg=np.array([[wg]]), Wu=np.array([[wu]]), Wd=np.array([[wd]]))]


def test_fused_swiglu_in_the_silu_tail():
    """The sparse layout fuses a SwiGLU expert (silu(g) = g / (1 + e^-g) in place); below g = -700
    e^-g overflows and silu(g) = g e^g (1e-306 at g = -711) must still come out. One expert of
    weights 1 (g = v = x exactly, gate 1): y = silu(x) x, against 50 digits within 8 u for the
    activation (the layer bound's count) and u for the product, doubled, plus 2 |x| subnormal steps
    (silu is within one where it is subnormal, refimpl.logistic). The layer bound is absolute
    (L |dg| = 1e-13 at g = -711) and cannot see the tail: this relative one rejects the same form
    without the tail (-0 there)."""
    import mpmath

    x = np.array([[-744.0], [-740.0], [-711.0], [-709.5], [-700.5], [-650.0], [-3.0], [30.0]])
    experts = _one_swiglu(1.0, 1.0, 1.0)
    r = M.route(np.zeros((x.shape[0], 1)), 1)
    with mpmath.workdps(50):
        exact = np.array([[float(mpmath.mpf(t) ** 2 / (1 + mpmath.exp(-mpmath.mpf(t))))] for t in x[:, 0]])
    assert (exact[:5] != 0).all(), "the tail cases must have nonzero exact outputs"
    bound = 2 * (9 * U * np.abs(exact) + 2 * np.abs(x) * 2.0**-1074)
    D.assert_within("MoE vs 50 digits", "fused SwiGLU, silu tail", M.apply_experts(x, r, experts), exact, bound)
    with np.errstate(over="ignore"):
        no_tail = x / (1.0 + np.exp(-x)) * x
    with pytest.raises(AssertionError):
        D.assert_within("MoE vs 50 digits", "fused SwiGLU without the tail", no_tail, exact, bound)


@pytest.mark.parametrize("x, weights, what", [
    (1e10, (1e300, 1.0, 1.0), "x W1 + b1"), (1e10, (1.0, 1e300, 1.0), "x W_up + b_up"),
    (1e200, (1.0, 1.0, 1.0), "the hidden activation"), (1e150, (1.0, 1.0, 1e10), "the output"),
    (-1e200, (1.0, 1.0, 1.0), None)])  # silu(-1e200) = -0: a finite output
def test_fused_swiglu_raises_what_the_expert_raises(x, weights, what):
    """An overflowing intermediate of the fused SwiGLU gets the expert's own error, naming it."""
    experts, xs = _one_swiglu(*weights), np.array([[x]])
    r = M.route(np.zeros((1, 1)), 1)
    if what is None:
        np.testing.assert_array_equal(M.apply_experts(xs, r, experts), experts[0](xs))
        return
    with pytest.raises(ValueError, match=re.escape(what)) as want:
        experts[0](xs)
    with pytest.raises(ValueError) as got:
        M.apply_experts(xs, r, experts)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("threads", [1, 2])
def test_threaded_experts_raise_the_lowest_failing_experts_error(monkeypatch, threads):
    """The blocks run largest first; when several experts fail, the error is still the one the experts
    in order raise (the lowest failing expert's): expert 0 (1 token) overflows in its output, expert 1
    (3 tokens, run first) already in x Wg. Within one expert cut into blocks, the expert's own error."""
    from refimpl import _parallel
    from refimpl.moe import forward

    monkeypatch.setattr(_parallel, "MIN_PARALLEL_WORK", 0)
    monkeypatch.setenv("REFIMPL_NUM_THREADS", str(threads))
    experts = _one_swiglu(1.0, 1.0, 1e10) + _one_swiglu(1e300, 1.0, 1.0)
    x = np.array([[1e150], [1e10], [1e10], [1e10]])
    r = M.route(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]), 1)
    with pytest.raises(ValueError, match="the output"):
        M.apply_experts(x, r, experts)
    with pytest.raises(ValueError, match=re.escape("x W1 + b1")):
        M.apply_experts(x[1:], M.route(np.array([[0.0, 1.0]] * 3), 1), experts)
    # one expert's bin cut into blocks of 2 rows: rows 0, 1 overflow in x Wu only, rows 2, 3 in x Wg;
    # the expert on all its rows checks x Wg first
    monkeypatch.setattr(forward, "_BLOCK_ROWS", 2)
    expert = [M.SwiGLUExpert(Wg=np.array([[1e300], [1.0]]), Wu=np.array([[1.0], [1e300]]), Wd=np.ones((1, 2)))]
    x = np.array([[0.0, 1e10], [0.0, 1e10], [1e10, 0.0], [1e10, 0.0]])
    with pytest.raises(ValueError, match=re.escape("x W1 + b1")):
        M.apply_experts(x, M.route(np.zeros((4, 1)), 1), expert)


@pytest.mark.parametrize("kind", ["swiglu", "ffn"])
def test_sparse_forward_is_the_same_bits_on_threads(monkeypatch, kind):
    """The sparse layout runs refimpl's own experts as blocks of rows on threads
    (``refimpl._parallel``), each into its own rows: the same bits for 1, 2 and 3 threads. A user's
    callable among the experts keeps every expert in the calling thread, in order."""
    import threading

    from refimpl import _parallel
    from refimpl.moe import forward

    monkeypatch.setattr(_parallel, "MIN_PARALLEL_WORK", 0)
    monkeypatch.setattr(forward, "_BLOCK_ROWS", 5)  # bins of about 16 rows cut into blocks
    rng = np.random.default_rng(3)
    x, W = rng.standard_normal((40, 6)), rng.standard_normal((5, 6))
    experts = M.random_experts(5, 6, 7, kind=kind, act="gelu", seed=2)
    fused_threads = []

    def recorded(*args):
        fused_threads.append(threading.current_thread().name)
        return _swiglu_rows_into(*args)

    _swiglu_rows_into = forward._swiglu_rows_into
    monkeypatch.setattr(forward, "_swiglu_rows_into", recorded)
    ys = []
    for n in (1, 2, 3):
        monkeypatch.setenv("REFIMPL_NUM_THREADS", str(n))
        ys.append(M.moe_forward(x, W, experts, 2)[0])
    for y in ys[1:]:
        np.testing.assert_array_equal(y, ys[0])
    if kind == "swiglu":
        assert any(name.startswith("refimpl") for name in fused_threads), "the blocks never ran on threads"
    callers = []

    def user(rows):
        callers.append(threading.current_thread().name)
        return experts[0](rows)

    fused_threads.clear()
    M.moe_forward(x, W, [user] + experts[1:], 2)
    assert callers and set(callers + fused_threads) <= {threading.current_thread().name}, callers + fused_threads


def test_moe_definition_worked_example():
    """One token, two experts y = 2x and y = -x (linear FFNs, relu on a positive input), top-1 of logits
    (1, 0): gate softmax(1, 0)_0 = e / (e + 1), y = 2 x e / (e + 1)."""
    x = np.array([[1.0]])
    experts = [M.FFNExpert(W1=np.array([[1.0]]), W2=np.array([[2.0]])),
               M.FFNExpert(W1=np.array([[1.0]]), W2=np.array([[-1.0]]))]
    y, r = moe_definition(x, np.array([[1.0], [0.0]]), experts, 1)
    assert r.indices.tolist() == [[0]]
    assert np.isclose(y[0, 0], 2 * np.e / (np.e + 1), rtol=1e-15)


def test_worst_fraction_report():
    """Prints the worst fraction of the bound the Hypothesis tests above observed in this process."""
    D.report("MoE")
    D.report("MoE vs 50 digits")
