"""The public-function contract, fuzzed (README "Contract").

For every public callable (enumerated from ``__all__`` of ``refimpl`` and the
subpackages it lists; a module without ``__all__`` contributes the public
names it defines), plus every attention and MoE preset, Hypothesis draws a
valid call (tests/contract_recipes.py) and then either

* breaks one argument with a wrong value of its kind (wrong dtype, list, None,
  wrong ndim or shape, empty dim, NaN/inf, huge/tiny value, int >= 2**63,
  negative/zero/bool/float count, unknown name), or
* scales the arrays to valid extremes (1e150, 1e300, 1e-300, subnormal),

and checks: the call raises only ValueError/TypeError (or the recipe's
documented classes) whose message names the broken argument (or, for a shape
disagreement, one of the arrays it must agree with); a call that returns
gives no NaN/inf from finite inputs (except what the docstring states:
``lse = -inf`` for a fully masked row, the NaN rows of the xformers preset);
inputs are never mutated; two calls give equal results; the call finishes
within a hang guard. A public callable without a recipe fails
``test_every_public_callable_has_a_recipe``.
"""

from __future__ import annotations

import atexit
import copy
import dataclasses
import os
import re
import signal
import sys
import types

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import refimpl
from refimpl import moe

from . import contract_recipes as CR

HANG_GUARD_S = 30  # a hang guard, not a performance assertion: the calls here take milliseconds
HANG_GUARD_WALL_S = 600  # the same in wall time, for a call that waits without computing (a deadlock)
FUZZ_MAX_BYTES = 2**26  # the work budget under fuzzing (64 MiB): the band of BAD_SCALARS is refused fast


@pytest.fixture(autouse=True)
def _small_work_budget(monkeypatch):
    """Run every fuzzed call under a small REFIMPL_MAX_BYTES (refimpl._validate.check_budget)."""
    monkeypatch.setenv("REFIMPL_MAX_BYTES", str(FUZZ_MAX_BYTES))

# Result records: constructed by the library, fuzzed through the functions that return them
# (their fields are outputs; they validate nothing themselves and are documented as such).
RESULT_TYPES = {
    "refimpl.FlashStats": "refimpl.flash_attention(return_stats=True)",
    "refimpl.moe.Routing": "refimpl.moe.route",
    "refimpl.moe.ExpertChoiceRouting": "refimpl.moe.route_expert_choice",
    "refimpl.moe.NoisyTopK": "refimpl.moe.noisy_top_k_gating",
    "refimpl.moe.SortedAssignments": "refimpl.moe.sort_by_expert",
    "refimpl.moe.Preset": "moe.presets.*.route / balance_loss",
    "refimpl.accounting.ParameterCount": "refimpl.accounting.parameter_count",
    "refimpl.accounting.ComputePerToken": "refimpl.accounting.compute_per_token",
    "refimpl.io_accounting.IOCount": "refimpl.io_accounting.forward_io",
    "refimpl.mixers.cost.MixerCost": "refimpl.mixers.cost.* (softmax_attention, rwkv4, ...)",

    "refimpl.losses.LossTerms": "refimpl.losses.training_loss",
    "refimpl.losses.CollapseResult": "refimpl.losses.router_collapse_simulation",
    "refimpl.formats.Format": "refimpl.formats.get_format",
}


def public_callables() -> dict:
    """{qualified name: callable}, from __all__ (or the module's own public names), deduplicated."""
    out, seen = {}, {}

    def walk(mod, prefix):
        names = getattr(mod, "__all__", None)
        if names is None:
            names = [n for n, o in vars(mod).items()
                     if not n.startswith("_") and getattr(o, "__module__", None) == mod.__name__]
        for n in names:
            o = getattr(mod, n)
            if isinstance(o, types.ModuleType):
                walk(o, f"{prefix}{n}.")
            elif callable(o):
                name = prefix + n
                if id(o) in seen and len(seen[id(o)]) <= len(name):
                    continue
                out.pop(seen.get(id(o)), None)
                seen[id(o)] = name
                out[name] = o

    walk(refimpl, "refimpl.")
    return out


