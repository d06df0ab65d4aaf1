"""Accounting arguments: transformer configurations and their counts (``refimpl.accounting``,
``refimpl.model_configs``), roofline costs (``refimpl.roofline``), slow-memory traffic
(``refimpl.io_accounting``), preset registries (``refimpl.preset_registry``) and the inputs of the
assertion helpers (``refimpl.testing``).

Classes (``Source``, the registry's error class) are passed in by the calling module: this package
stays a leaf."""

from __future__ import annotations

import numpy as np

from .budget import FLOAT_MAX
from .scalars import choice, count, fail, finite_result, flag, plain, real_number


def exact_count(x, name: str, *, allow_zero: bool = False) -> int:
    """A count of exact Python int arithmetic (no upper bound): >= 1, or >= 0 with ``allow_zero``."""
    return count(x, name, minimum=0 if allow_zero else 1, maximum=None)


# ---------------------------------------------------------------------------
# transformer configurations (refimpl.accounting, refimpl.model_configs)


def transformer_config(cfg) -> None:
    """The fields of a ``refimpl.accounting.TransformerConfig``: sizes >= 1 (counts of optional parts
    >= 0), ffn_kind "mlp" | "glu", flags, n_kv_heads dividing n_heads, head_dim explicit unless
    n_heads divides d_model, top_k <= num_experts."""
    for name in ("d_model", "n_layers", "n_heads", "d_ff", "num_experts", "top_k"):
        exact_count(getattr(cfg, name), name)
    for name in ("n_shared_experts", "vocab_size", "norms_per_layer"):
        exact_count(getattr(cfg, name), name, allow_zero=True)
    choice(cfg.ffn_kind, "ffn_kind", ("mlp", "glu"))
    for name in ("tied_embeddings", "final_norm", "bias"):
        flag(getattr(cfg, name), name)
    if cfg.head_dim is not None:
        exact_count(cfg.head_dim, "head_dim")
    if cfg.n_kv_heads is not None and cfg.n_heads % exact_count(cfg.n_kv_heads, "n_kv_heads"):
        fail("n_kv_heads", f"a divisor of n_heads = {cfg.n_heads}", f"{cfg.n_kv_heads}")
    if cfg.head_dim is None and cfg.d_model % cfg.n_heads:
        fail("head_dim", f"an explicit head_dim when n_heads = {cfg.n_heads} does not divide d_model = {cfg.d_model}",
             "None")
    if cfg.top_k > cfg.num_experts:
        fail("top_k", f"<= num_experts={cfg.num_experts}", f"{cfg.top_k}")


def kv_heads(n_heads, n_kv_heads) -> tuple[int, int]:
    """(n_heads, n_kv_heads): counts >= 1, n_kv_heads a divisor of n_heads."""
    h, g = exact_count(n_heads, "n_heads"), exact_count(n_kv_heads, "n_kv_heads")
    if g > h or h % g:
        fail("n_kv_heads", f"a divisor of n_heads={h}", f"{g}")
    return h, g


def moved_bytes(nbytes: float, names: str) -> float:
    """The bytes an operation moves, for its arithmetic intensity: an empty problem (0 bytes) has none,
    an error naming the sizes that made it empty."""
    if nbytes == 0:
        fail(names, "a problem that moves data (bytes > 0)", "0 bytes")
    return nbytes


def byte_total(n, per, name: str, what: str) -> float:
    """n * per bytes as a float (per > 0 a real, ``name``); beyond float64 range an error, never inf."""
    per = real_number(per, name, minimum=0.0, min_open=True)
    try:
        total = float(n) * per
    except OverflowError:  # an int count beyond float64
        total = float("inf")
    return finite_result(total, what, name)


def flop_count(flops) -> int:
    """A FLOP count: an int >= 0 (exact, unbounded) within float64 range (it is divided)."""
    f = count(flops, "flops", maximum=None)
    if f > int(FLOAT_MAX):  # compared as ints: float(f) itself overflows from 2**1024 on
        fail("flops", "a count within float64 range", f"an int of {f.bit_length()} bits")
    return f


# ---------------------------------------------------------------------------
# slow-memory traffic (refimpl.io_accounting)


def io_problem(Lq, Lk, D, Dv, block_q, block_k, batch, heads_q, heads_kv) -> tuple:
    """(Lq, Lk, D, Dv, block_q, block_k, batch, heads_q, heads_kv): lengths >= 0, the rest >= 1,
    Dv = D and heads_kv = heads_q when None, heads_q a multiple of heads_kv."""
    Lq, Lk = count(Lq, "Lq"), count(Lk, "Lk")
    D = count(D, "D", minimum=1)
    Dv = D if Dv is None else count(Dv, "Dv", minimum=1)
    block_q, block_k = count(block_q, "block_q", minimum=1), count(block_k, "block_k", minimum=1)
    batch, heads_q = count(batch, "batch", minimum=1), count(heads_q, "heads_q", minimum=1)
    heads_kv = heads_q if heads_kv is None else count(heads_kv, "heads_kv", minimum=1)
    if heads_q % heads_kv:
        fail("heads_q, heads_kv", "heads_q a multiple of heads_kv", f"{heads_q} and {heads_kv}")
    return Lq, Lk, D, Dv, block_q, block_k, batch, heads_q, heads_kv


def tile_grid(computed, T_r: int, T_c: int):
    """``computed``: None (every tile pair) or a bool (T_r, T_c) grid."""
    if computed is None:
        return None
    grid = np.asarray(computed)
    if grid.dtype != np.bool_ or grid.shape != (T_r, T_c):
        fail("computed", f"a bool array of shape (T_r, T_c) = {(T_r, T_c)}", f"{grid.dtype} {grid.shape}")
    return grid


# ---------------------------------------------------------------------------
# preset registries (refimpl.preset_registry)


def registry_entry(name, source, registered, source_cls: type) -> None:
    """One (name, preset, source) of a registry: a name not in ``registered`` yet, a ``source_cls`` source."""
    if name in registered:
        fail("name", "a name not registered yet", f"{name!r} twice")
    if not isinstance(source, source_cls):
        fail("source", "a refimpl.preset_registry.Source", type(source).__name__, error=TypeError)


def preset_name(name, presets: dict, argument: str, expected, error: type):
    """``name`` if it names one of ``presets`` (an unhashable name names none), else ``error`` (the
    registry's UnknownPreset) worded ``<argument>: expected <expected>, got <name>``; ``expected``:
    the text, or a function building it (called only on failure)."""
    try:
        known = name in presets
    except TypeError:  # an unhashable name
        known = False
    if not known:
        fail(argument, expected() if callable(expected) else expected, repr(name), error=error)
    return name


# ---------------------------------------------------------------------------
# assertion helpers (refimpl.testing)


def precision_name(precision, options: tuple) -> str:
    """One of ``options`` (the precisions a kernel is checked in), listed in the message."""
    if precision not in options:
        fail("precision", f"one of {', '.join(options)}", repr(plain(precision)))
    return precision


def float64_array(x, name: str) -> np.ndarray:
    """``x`` as a float64 ndarray: arrays, ml_dtypes arrays, anything with ``__array__``; torch tensors
    through ``.detach().cpu().double()``."""
    if x is None:
        fail(name, "an array", "None", error=TypeError)
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, any dtype
        x = x.detach().cpu().double().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        reason = str(e)
    fail(name, "an array of numbers", f"{type(x).__name__} ({reason})", error=TypeError)
