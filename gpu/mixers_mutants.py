"""Deliberately wrong mixer kernels, by small textual edits of ``gpu.mixers_numba`` and of
``gpu.mixers_c.BODY`` alike (the rules of ``gpu.mutants``: each edit must match its source the
stated number of times, so a mutant never silently turns into the original kernel).

Selective scan:
    scan_input_decayed     x_t = Abar_t (x_{t-1} + Bbar_t u_t): the decay applied once too often,
                           to the current token's input as well
    scan_group_mod         head h reads the B/C group h % G instead of h // (H / G)
Chunked gated linear attention:
    gla_state_dropped      the inter-chunk carry loses the state: S <- chunk writes only
    gla_carry_decay_twice  the carried state decayed by exp(2 G_last) at each chunk boundary
Chunked delta rule:
    delta_state_dropped        the inter-chunk carry loses the state
    delta_no_state_correction  the UT right-hand side lacks - exp(gam) K S (u = U_ - W S without W S)
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
import types

from .mutants import apply_edits


@dataclasses.dataclass(frozen=True)
class MixerMutation:
    name: str
    kernel: str  # "scan" | "gla" | "delta"
    doc: str
    numba: tuple  # (old, new, count) edits of gpu.mixers_numba's source
    c: tuple  # edits of gpu.mixers_c.BODY


MUTATIONS = {m.name: m for m in (
    MixerMutation(
        "scan_input_decayed", "scan", "the decay also applied to the current token's input",
        numba=(("math.exp(dt * A[h, p, n]) * x[n] + dtu * Bm[b, grp, t, n]",
                "math.exp(dt * A[h, p, n]) * (x[n] + dtu * Bm[b, grp, t, n])", 1),),
        c=(("EXPF(dt * An[n]) * x[n] + dtu * Bt[n];", "EXPF(dt * An[n]) * (x[n] + dtu * Bt[n]);", 1),),
    ),
    MixerMutation(
        "scan_group_mod", "scan", "head h reads group h % G",
        numba=(("grp = h // (H // G)", "grp = h % G", 1),),
        c=(("const int grp = h / (H / G);", "const int grp = h % G;", 1),),
    ),
    MixerMutation(
        "delta_state_dropped", "delta", "the inter-chunk state is lost at each chunk boundary",
        numba=(("acc = math.exp(g_last) * S[c, j]\n                for jj in range(n):\n                    acc += Ks[jj, c] * math.exp(g_last - gam[jj])",
                "acc = ZERO * S[c, j]\n                for jj in range(n):\n                    acc += Ks[jj, c] * math.exp(g_last - gam[jj])", 1),),
        c=(("float acc = EXPF(g_last) * S[c * BV + j];\n            for (int jj = 0; jj < n; ++jj) acc += Ks[jj * KMAX + c] * EXPF(g_last - gam[jj])",
            "float acc = 0.0f * S[c * BV + j];\n            for (int jj = 0; jj < n; ++jj) acc += Ks[jj * KMAX + c] * EXPF(g_last - gam[jj])", 1),),
    ),
    MixerMutation(
        "delta_no_state_correction", "delta", "the UT right-hand side omits the carried state's recall exp(gam) K S",
        numba=(("U[i, j] = bet[i] * (U[i, j] - math.exp(gam[i]) * ks)", "U[i, j] = bet[i] * U[i, j]", 1),),
        c=(("U[i * BV + j] = bet[i] * (U[i * BV + j] - EXPF(gam[i]) * ks);", "U[i * BV + j] = bet[i] * U[i * BV + j];", 1),),
    ),
    MixerMutation(
        "gla_state_dropped", "gla", "the inter-chunk state is lost at each chunk boundary",
        numba=(("acc = math.exp(g_last) * S[c, j]\n                for jj in range(n):\n                    acc += Ks[jj, c] * math.exp(g_last - Gc[jj, c])", "acc = ZERO * S[c, j]\n                for jj in range(n):\n                    acc += Ks[jj, c] * math.exp(g_last - Gc[jj, c])", 1),),
        c=(("float acc = EXPF(g_last) * S[c * BV + j];\n            for (int jj = 0; jj < n; ++jj) acc += Ks[jj * KMAX + c] * EXPF(g_last - Gc[jj * KMAX + c])", "float acc = 0.0f * S[c * BV + j];\n            for (int jj = 0; jj < n; ++jj) acc += Ks[jj * KMAX + c] * EXPF(g_last - Gc[jj * KMAX + c])", 1),),
    ),
    MixerMutation(
        "gla_carry_decay_twice", "gla", "the carried state decayed twice at each chunk boundary",
        numba=(("acc = math.exp(g_last) * S[c, j]\n                for jj in range(n):\n                    acc += Ks[jj, c] * math.exp(g_last - Gc[jj, c])", "acc = math.exp(g_last + g_last) * S[c, j]\n                for jj in range(n):\n                    acc += Ks[jj, c] * math.exp(g_last - Gc[jj, c])", 1),),
        c=(("float acc = EXPF(g_last) * S[c * BV + j];\n            for (int jj = 0; jj < n; ++jj) acc += Ks[jj * KMAX + c] * EXPF(g_last - Gc[jj * KMAX + c])", "float acc = EXPF(g_last + g_last) * S[c * BV + j];\n            for (int jj = 0; jj < n; ++jj) acc += Ks[jj * KMAX + c] * EXPF(g_last - Gc[jj * KMAX + c])", 1),),
    ),
)}


def numba_module(m: MixerMutation) -> types.ModuleType:
    """A fresh copy of gpu.mixers_numba with the mutation applied."""
    base = importlib.import_module("gpu.mixers_numba")
    src = apply_edits(inspect.getsource(base), m.numba, f"{base.__name__} ({m.name})")
    name = f"{base.__name__}__mutant_{m.name}"
    mod = types.ModuleType(name)
    mod.__package__ = "gpu"
    mod.__file__ = f"<mutant {m.name} of {base.__file__}>"
    sys.modules[name] = mod  # numba resolves the kernel's globals through the module
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)
    return mod


def c_source(m: MixerMutation) -> str:
    from . import mixers_c
    from .dialect import with_prelude

    return with_prelude(apply_edits(mixers_c.BODY, m.c, f"gpu.mixers_c ({m.name})"))


def backend(name: str, runtime: str):
    """A :class:`gpu.mixers_api.MixerBackend` running mutant ``name`` on ``runtime``."""
    from .mixers_api import MixerBackend

    m = MUTATIONS[name]
    label = f"{runtime}[mutant {name}]"
    if runtime == "numba":
        return MixerBackend("numba", numba_module=numba_module(m), label=label)
    return MixerBackend(runtime, c_source=c_source(m), label=label)
