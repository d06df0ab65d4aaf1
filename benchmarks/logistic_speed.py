"""The hot paths that use refimpl.logistic, before and after it (issue 21), side by side in one process.

    python benchmarks/logistic_speed.py [--rounds 31]

"before" monkeypatches each path back to the forms refimpl.logistic replaced (SciPy's ``expit``,
``u * expit(u)``, ``np.logaddexp(0, x)``, the FFN's former ``where(t < -700, exp(t), expit(t))``);
"after" is the code as it is. Each path alternates the two call by call (the machine is shared and
its load varies), and each figure is the minimum over the rounds, with ``uptime``'s load printed beside it.
Paths: the MoE router (``moe.route``, sigmoid scores, T=8192, E=64, k=8), the selective scan
(``selective_scan`` with z and ``delta_softplus``), the FFN forward (SwiGLU and GELU-tanh, T=2048,
D=256, H=1024) and the elementwise functions alone (2^20 arguments). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import time
import types

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy.special import expit  # noqa: E402

import refimpl  # noqa: E402
from refimpl import ffn, logistic, moe  # noqa: E402
from refimpl.mixers import ssm  # noqa: E402


def _old_ffn_expit(t):
    with np.errstate(under="ignore"):
        return np.where(t < -700.0, np.exp(np.maximum(t, -800.0)), expit(t))


BEFORE = {  # (module, attribute) -> the replaced form
    (moe.select, "sigmoid"): expit,
    (ssm, "logistic"): types.SimpleNamespace(silu=lambda x: x * expit(x), softplus=lambda x: np.logaddexp(0.0, x)),
    (ffn, "sigmoid"): _old_ffn_expit,
    (ffn, "silu"): lambda u: u * _old_ffn_expit(u),
    (ffn, "mul_sigmoid"): lambda x, t: x * _old_ffn_expit(t),
}


def _patched(before: bool):
    saved = {k: getattr(*k) for k in BEFORE}
    if before:
        for (mod, attr), f in BEFORE.items():
            setattr(mod, attr, f)
    return saved


def _restore(saved):
    for (mod, attr), f in saved.items():
        setattr(mod, attr, f)


def cases():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(8192, 64))
    Bt, H, L, P, N = 1, 8, 256, 16, 16
    u, dl, zz = rng.normal(size=(Bt, H, L, P)), rng.normal(size=(Bt, H, L, P)), rng.normal(size=(Bt, H, L, P))
    A, Bm, Cm = -np.exp(rng.normal(size=(H, P, N))), rng.normal(size=(Bt, 1, L, N)), rng.normal(size=(Bt, 1, L, N))
    x = rng.normal(size=(2048, 256))
    glu = ffn.GLUParams(W_gate=rng.normal(size=(256, 1024)) / 16, W_up=rng.normal(size=(256, 1024)) / 16,
                        W_down=rng.normal(size=(1024, 256)) / 32)
    t = rng.normal(size=2**20) * 8
    return {
        "moe.route sigmoid (8192x64, k=8)": lambda: moe.route(z, 8, score="sigmoid"),
        "selective_scan z, softplus (8x256x16x16)": lambda: ssm.selective_scan(u, dl, A, Bm, Cm, z=zz,
                                                                               delta_softplus=True),
        "ffn swiglu (2048x256x1024)": lambda: ffn.ffn(x, glu, variant="swiglu"),
        "ffn geglu_tanh (2048x256x1024)": lambda: ffn.ffn(x, glu, variant="geglu_tanh"),
        "act silu (2^20)": lambda: ffn.act("silu", t),
        "router_scores sigmoid (8192x64)": lambda: moe.router_scores(z, "sigmoid"),
        "ssm.softplus (2^20)": lambda: ssm.softplus(t),
        "ssm.silu (2^20)": lambda: ssm.silu(t),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=31)
    a = ap.parse_args()
    cs = cases()
    best = {(n, w): np.inf for n in cs for w in ("before", "after")}
    for n, f in cs.items():  # each case alternates before / after call by call (fine-grained interleaving)
        for r in range(a.rounds):
            for which in (("before", "after") if r % 2 == 0 else ("after", "before")):
                saved = _patched(which == "before")
                try:
                    t0 = time.perf_counter()
                    f()
                    best[n, which] = min(best[n, which], time.perf_counter() - t0)
                finally:
                    _restore(saved)
        print(f"{n}: done", flush=True)
    print(f"refimpl {refimpl.__file__}; load {os.getloadavg()}; minimum of {a.rounds} interleaved rounds")
    print(f"{'path':45s} {'before ms':>10s} {'after ms':>10s} {'after/before':>13s}")
    for n in cs:
        b, f = best[n, "before"], best[n, "after"]
        print(f"{n:45s} {b * 1e3:10.2f} {f * 1e3:10.2f} {f / b:13.3f}")


if __name__ == "__main__":
    main()
