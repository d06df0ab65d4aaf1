"""The distributed properties on real MPI ranks: ``mpiexec -n 4 python -m properties.mpi_demo``.

Every rank builds the same fixed cases (ring and Ulysses attention over a
contiguous and a zig-zag layout, causal and sliding-window masks, GQA; the
expert-parallel layer under the local and the global capacity conventions),
runs the rank programs of ``refimpl.distributed`` through the MPI driver
(``refimpl.distributed.mpi.driver``) and applies the very checks of
``properties.distributed``: agreement with refimpl.attention /
attention_backward / refimpl.moe on the gathered problem within the same
bounds, token conservation, and the counted messages against the
communication-volume formulas. It also checks that the MPI run equals the
simulated run of the same programs bit for bit, and prints the volume each
rank sent next to the formula. Rank 0 prints; the exit status is 0 iff
everything agrees.

``--wrong NAME[,NAME...]`` runs wrong rank programs (``properties.distributed.
WRONG_PROGRAMS``) instead, through the properties that name them; the exit
status is 0 iff every one of them is rejected on real ranks.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import refimpl
import refimpl.moe as M
from refimpl.distributed import comm_volume as CV
from refimpl.distributed import mpi
from refimpl.distributed import ring as R
from refimpl.distributed import sharding as SH
from refimpl.distributed import simulate

from . import distributed as DP


def cp_cases(P: int, magnitude: float = 1.0) -> list:
    """Fixed context-parallel cases for P ranks (Hkv = P so Ulysses applies; G = 2: GQA).
    ``magnitude`` scales q and k: 60 gives scores, and so partial lse, in the thousands (the
    cases of ``cp_ring_extreme_scores``, where a merge without the max shift overflows)."""
    rng = np.random.default_rng(2024)
    L, B, Hkv, G, D, Dv = 4 * P + 2, 1, P, 2, 4, 3
    q, k, v = (rng.standard_normal(s) for s in ((B, Hkv * G, L, D), (B, Hkv, L, D), (B, Hkv, L, Dv)))
    q, k = q * magnitude, k * magnitude
    out = []
    for layout, sizes in (("contiguous", SH.even_sizes(L, P)), ("zigzag", SH.even_sizes(L, 2 * P))):
        for kw in ({"causal": True}, {"causal": True, "window": (3, 0)}, {"causal": False, "window": (2, 1)}):
            out.append(DP.CPCase(q, k, v, layout, tuple(sizes), kw, 2024))
    return out


def ep_cases(P: int) -> list:
    """Fixed expert-parallel cases: E = 2P experts, two per rank, k = 2, unequal token counts."""
    rng = np.random.default_rng(7)
    E, D, H = 2 * P, 4, 6
    xs = tuple(rng.standard_normal((5 + 2 * r, D)) for r in range(P))
    W = 2.0 * rng.standard_normal((E, D))
    experts = tuple(M.random_experts(E, D, H, seed=7))
    owner = np.arange(E, dtype=np.int64) // 2
    opts = ({"capacity_factor": 1.0, "normalize": "after_drop"},
            {"capacity_factor": 1.0, "drop_order": "token_major"},
            {"normalize": "before_drop"})
    cases = [DP.EPCase(xs, W, experts, 2, owner, conv, o, 7) for conv in ("local", "global") for o in opts]
    return cases + [DP.EPCase(xs, W, experts, 2, owner, "local", {"capacity_factor": 0.5, "reroute": True}, 7)]


def _run_checks(cp, ep, P, props) -> list:
    """[(property, case, None or failure message)] for the properties ``props`` on the fixed cases."""
    results = []
    for prop in props:
        impl = cp if prop.kind == "context_parallel" else ep
        if prop.kind == "context_parallel":
            cases = cp_cases(P, magnitude=60.0 if prop.name == "cp_ring_extreme_scores" else 1.0)
        else:
            cases = ep_cases(P)
        for case in cases:
            try:
                prop.check(impl, case)
                results.append((prop.name, case, None))
            except AssertionError as e:
                results.append((prop.name, case, str(e).splitlines()[0][:160]))
    return results


def _agreement_and_volumes(cp, ep, P, say) -> bool:
    """Errors against the spec, MPI == simulated bit for bit, and counted volumes next to the formulas."""
    case = cp_cases(P)[3]  # zig-zag, causal
    q, k, v, pos, kw = case.q, case.k, case.v, case.positions, case.kwargs
    B, Hq, L, D = q.shape
    Hkv, Dv = k.shape[1], v.shape[3]
    sizes = [len(p) for p in pos]
    S = R.ring_num_steps(SH.GlobalMask(L, True), pos)
    logs = {what: simulate.Log(P) for what in ("ring forward", "ring backward", "ulysses", "ulysses backward",
                                               "expert parallel")}
    out_m, lse_m = cp.ring_forward(q, k, v, pos, log=logs["ring forward"], **kw)
    out_s, lse_s, _ = R.ring_attention(q, k, v, pos, **kw)
    ref_out, _ = refimpl.attention(q, k, v, **kw)
    same = bool(np.array_equal(out_m, out_s) and np.array_equal(lse_m, lse_s))
    say(f"ring forward (zig-zag, causal, L={L}, GQA {Hq}/{Hkv}): max|out - refimpl.attention| = "
        f"{np.abs(out_m - ref_out).max():.2e}; MPI == simulated, bit for bit: {same}")
    cp.ring_backward(q, k, v, np.ones(out_m.shape), pos, log=logs["ring backward"], **kw)
    cp.ulysses(q, k, v, pos, log=logs["ulysses"], **kw)
    cp.ulysses_backward(q, k, v, np.ones(out_m.shape), pos, log=logs["ulysses backward"], **kw)
    ec = ep_cases(P)[3]  # global capacity
    res = ep.moe(list(ec.xs), ec.W, list(ec.experts), ec.k, ec.owner, capacity_convention=ec.convention,
                 log=logs["expert parallel"], **ec.options)
    y_ref = M.moe_forward(np.concatenate(ec.xs), ec.W, list(ec.experts), ec.k, **ec.options)[0]
    say(f"expert parallel (global capacity, {ec.options}): max|y - refimpl.moe.moe_forward| = "
        f"{np.abs(np.concatenate([r.y for r in res]) - y_ref).max():.2e}")
    m = CV.kept_rows([r.routing for r in res], ec.owner)
    formulas = {"ring forward": CV.ring_forward(sizes, S, B, Hkv, D, Dv),
                "ring backward": CV.ring_backward(sizes, S, B, Hkv, D, Dv),
                "ulysses": CV.ulysses(sizes, B, Hq, Hkv, D, Dv),
                "ulysses backward": CV.ulysses_backward(sizes, B, Hq, Hkv, D, Dv),
                "expert parallel": CV.expert_parallel(m, ec.W.shape[1], ec.k, ec.W.shape[0], ec.convention)}
    say(f"elements sent per rank, counted on MPI | formula (refimpl.distributed.comm_volume); S={S} ring steps:")
    agree = same
    for what, log in logs.items():
        counted = [log.volume(r) for r in range(P)]
        agree &= counted == formulas[what]
        say(f"  {what:16s} floats {[c.floats for c in counted]} | {[f.floats for f in formulas[what]]}   "
            f"ints {[c.ints for c in counted]} | {[f.ints for f in formulas[what]]}")
    return agree


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wrong", default="", help="comma-separated names of wrong rank programs to run instead")
    args = parser.parse_args(argv)
    comm = mpi.world()
    P, rank = comm.Get_size(), comm.Get_rank()
    say = print if rank == 0 else (lambda *a, **k: None)
    driver = mpi.driver(comm)
    ok = True
    if not args.wrong:
        cp, ep = DP.adapter(driver=driver)
        say(f"distributed spec on {P} MPI ranks ({mpi.library_version()})")
        results = _run_checks(cp, ep, P, DP.PROPERTIES)
        for prop in DP.PROPERTIES:
            mine = [r for r in results if r[0] == prop.name]
            bad = [r for r in mine if r[2] is not None]
            say(f"  {'FAIL' if bad else 'ok  '} {prop.name:36s} {len(mine) - len(bad)}/{len(mine)} cases")
            for _, case, failure in bad:
                say(f"       {case!r}\n       {failure}")
            ok &= not bad
        ok &= _agreement_and_volumes(cp, ep, P, say)
        say("all agree with the single-process spec" if ok else "DISAGREEMENT with the single-process spec")
    else:
        for name in args.wrong.split(","):
            wrong = DP.adapter(name, driver=driver)
            props = [p for p in DP.PROPERTIES if name in p.rejects]
            cp, ep = (wrong, None) if wrong.kind == "context_parallel" else (None, wrong)
            failures = [r for r in _run_checks(cp, ep, P, props) if r[2] is not None]
            say(f"{'rejected' if failures else 'NOT REJECTED'}: {name}"
                + (f" ({failures[0][0]}: {failures[0][2]})" if failures else ""))
            ok &= bool(failures)
    sys.stdout.flush()
    return 0 if comm.allreduce(int(not ok)) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