PUBLIC = public_callables()
TARGETS = {n: f for n, f in PUBLIC.items() if n not in RESULT_TYPES}
PRESET_PREFIXES = ("conventions.", "moe.presets.", "gpu.", "methods.")  # presets' bound methods, the gpu facade,
# the methods of the public classes (tests/contract_recipes_methods.py)
TARGETS.update({n: None for n in CR.R if n.startswith(PRESET_PREFIXES)})


def _gpu_public() -> list:
    """The gpu facade's public functions (gpu.__all__ less its error classes and constants)."""
    import gpu

    return [f"gpu.{n}" for n in gpu.__all__ if callable(getattr(gpu, n)) and not isinstance(getattr(gpu, n), type)]


def test_every_public_callable_has_a_recipe():
    missing = sorted(n for n in PUBLIC if n not in CR.R and n not in RESULT_TYPES)
    missing += sorted(n for n in _gpu_public() if n not in CR.R)
    assert not missing, f"public callables without a fuzz recipe in tests/contract_recipes.py: {missing}"
    stale = sorted(n for n in CR.R if n not in PUBLIC and not n.startswith(PRESET_PREFIXES))
    assert not stale, f"recipes for names that are not public callables: {stale}"


# ---------------------------------------------------------------------------
# wrong values per kind


class Weird:
    """An object of no expected type."""


def _bad_arrays(a):
    a = np.asarray(a)
    out = [("None", None), ("str", "abc"), ("object", Weird()), ("complex", a.astype(np.complex128) + 1j),
           ("list of str", [["a"]]), ("extra axis", a[None]), ("0-d", np.float64(1.0))]
    if a.ndim:
        out += [("drop axis", a[..., 0] if a.shape[-1] else a.reshape(a.shape[:-1] + (0,))[..., :0]),
                ("last axis + 1", np.concatenate([a, a[..., :1] if a.shape[-1] else np.zeros(a.shape[:-1] + (1,))], -1)),
                ("first axis empty", a[:0]), ("last axis empty", a[..., :0])]
    if a.size and np.issubdtype(a.dtype, np.number):
        for label, val in (("NaN", np.nan), ("+inf", np.inf), ("-inf", -np.inf)):
            b = a.astype(np.float64).copy()
            b.flat[0] = val
            out.append((label, b))
    return out


# the band between "refused" and "fits in memory": valid counts (<= 2**62) whose work is far beyond the
# fuzz's budget (REFIMPL_MAX_BYTES below): a ValueError naming the argument, or a result within the hang
# guard; never a MemoryError, a hang, or a count computed by allocating
BAND = [2**40, 10**9 + 7, 2**53 + 1, 2**62, np.uint64(3), np.int32(3)]

BAD_SCALARS = {
    "count": [-1, 0, True, False, 2.5, None, "3", 2**63, 2**64 + 1, 10**30, -(2**63) - 1, np.float64(2.0), 1j, Weird()]
    + BAND,
    "side": [-1, -(2**63), 2**63, 2**64, 10**40, True, 2.5, "1", Weird()] + BAND,
    "float": [np.nan, np.inf, -np.inf, -1.0, 0.0, None, "1", True, 1e308, 1e-308, 5e-324, 1e300, 1 + 1j, 2**70, Weird()],
    "nonneg_float": [np.nan, np.inf, -1.0, None, "1", True, 1e308, 1e300, 1 + 1j, np.float32(1.25), 2**1100, Weird()],
    "real": [np.nan, np.inf, -np.inf, None, "1", True, 1e308, 1 + 1j, 2**1100, Weird()],
    "prob": [np.nan, -0.1, 1.0, 1.5, None, True, "0.1"],
    "name": ["nope", "", None, 3, True, ("softmax",), Weird()],
    "str": [None, 3, Weird()],
    "bool": [None, "yes", 2, 0.0, Weird()],
    "axis": [5, -5, 1.0, None, True, "0", 2**63],
    "window": [(-1, 0), (0, -2), (2**63, 0), (0, 2**64), (10**30, None), (1.5, 0), (True, 0), ("1", 0), (1,),
               (1, 2, 3), 3, -1, None, "w", 2**63],
    "object": [None, 3, "x", Weird()],
    "routing": [None, 3, "x", Weird()],
    "ec_routing": [None, "x", Weird()],
    "state": [None, 3, Weird()],
    "experts": [None, 3, [], [Weird()], "ffn"],
    "mask": [None, 3, Weird(), True],
    "mask_list": [[], [None], [3], None, [Weird()]],
    "routing_list": [[], [None], None, 3, [Weird()]],
    "callable": [None, 3, "f"],
    "index_list": [[-1], [2**63], [1.5], [True], None, "0", [None]],
    "cuts": [[-1], [99], [3, 1], [1.5], None, "1", [2**63]],
}


