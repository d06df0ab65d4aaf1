"""Five shims that let Triton kernels written for a GPU run under Triton's interpreter.

``TRITON_INTERPRET=1`` runs a ``@triton.jit`` kernel as Python over NumPy, one program
instance at a time, with torch CPU tensors as its memory. Three places where the interpreter
differs from compiled Triton stop real kernels before their arithmetic starts; each shim
below makes the interpreter do what the compiler does, and nothing else. Checked against
triton 3.9.0 (``triton/runtime/autotuner.py``, ``triton/runtime/interpreter.py``):

1. ``Autotuner.run`` times every config with ``driver.active.get_benchmarker()``; without a
   GPU there is no active driver ("0 active drivers"). :func:`install` makes
   ``Autotuner.prune_configs`` return one config, so ``run`` takes it without timing (its own
   single-config path). Which one is ``REFIMPL_TRITON_CONFIG``: ``spread`` (default) picks
   config ``crc32(tuning key) mod n``, so calls of different shapes run different configs and
   a bug in a non-default config is still found; ``first`` the first config; an integer i
   config i mod n. The choice is deterministic (the key is the autotuner's own: the values of
   its ``key`` arguments and the dtypes).
2. Loop induction variables: ``for i in range(n)`` / ``tl.range`` in a kernel compile to an
   ``scf.for`` whose induction variable is an int32 tensor (``i.to(tl.int64)`` is valid), but
   the interpreter runs the Python loop and ``i`` is a Python int (fla
   ``fla/ops/common/chunk_h.py``: ``'int' object has no attribute 'to'``). The shim adds
   ``i = i`` as the first statement of such a loop body before the interpreter's own AST
   rewrite, which turns every assignment into ``interpreter_semantic.to_tensor(value)``: an
   int32 tensor (int64 beyond 2**31), the compiled type. ``tl.static_range`` loops stay
   Python ints (they are constexpr when compiled).
3. Scalar arguments: compiled Triton passes a Python float argument as an fp32 scalar
   (``mangle_type(1e-6) == "fp32"``); the interpreter's ``_implicit_cvt`` converts ints and
   bools to tensors but leaves floats as Python floats (Liger-Kernel 0.8.5
   ``liger_kernel/ops/rms_norm.py``: ``'float' object has no attribute 'to'``). The shim
   converts a float argument to the fp32 scalar tensor the compiled kernel receives.
4. libdevice: ``triton.language.extra.libdevice`` functions are stubs (``def rsqrt(arg0): ...``)
   that the compiler maps to the backend's library; the interpreter has no mapping
   (``create_extern_elementwise`` raises, and a stub called directly returns None: Liger
   0.8.5 ``rms_norm.py`` stores ``rstd = rsqrt(...)`` = None). For the 15 functions
   ``tl.math`` also has (rsqrt, exp, exp2, log, log2, sqrt, sqrt_rn, div_rn, fma, erf, sin,
   cos, abs, floor, ceil), the shim routes the libdevice name to the interpreter's own
   ``tl.math`` implementation (NumPy in the operand's precision), the same substitution
   the interpreter makes for every ``tl.math`` call; on a GPU the two differ by the library's
   last-ulp accuracy only. ``tanh`` (Liger 0.8.5 ``liger_kernel/ops/geglu.py``), which
   ``tl.math`` lacks, is routed to NumPy's ``tanh`` on the operand, in its precision: what the
   interpreter's ``unary_op`` does for ``exp`` (``create_exp = unary_op(arg, np.exp)``). Other
   libdevice functions stay unsupported (the kernel fails, naming the stub).

5. Import order: ``@triton.jit`` reads ``TRITON_INTERPRET`` when it decorates, so a kernel (or
   Triton's own helpers, ``tl.cdiv``) decorated before the variable was set is a compiled-mode
   ``JITFunction``, which cannot run without a GPU ("Cannot call @triton.jit'd outside of the
   scope of a kernel"); other libraries import triton first (transformers' Mixtral module
   does). The shim makes ``JITFunction.run`` (a launch) and ``JITFunction.__call__`` (a call
   from a kernel) delegate to an ``InterpretedFunction`` of the same Python function, which is
   what ``triton.jit`` returns when the variable is set (``triton/runtime/jit.py`` ``jit``).

None of them changes a kernel's operations or their order: they give the interpreter the
compiled types, and libdevice calls the interpreter's tl.math functions.

Not shimmed, so reported unsupported under the interpreter: bfloat16 arithmetic. The
interpreter stores bfloat16 as uint16 bit patterns and its ``tl.dot`` (``create_dot``),
elementwise ops (``binary_op``) and reductions compute on the bits (triton-lang/triton#11584,
closed "we just don't support it yet"; Triton's debugging guide: "It does not support
operations on bfloat16 numeric types"): a bfloat16 ``tl.dot`` of values in [-2, 2] gives
~1e10. Emulating bfloat16 would be a second implementation of Triton's arithmetic, not a
shim. Also: the interpreter's float32 ``tl.dot`` is IEEE float32 (``create_dot`` ignores
``input_precision``), while on an NVIDIA GPU the default is TF32 (10-bit mantissa inputs):
a float32 kernel's verdict here is for its arithmetic with IEEE dots.
A kernel that would need more (a different algorithm, a dtype it rejects) is reported
unsupported by its adapter, with the reason. :func:`install` is a no-op when
``torch.cuda.is_available()`` (the kernel runs compiled, natively) and sets
``TRITON_INTERPRET=1`` otherwise; it must run before the kernels' modules are imported
(``triton.jit`` reads the variable when it decorates).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import zlib

import numpy as np

from ._common import Unavailable, require

_STATE = {"installed": False}


def interpreted() -> bool:
    """True when Triton kernels run under the interpreter (no CUDA device)."""
    import torch

    return not torch.cuda.is_available()


def config_choice() -> str:
    mode = os.environ.get("REFIMPL_TRITON_CONFIG", "spread")
    if mode not in ("spread", "first") and not mode.lstrip("-").isdigit():
        raise ValueError(f"REFIMPL_TRITON_CONFIG: expected 'spread', 'first' or a config index, got {mode!r}")
    return mode


def _pick(configs, key, mode):
    if len(configs) <= 1:
        return list(configs)
    if mode == "first":
        i = 0
    elif mode == "spread":
        i = zlib.crc32(repr(key).encode()) % len(configs)
    else:
        i = int(mode) % len(configs)
    return [configs[i]]


def _install_autotuner():
    from triton.runtime.autotuner import Autotuner

    original = Autotuner.prune_configs

    def prune_configs(self, kwargs):
        pruned = original(self, kwargs)
        args = {**(self.nargs or {}), **kwargs}
        key = tuple(args[k] for k in self.keys if k in args) + tuple(
            str(a.dtype) for k, a in args.items() if k in self.arg_names and hasattr(a, "dtype"))
        return _pick(pruned, key, config_choice())

    prune_configs.__doc__ = "refimpl shim (properties/peers/triton_shims.py): one config, chosen without timing."
    Autotuner.prune_configs = prune_configs


def _loop_over_range(node: ast.For) -> bool:
    it = node.iter
    if not (isinstance(it, ast.Call) and isinstance(node.target, ast.Name)):
        return False
    f = it.func
    return (isinstance(f, ast.Name) and f.id == "range") or (isinstance(f, ast.Attribute) and f.attr == "range")


def _install_loop_indices():
    from triton.runtime import interpreter

    transformer = interpreter.FunctionRewriter.ast_transformer

    def visit_For(node):
        if _loop_over_range(node):  # i = i: rewritten by visit_Assign into to_tensor(i), the compiled int32
            name = node.target.id
            node.body.insert(0, ast.copy_location(ast.Assign(
                targets=[ast.Name(id=name, ctx=ast.Store())], value=ast.Name(id=name, ctx=ast.Load())), node))
        return transformer.generic_visit(node)

    transformer.visit_For = visit_For


def _install_float_scalars():
    from triton.runtime import interpreter

    original = interpreter._implicit_cvt
    tl = interpreter.tl

    def implicit_cvt(arg):
        if isinstance(arg, float):  # compiled: mangle_type(float) == "fp32"
            return tl.tensor(interpreter.TensorHandle(np.array([arg], dtype=np.float32), tl.float32), tl.float32)
        return original(arg)

    interpreter._implicit_cvt = implicit_cvt


def _install_jit_reroute():
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    interpreted = {}

    def as_interpreted(self):
        if self.fn not in interpreted:
            interpreted[self.fn] = InterpretedFunction(self.fn)
        return interpreted[self.fn]

    def run(self, *args, grid, warmup, **kwargs):
        return as_interpreted(self).run(*args, grid=grid, warmup=warmup, **kwargs)

    def call(self, *args, **kwargs):
        return as_interpreted(self)(*args, **kwargs)

    JITFunction.run, JITFunction.__call__ = run, call


_LIBDEVICE = ("abs", "ceil", "cos", "div_rn", "erf", "exp", "exp2", "floor", "fma", "log", "log2", "rsqrt",
              "sin", "sqrt", "sqrt_rn")


#: libdevice functions tl.math lacks, computed as the interpreter computes its own unary ops
_LIBDEVICE_NUMPY = {"tanh": np.tanh}


def _install_libdevice():
    import importlib

    import triton.language as tl

    def routed(name):
        def fn(*args, **kwargs):  # looked up at call time: tl.math is patched while a kernel runs
            return getattr(tl.math, name)(*args, **kwargs)

        fn.__name__ = name
        fn.__doc__ = f"refimpl shim (properties/peers/triton_shims.py): libdevice.{name} -> tl.math.{name}"
        return fn

    def numpy_unary(name, op):
        def fn(x):  # the interpreter's unary_op: TensorHandle(op(data), dtype), here for a function tl.math lacks
            from triton.runtime.interpreter import TensorHandle

            return tl.tensor(TensorHandle(op(x.handle.data), x.handle.dtype.scalar), x.type)

        fn.__name__ = name
        fn.__doc__ = f"refimpl shim (properties/peers/triton_shims.py): libdevice.{name} -> numpy.{name}"
        return fn

    for mod in ("triton.language.extra.libdevice", "triton.language.extra.cuda.libdevice"):
        try:
            lib = importlib.import_module(mod)
        except ImportError:
            continue
        for name in _LIBDEVICE:
            if hasattr(lib, name) and hasattr(tl.math, name):
                setattr(lib, name, routed(name))
        for name, op in _LIBDEVICE_NUMPY.items():
            if hasattr(lib, name) and not hasattr(tl.math, name):
                setattr(lib, name, numpy_unary(name, op))


def install() -> bool:
    """Apply the four shims once when no GPU is present; True when the interpreter is in use.

    Call it before importing the kernels' modules where possible (their functions are then
    ``InterpretedFunction`` from the start); shim 5 covers modules imported earlier."""
    if not interpreted():
        return False
    os.environ["TRITON_INTERPRET"] = "1"
    if not _STATE["installed"]:
        _install_jit_reroute()
        _install_autotuner()
        _install_loop_indices()
        _install_float_scalars()
        _install_libdevice()
        _STATE["installed"] = True
    return True


def setup() -> bool:
    """For an adapter factory: torch and triton importable, shims installed (no GPU); True when
    interpreted. Raises :class:`Unavailable` with the reason otherwise."""
    require("torch", extra="triton")
    if importlib.util.find_spec("triton") is None:
        raise Unavailable("unavailable: cannot import triton; pip install -e '.[triton]'")
    return install()
