"""refimpl.logistic against the 50-digit mpmath oracle over the whole float64 range, tails included.

Arguments: t = +-10^U(-323, 308) (the whole finite range), the transition band |t| in [0, 60], the
subnormal tails |t| in [700, 750] (where SciPy's expit is 0 below -709.78), beyond them
(|t| in [750, 1500], +-finfo.max), and values at the tail's edge; mul_sigmoid also draws x over the whole
range. Each result within LOGISTIC_MAX_ULP ulps of the exact value (the ulp of a subnormal is
2^-1074). The meta-tests show the check fails the flushing forms the module replaced: SciPy's
expit, u * expit(u), log(1 + e^t), and x sigmoid(t) through a subnormal sigmoid.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from refimpl import logistic as L

mpmath = pytest.importorskip("mpmath")
from properties.mp_oracle import mp_logistic  # noqa: E402

FMAX = float(np.finfo(np.float64).max)


def _ulp(v: float) -> float:
    if abs(v) >= FMAX:
        return 2.0**971  # the ulp of finfo.max
    return float(np.spacing(np.float64(abs(v)))) if abs(v) >= 2.0**-1022 else 2.0**-1074


def worst_ulps(name, got, t, x=None) -> tuple:
    """(worst error in ulps of the exact value, its t): 0 where both are 0 or both the same infinity."""
    exact = mp_logistic(name, t, x)
    worst, at = 0.0, None
    for g, e, ti in zip(np.ravel(got), exact, np.ravel(t)):
        if mpmath.isinf(e) or np.isnan(g):
            err = 0.0 if (mpmath.isinf(e) and g == float(e)) else np.inf
        else:
            err = float(abs(mpmath.mpf(float(g)) - e)) / _ulp(float(e))
        if err > worst:
            worst, at = err, float(ti)
    return worst, at


def _arguments(seed=21, n=600) -> np.ndarray:
    rng = np.random.default_rng(seed)
    edge = np.array([L.TAIL, -708.3964, -709.7827, -744.44, -745.13, 36.7, 37.0, -37.0, 0.0, -0.0, 5e-324, -5e-324,
                     FMAX, -FMAX])
    mag = np.concatenate([10.0 ** rng.uniform(-323, 308, n), rng.uniform(0, 60, n), rng.uniform(700, 750, n),
                          rng.uniform(750, 1500, n // 3)])
    with np.errstate(over="ignore"):
        t = np.concatenate([mag, -mag, edge, np.nextafter(edge, np.inf), np.nextafter(edge, -np.inf)])
    return t[np.isfinite(t)]


T = _arguments()


@pytest.mark.parametrize("name", ["sigmoid", "silu", "softplus", "log_sigmoid"])
def test_within_the_stated_ulps_over_the_float64_range(name):
    with np.errstate(over="ignore"):  # silu(+-finfo.max) is +-finfo.max (sigmoid 1 or e^-FMAX = 0 exactly)
        got = getattr(L, name)(T)
    worst, at = worst_ulps(name, got, T)
    print(f"{name}: worst {worst:.3f} ulp at t = {at!r} over {T.size} arguments (stated {L.LOGISTIC_MAX_ULP})")
    assert worst <= L.LOGISTIC_MAX_ULP, (name, worst, at)


def test_mul_sigmoid_over_the_float64_range():
    rng = np.random.default_rng(7)
    t = np.concatenate([T, -rng.uniform(700, 1416, 600)])
    x = np.where(rng.random(t.size) < 0.5, -1, 1) * 10.0 ** rng.uniform(-300, 308, t.size)
    worst, at = worst_ulps("mul_sigmoid", L.mul_sigmoid(x, t), t, x)
    print(f"mul_sigmoid: worst {worst:.3f} ulp at t = {at!r}")
    assert worst <= L.LOGISTIC_MAX_ULP, (worst, at)
    # broadcasting: x (2, 1) against t (3,), the tail entries included
    xb, tb = np.array([[3.0], [-1e300]]), np.array([-711.0, 0.5, -1400.0])
    got = L.mul_sigmoid(xb, tb)
    assert got.shape == (2, 3)
    assert worst_ulps("mul_sigmoid", got, np.broadcast_to(tb, (2, 3)), np.broadcast_to(xb, (2, 3)))[0] <= L.LOGISTIC_MAX_ULP


def test_limits_dtypes_and_no_aliasing():
    t = np.array([-np.inf, np.inf, np.nan, -800.0])
    s = L.sigmoid(t)
    assert s[0] == 0 and s[1] == 1 and np.isnan(s[2]) and s[3] == 0
    assert L.softplus(np.array([np.inf]))[0] == np.inf and L.log_sigmoid(np.array([-np.inf]))[0] == -np.inf
    assert L.sigmoid([1, 2]).dtype == np.float64 and L.sigmoid(np.float32([1.0])).dtype == np.float32
    # float32 keeps its own tail: sigmoid(-100) = e^-100 = 3.7e-44 is a float32 subnormal (expitf gives 0)
    assert L.sigmoid(np.float32([-100.0]))[0] == np.float32(np.exp(-100.0))
    assert L.silu(np.float32([-100.0]))[0] == np.float32(-100.0 * np.exp(-100.0))
    x = np.array([-711.0, 1.0])
    for f in (L.sigmoid, L.silu, L.softplus, L.log_sigmoid):
        out = f(x)
        assert not np.shares_memory(out, x) and (x == [-711.0, 1.0]).all()
    assert np.ndim(L.sigmoid(-711.0)) == 0 and L.sigmoid(-711.0) > 0 and L.silu(-711.0) < 0


# ---------------------------------------------------------------------------
# meta-tests: the flushing forms fail the same check


def _flush_mul_sigmoid(x, t):
    return x * L.sigmoid(t)  # the sigmoid alone subnormal below t = -708.4: its lost bits stay lost


@pytest.mark.parametrize("name, wrong", [
    ("sigmoid", expit),                                            # 0 below t = -709.78
    ("silu", lambda t: t * expit(t)),                              # 0 at silu(-711) = -1.2e-306
    ("softplus", lambda t: np.log(1 + np.exp(t))),                 # 1 + e^t = 1 below t = -37; overflow above 709
    ("log_sigmoid", lambda t: np.log(expit(t))),                   # log 0 = -inf below -709.78
    ("silu", lambda t: _flush_mul_sigmoid(t, t)),                  # ~700 ulp at t = -715
])
def test_the_check_rejects_the_flushing_forms(name, wrong):
    with np.errstate(all="ignore"):
        got = wrong(T)
    assert worst_ulps(name, got, T)[0] > L.LOGISTIC_MAX_ULP


# ---------------------------------------------------------------------------
# every consumer reads the accurate forms: each public caller at tail arguments, against the oracle


def _mp(name, t, x=None):
    return np.array([float(v) for v in mp_logistic(name, t, x)])


TAIL_T = np.array([-711.0, -715.0, -740.0, -30.0, 0.5, 40.0, 720.0])


def _close(got, exact, ulps=2 * L.LOGISTIC_MAX_ULP):
    """Within ``ulps`` ulps of the exact value (a few roundings past the logistic function's own)."""
    tol = np.array([ulps * _ulp(e) for e in np.ravel(exact)]).reshape(np.shape(exact))
    assert (np.abs(np.asarray(got) - exact) <= tol).all(), (got, exact)


def test_consumers_use_the_accurate_forms():
    from refimpl import ffn, gated, moe
    from refimpl.mixers import gated_kernel, rwkv4, ssm

    t = TAIL_T
    _close(moe.router_scores(t[None, :], "sigmoid")[0], _mp("sigmoid", t))
    _close(ssm.silu(t), _mp("silu", t))
    _close(ssm.softplus(t), _mp("softplus", t))
    _close(ffn.act("silu", t), _mp("silu", t))
    _close(ffn.act("sigmoid", t), _mp("sigmoid", t))
    r = t.reshape(1, 1, 1, -1)
    wkv = np.full_like(r, -3e5)
    _close(rwkv4.rwkv4_time_mixing_output(r, wkv)[0, 0, 0], _mp("mul_sigmoid", t, wkv.ravel()))
    # gate logits = the entries of q (W = identity rows): log gamma = log_sigmoid, beta = sigmoid
    q = t.reshape(1, 1, -1, 1)
    lg, beta = gated_kernel.data_dependent_gates(q, q, np.ones((1, 1)), np.ones((1, 1)))
    _close(lg.ravel(), _mp("log_sigmoid", t))
    _close(beta.ravel(), _mp("sigmoid", t))
    # score_jacobian's sigmoid diagonal s (1 - s) = sigmoid(z) sigmoid(-z): e^-40 at z = 40, not 0
    J = moe.score_jacobian(t[None, :], "sigmoid")[0]
    _close(np.diag(J), _mp("sigmoid", t) * _mp("sigmoid", -t), ulps=4 * L.LOGISTIC_MAX_ULP)
    # gated_fusion: y = x + sigmoid(z) o_local + sigmoid(-z) o_stride, z = x W + b (W = 0: z = b)
    d = t.size
    x, ol, os_ = np.zeros((1, d)), np.full((1, d), 3.0), np.full((1, d), -1e300)
    y = gated.gated_fusion(x, ol, os_, np.zeros((d, d)), t)[0]
    _close(y, _mp("mul_sigmoid", t, ol[0]) + _mp("mul_sigmoid", -t, os_[0]))


def test_act_grad_tails_within_a_few_ulps():
    """silu'(u) = s (1 + u (1 - s)): with s subnormal (u < -708.4) the product keeps every bit only when
    s is applied last (mul_sigmoid); the former s * (1 + u s_neg) lost up to 9 bits at u = -715."""
    from properties.mp_oracle import mp_act_grad
    from refimpl import ffn

    u = np.array([-709.0, -711.0, -715.0, -720.0, 40.0, 700.0])
    for name in ("silu", "sigmoid"):
        _close(ffn.act_grad(name, u), mp_act_grad(name, u))