def bad_values(kind, valid):
    """(label, value) pairs of wrong values for one argument of this kind."""
    if kind in ("array", "array_neginf", "lse"):
        return _bad_arrays(valid) if valid is not None else [("None->array", np.ones((2, 2)))]
    if kind == "bool_array":
        a = np.asarray(valid) if valid is not None else np.ones((2, 2), bool)
        return [("float", a.astype(np.float64)), ("None", None) if valid is not None else ("str", "x"),
                ("extra axis", a[None, None, None, None, None]), ("last axis + 1", np.ones(a.shape[:-1] + (a.shape[-1] + 1,), bool)
                                                                   if a.ndim else np.ones(7, bool))]
    if kind == "int_array":
        a = np.asarray(valid) if valid is not None else np.zeros(2, np.int64)
        return [("float", a.astype(np.float64) + 0.5), ("None", None), ("2-D", a[None, None]), ("bool", a > 0),
                ("huge", a.astype(object) + 2**64)]
    if kind == "array_list":
        v = list(valid)
        return [("empty", []), ("None", None), ("NaN item", [np.full_like(np.asarray(v[0]), np.nan)] + v[1:]),
                ("item None", [None] + v[1:]), ("longer", v + v[:1]), ("str", "abc")]
    return [(repr(b), b) for b in BAD_SCALARS[kind]]


EXTREMES = (1e150, 1e300, 1e-300, 5e-324, -1e300)
FLOAT_MAX = float(np.finfo(np.float64).max)


# ---------------------------------------------------------------------------
# contract checks


def _snapshot(x):
    try:
        return copy.deepcopy(x)
    except Exception:  # a callable or module argument
        return x


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.kind in "fc":
            return bool(np.array_equal(a, b, equal_nan=True))
        return bool(np.array_equal(a, b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (a != a and b != b)
    if isinstance(a, refimpl.masks.Mask) or callable(a) or type(a).__eq__ is object.__eq__:
        return type(a) is type(b)
    try:
        return bool(a == b)
    except Exception:
        return True


def _floats(x, path="result"):
    """Yield (path, float ndarray) for every float leaf of a result."""
    if isinstance(x, (float, np.floating)):
        yield path, np.asarray(x)
    elif isinstance(x, np.ndarray):
        if x.dtype.kind == "f":
            yield path, x
    elif isinstance(x, (list, tuple)):
        for i, y in enumerate(x):
            yield from _floats(y, f"{path}[{i}]")
    elif isinstance(x, dict):
        for k, y in x.items():
            yield from _floats(y, f"{path}[{k!r}]")
    elif dataclasses.is_dataclass(x) and not isinstance(x, type):
        for f in dataclasses.fields(x):
            yield from _floats(getattr(x, f.name), f"{path}.{f.name}")


def check_finite(result, finite):
    if finite is None:
        return
    for path, a in _floats(result):
        assert not np.isnan(a).any(), f"{path}: NaN from finite inputs"
        assert not np.isposinf(a).any(), f"{path}: +inf from finite inputs"
        if finite == "all":
            assert not np.isneginf(a).any(), f"{path}: -inf from finite inputs"


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


def invoke(name, fn, rec, kw):
    """Call under two guards: HANG_GUARD_S of the process's CPU time (SIGPROF: a busy loop, and a
    machine's load does not count against the call) and HANG_GUARD_WALL_S of wall time (SIGALRM: a call
    that blocks)."""
    signal.signal(signal.SIGPROF, _alarm)
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_PROF, HANG_GUARD_S)
    signal.setitimer(signal.ITIMER_REAL, HANG_GUARD_WALL_S)
    try:
        return rec.call(fn, kw) if rec.call else fn(**kw)
    except _Hang:
        pytest.fail(f"{name}: did not finish within {HANG_GUARD_S} s of CPU time or {HANG_GUARD_WALL_S} s of wall "
                    f"time (unbounded work)")
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)


CALLS = {"n": 0}


def run_case(name, fn, rec, kw, **opts):
    """Call once; check the contract (see _run_case). With $CONTRACT_COLLECT set to a file,
    violations are appended there instead of failing (a survey mode for development)."""
    if not COLLECT:
        return _run_case(name, fn, rec, kw, **opts)
    try:
        _run_case(name, fn, rec, kw, **opts)
    except (AssertionError, pytest.fail.Exception) as e:
        with open(COLLECT, "a") as f:
            f.write(f"{name}: " + str(e).splitlines()[0][:400] + "\n")


COLLECT = os.environ.get("CONTRACT_COLLECT")


def _run_case(name, fn, rec, kw, *, broken=None, label="", may_reject=False, names_ok=()):
    """Call once; check the contract. ``broken``: the argument made wrong (None: a valid call)."""
    before = {n: _snapshot(v) for n, v in kw.items()}
    CALLS["n"] += 1
    try:
        result = invoke(name, fn, rec, kw)
    except rec.raises as e:
        msg = str(e)
        if rec.refusal is not None and isinstance(e, ValueError) and re.match(rec.refusal, msg):
            check_wording(name, broken, label, e)  # documented: a named refusal, valid call or not
            return
        if broken is None and not may_reject and not rec.rejects_valid:
            raise AssertionError(f"{name}: a valid call raised {type(e).__name__}: {msg}") from e
        allowed = ({broken} | set(names_ok)) if broken else set(kw) | set(names_ok) | set(rec.names_ok)
        assert any(n in msg for n in allowed), (
            f"{name}({broken}={label}): {type(e).__name__} message does not name {sorted(allowed)}: {msg!r}")
        check_wording(name, broken, label, e)
        result = None
    except Exception as e:  # the contract: only the documented error classes
        raise AssertionError(f"{name}({broken}={label}): raised {type(e).__name__}: {e}") from e
    for n, v in kw.items():
        assert _same(before[n], v), f"{name}: argument {n!r} was mutated"
    if result is None:
        return
    check_finite(result, rec.finite)
    if rec.oracle is not None:
        rec.oracle(kw, result)
    if broken is None:  # determinism, on valid calls
        again = invoke(name, fn, rec, {n: _snapshot(v) for n, v in before.items()})
        assert _same(result, again), f"{name}: two calls with equal arguments gave different results"
        check_no_aliasing(name, fn, rec, kw, before, again)


WORDING = re.compile(r"^(?P<names>[^:\n]+): expected .+, got ", re.S)
CHECK_WORDING = os.environ.get("CONTRACT_WORDING", "1") != "0"


def check_wording(name, broken, label, e):
    """The one wording (README "Contract"): ``<names>: expected ..., got ...`` with plain reprs, the
    names before the colon (a message that names the argument elsewhere, or in other words, fails).

    On by default: it checks every message the fuzz reaches, those built at run time included (the
    static reading of every raise is tests/test_wording.py); $CONTRACT_WORDING=0 turns it off.
    Python's own binding errors (an unexpected or duplicate keyword) are TypeErrors naming the
    argument in the interpreter's words and are not counted."""
    if not CHECK_WORDING:
        return
    msg = str(e)
    if isinstance(e, TypeError) and re.search(r"\(\) (got (an unexpected|multiple values for) keyword|missing \d+ required)", msg):
        return
    m = WORDING.match(msg)
    assert m, f"{name}({broken}={label}): {type(e).__name__} message not in the wording '<name>: expected ..., got ...': {msg!r}"
    for plain in ("np.float64(", "np.int64(", "np.uint64(", "np.int32(", "np.str_(", "np.True_", "np.False_"):
        assert plain not in msg, f"{name}({broken}={label}): message prints a NumPy repr {plain!r}: {msg!r}"


def check_no_aliasing(name, fn, rec, kw, before, result):
    """The aliasing oracle: a caller writing into a result changes neither its own arguments
    (no output aliases an input) nor what refimpl returns next (no output aliases a cache, a memo
    or other state inside refimpl)."""
    expected = _snapshot(result)
    if not CR.scribble(result):
        return
    for n, v in kw.items():
        assert _same(before[n], v), f"{name}: writing into the result changed argument {n!r} (an output aliases it)"
    third = invoke(name, fn, rec, {n: _snapshot(v) for n, v in before.items()})
    assert _same(expected, third), f"{name}: writing into a result changed a later call's result (aliased state)"


ARRAY_KINDS = ("array", "array_neginf", "lse", "bool_array", "int_array", "array_list")


def fuzz_part(names, part=None):
    """The names one part of the fuzz runs: ``$CONTRACT_FUZZ_PART = "k/n"`` (1 <= k <= n) keeps every
    n-th of the sorted names from the k-th on, so the n parts partition them and interleave the slow
    families (the gpu facade, the mixers); unset: every name. The `thorough` profile runs in parts,
    one process each (README "Contract")."""
    part = os.environ.get("CONTRACT_FUZZ_PART", "") if part is None else part
    if not part:
        return sorted(names)
    m = re.fullmatch(r"(\d+)/(\d+)", part)
    if not m or not 1 <= int(m[1]) <= int(m[2]):
        raise ValueError(f"CONTRACT_FUZZ_PART: expected 'k/n' with 1 <= k <= n, got {part!r}")
    k, n = int(m[1]), int(m[2])
    return sorted(names)[k - 1::n]


def test_the_hang_guards_stop_a_busy_call_and_a_blocked_one(monkeypatch):
    """invoke fails a call that computes past HANG_GUARD_S of CPU time, and one that waits past
    HANG_GUARD_WALL_S of wall time (both shortened here), and returns a prompt call's value."""
    import time

    rec = CR.Recipe(build=None, kinds={})

    def busy():
        while True:
            pass

    # each guard alone must stop its call: the other one is set far beyond the 4 s allowed
    for fn, what, cpu_s, wall_s in ((busy, "busy", 0.2, 60), (lambda: time.sleep(60), "blocked", 60, 0.5)):
        monkeypatch.setattr(sys.modules[__name__], "HANG_GUARD_S", cpu_s)
        monkeypatch.setattr(sys.modules[__name__], "HANG_GUARD_WALL_S", wall_s)
        start = time.monotonic()
        with pytest.raises(pytest.fail.Exception, match="did not finish"):
            invoke(what, fn, rec, {})
        assert time.monotonic() - start < 4
    assert invoke("prompt", lambda: 3, rec, {}) == 3


def test_fuzz_parts_partition_the_names():
    names = sorted(TARGETS)
    parts = [fuzz_part(names, f"{k}/7") for k in range(1, 8)]
    assert sorted(sum(parts, [])) == names and max(map(len, parts)) - min(map(len, parts)) <= 1
    assert fuzz_part(names, "") == names
    for bad in ("0/3", "4/3", "1-3", "x"):
        with pytest.raises(ValueError, match=r"^CONTRACT_FUZZ_PART: expected 'k/n' with 1 <= k <= n, got "):
            fuzz_part(names, bad)


@pytest.mark.parametrize("name", fuzz_part(TARGETS))
def test_contract(name):
    rec = CR.R[name]
    fn = TARGETS[name]
    if name.startswith("gpu."):
        _require_opencl()
        from gpu.errors import UnsupportedOption

        rec = dataclasses.replace(rec, raises=(ValueError, TypeError, UnsupportedOption))
    n_examples = settings().max_examples

    @settings(max_examples=n_examples, suppress_health_check=list(HealthCheck), deadline=None)
    @given(data=st.data())
    def fuzz(data):
        kw = rec.build(data.draw)
        mode = data.draw(st.sampled_from(["valid", "broken", "broken", "extreme"] if rec.kinds else ["valid"]))
        if mode == "valid":
            return run_case(name, fn, rec, kw)
        if mode == "extreme":
            arrays = [n for n in kw if rec.kinds.get(n) in ("array", "array_neginf") and n in kw
                      and isinstance(kw[n], np.ndarray) and kw[n].dtype.kind == "f"]
            if not arrays:
                return run_case(name, fn, rec, kw)
            f = data.draw(st.sampled_from(EXTREMES + ("top",)))
            which = data.draw(st.sampled_from(arrays))
            if f == "top":  # the largest magnitude exactly finfo.max: the top of the range
                top = float(np.max(np.abs(kw[which]), initial=0.0))
                f = FLOAT_MAX / top if top > 0 else 1.0
            with np.errstate(over="ignore"):
                scaled = np.clip(kw[which] * f, -FLOAT_MAX, FLOAT_MAX)
            kw2 = dict(kw, **{which: scaled})
            return run_case(name, fn, rec, kw2, label=f"x{f:g}", may_reject=True)
        arg = data.draw(st.sampled_from(sorted(rec.kinds)))
        label, bad = data.draw(st.sampled_from(bad_values(rec.kinds[arg], kw.get(arg))))
        kw2 = dict(kw, **{arg: bad})
        shape_kinds = {n for n, k in rec.kinds.items() if k in ARRAY_KINDS or k in ("routing", "ec_routing", "object",
                                                                                     "experts", "state", "count",
                                                                                     "axis")}
        names_ok = shape_kinds if "axis" in label or "empty" in label or "0-d" in label or "drop" in label else ()
        run_case(name, fn, rec, kw2, broken=arg, label=label, names_ok=names_ok)

    fuzz()


def _require_opencl():
    from gpu.backends import get_backend
    from gpu.errors import BackendUnavailable

    try:
        get_backend("opencl").runtime()  # builds the runtime: a missing pyopencl or platform shows here
    except BackendUnavailable as e:
        pytest.skip(f"gpu facade not fuzzed: {e}")


def _write_call_count():
    """With $CONTRACT_COUNT set to a file, the number of generated calls is written there at exit."""
    path = os.environ.get("CONTRACT_COUNT")
    if path and CALLS["n"]:
        with open(path, "w") as f:
            f.write(f"{len(TARGETS)} callables, {CALLS['n']} generated calls\n")


atexit.register(_write_call_count)


# ---------------------------------------------------------------------------
# the overflow contract at the attention entry points (README "Contract")



def _attention_forms():
    return {
        "attention": lambda q, k, v, **kw: refimpl.attention(q, k, v, **kw),
        "flash_attention": lambda q, k, v, **kw: refimpl.flash_attention(q, k, v, block_q=1, block_k=2, **kw),
        "split_kv_attention": lambda q, k, v, **kw: refimpl.split_kv_attention(
            q, k, v, block_q=1, block_k=1, num_splits=3, **kw),
    }


FORMS = _attention_forms()


@pytest.mark.parametrize("form", sorted(FORMS))
def test_scores_beyond_float64_are_an_error_naming_the_arguments(form):
    q, k, v = np.full((1, 1, 2, 3), 1e308), np.full((1, 1, 3, 3), 10.0), np.ones((1, 1, 3, 2))
    with pytest.raises(ValueError, match=r"^q, k, scale: expected every visible score"):
        FORMS[form](q, k, v)  # the exact scores 1e308 * 10 * 3 / sqrt(3) = 1.7e309 exceed float64 range
    with pytest.raises(ValueError, match=r"q, k, scale"):  # scale counts too
        FORMS[form](q / 1e308, k, v, scale=1e308)
    # exact scores 1e307 * 10 * 3 / sqrt(3) = 1.73e308 are in range although the products of the
    # norms are not: computed exactly (all scores equal, so the output is the mean of v)
    out, lse = FORMS[form](q / 10, k, v)
    assert np.isfinite(out).all() and np.isfinite(lse).all()
    np.testing.assert_allclose(out, np.ones((1, 1, 2, 2)), rtol=1e-12)
    np.testing.assert_allclose(lse, 1e307 * (30 / np.sqrt(3)), rtol=1e-15)  # + log 3 is below one ulp


def _softcap_case():
    """Raw scores 1e310 (beyond float64), +2e300 and -2.5e300: with softcap c = 5 the exact
    scores are 5, 5 (tanh(4e299) = 1) and -5. (A raw score whose partial sums overflow and then
    cancel, 1e310 - 1e310, has a rounding error beyond float64 range in any float64 GEMM, so it
    promises nothing and is not drawn.)"""
    q = np.array([1e300, -1e300]).reshape(1, 1, 1, 2) * np.ones((1, 1, 2, 1))
    k = np.array([[1e10, 0.0], [1.0, -1.0], [-2.0, 0.5]]).reshape(1, 1, 3, 2)
    v = np.arange(6.0).reshape(1, 1, 3, 2)
    s = np.array([5.0, 5.0, -5.0])
    p = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
    return q, k, v, p @ v[0, 0], s.max() + np.log(np.exp(s - s.max()).sum())


@pytest.mark.parametrize("form", sorted(FORMS))
def test_softcap_bounds_scores_whose_raw_value_overflows(form):
    q, k, v, out_exact, lse_exact = _softcap_case()
    out, lse = FORMS[form](q, k, v, softcap=5.0, scale=1.0)
    np.testing.assert_allclose(out[0, 0], np.broadcast_to(out_exact, (2, 2)), rtol=1e-12)
    np.testing.assert_allclose(lse[0, 0], lse_exact, rtol=1e-12)


def test_split_kv_is_exact_at_a_large_common_score_offset():
    """Every score shares the offset 1e12; attention and flash_attention stay exact (max-subtracted)."""
    rng = np.random.default_rng(1)
    q, k, v = rng.normal(size=(1, 2, 4, 3)), rng.normal(size=(1, 2, 5, 3)), rng.normal(size=(1, 2, 5, 3))
    q[..., 0], k[..., 0] = 1.0, 1e12
    ref = refimpl.attention(q, k, v, scale=1.0)[0]
    got = refimpl.split_kv_attention(q, k, v, scale=1.0, block_q=2, block_k=2, num_splits=3)[0]
    # the merge weights exp(lse_i - lse) carry a relative error of about u * |lse| ~ 1e-4 unless the
    # merge subtracts the common offset exactly; attention's own error here is ~1e-16
    np.testing.assert_allclose(got, ref, atol=1e-10)


@pytest.mark.parametrize("form", [
    "attention_backward",
    "flash_attention_backward",
])
def test_backward_with_large_finite_dout_is_finite_or_a_clear_error(form):
    """dP = dO V^T overflows (1e300 * 1e10): today attention_backward gives NaN (inf - inf in
    dP - D); flash_attention_backward reports it (dout named). Finite, or a ValueError naming dout."""
    rng = np.random.default_rng(2)
    q, k = rng.normal(size=(1, 2, 4, 3)), rng.normal(size=(1, 2, 5, 3))
    v, dout = rng.normal(size=(1, 2, 5, 3)) * 1e10, rng.normal(size=(1, 2, 4, 3)) * 1e300
    try:
        with np.errstate(all="ignore"):
            if form == "attention_backward":
                grads = refimpl.attention_backward(q, k, v, dout)
            else:
                out, lse = refimpl.attention(q, k, v)
                grads = refimpl.flash_attention_backward(q, k, v, out, lse, dout, block_q=2, block_k=2)
    except ValueError as e:
        assert "dout" in str(e)
        return
    for g in grads:
        assert np.isfinite(g).all(), "NaN or inf gradient from finite inputs"


# ---------------------------------------------------------------------------
# the named cases, pinned (each once failed; see the README "Contract")


def test_sigmoid_scores_that_underflow_give_finite_losses_and_gradients():
    z = np.full((4, 3), -800.0)  # sigmoid(-800) underflows to 0 in float64
    z[0, 0] = -790.0
    r = moe.route(z, 2, score="sigmoid", normalize="after_drop")
    assert r.probs.dtype == np.float64
    for probs in ("softmax", "normalized_scores"):
        loss = moe.balance_loss(r, probs=probs)
        grad = moe.balance_loss_grad(r, z, probs=probs)
        assert np.isfinite(loss) and np.isfinite(grad).all(), probs


def test_router_scores_are_float64_on_both_paths():
    z = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    for score in ("softmax", "sigmoid"):
        assert moe.router_scores(z, score).dtype == np.float64


def test_numpy_float32_capacity_factor_is_accepted_exactly():
    assert moe.capacity(1024, 16, k=2, factor=np.float32(1.25)) == 160
    assert moe.route(np.zeros((8, 4)), 1, capacity_factor=np.float32(1.25)).capacity == 2


@pytest.mark.parametrize("preset", sorted(moe.presets.ALL))
def test_preset_capacity_factor_extremes_are_errors_or_exact(preset):
    p = moe.presets.get(preset)
    k = p.k or 2
    E = next(E for E in (4, 8, 16, 32, 64) if p.supports(k, E))
    z = np.random.default_rng(0).normal(size=(4, E))
    for cf in (np.inf, -1.0, 1e300):
        try:
            r = moe.route(z, k, preset=preset, capacity_factor=cf)
        except ValueError as e:
            assert "capacity_factor" in str(e)
        else:
            assert cf == 1e300 and (r.capacity is None or r.capacity >= 0)


def test_split_kv_with_a_million_splits_costs_what_its_nonempty_splits_cost():
    """Empty chunks are the merge identity and are not computed (no timing assertion: the
    hang guard of the fuzz suite bounds the call)."""
    rng = np.random.default_rng(3)
    q, k, v = rng.normal(size=(1, 1, 3, 2)), rng.normal(size=(1, 1, 5, 2)), rng.normal(size=(1, 1, 5, 2))
    out, lse = invoke("split_kv_attention", refimpl.split_kv_attention, CR.Recipe(None, {}),
                      dict(q=q, k=k, v=v, block_q=2, block_k=2, num_splits=10**6))
    ref_out, ref_lse = refimpl.attention(q, k, v)
    np.testing.assert_allclose(out, ref_out, atol=1e-14)
    np.testing.assert_allclose(lse, ref_lse, atol=1e-14)
    with pytest.raises(ValueError, match="num_splits"):
        refimpl.split_kv_attention(q, k, v, block_q=2, block_k=2, num_splits=2**21)


def test_gpu_facade_validates_scale_and_softcap_as_float32_uses_them():
    from gpu.api import prepare_attention

    q = np.ones((1, 1, 2, 4))
    for name, value in (("softcap", 1e-50), ("scale", 1e40), ("scale", 1e-46)):
        with pytest.raises(ValueError, match=f"{name}: expected a value representable as a normal float32"):
            prepare_attention(q, q, q, **{name: value})
    with pytest.raises(ValueError, match=r"^q, k, scale: expected scores within float32 .*range"):
        prepare_attention(q * 1e20, q * 1e20, q)
    *_, launch = prepare_attention(q, q, q, softcap=0.5, scale=2.0)
    assert (launch.softcap, launch.scale) == (0.5, 2.0)
