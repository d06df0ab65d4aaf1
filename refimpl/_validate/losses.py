"""The losses' checks (``refimpl.losses``: cross-entropy, language-model and classification losses,
balance options, the collapse simulation).

Imports only NumPy and its siblings."""

from __future__ import annotations

import numpy as np

from .arrays import as_float_array, same_shape
from .scalars import count, fail, instance
from .layers import sequence_of


def token_array(x, name: str, ndim: int, doc: str) -> np.ndarray:
    """An integer array (bool, float and object rejected) of rank ``ndim`` (``doc`` names the axes), int64."""
    t = np.asarray(x) if not isinstance(x, (str, bytes)) and x is not None else np.asarray(object())
    if t.dtype == np.bool_ or not np.issubdtype(t.dtype, np.integer):
        fail(name, f"an integer array {doc}", f"dtype {t.dtype}", error=TypeError)
    if t.ndim != ndim:
        fail(name, f"{ndim} dimensions {doc}", f"shape {t.shape}")
    if t.dtype == np.uint64 and t.size and t.max() >= 2**63:
        fail(name, "entries below 2**63", str(t.max()))
    return t.astype(np.int64)


def token_ids(x, name: str, V: int) -> np.ndarray:
    """Token ids (B, L) in [0, V) (they index an embedding)."""
    t = token_array(x, name, 2, "(B, L)")
    if t.size and (t.min() < 0 or t.max() >= V):
        fail(name, f"token ids in [0, {V})", f"values in [{t.min()}, {t.max()}]")
    return t


def target_ids(t: np.ndarray, V: int, ignore_index: int, name: str) -> np.ndarray:
    """Targets in [0, V) or ``ignore_index``."""
    bad = (t != ignore_index) & ((t < 0) | (t >= V))
    if bad.any():
        fail(name, f"values in [0, V) = [0, {V}) or ignore_index = {ignore_index}", str(int(t[bad].flat[0])))
    return t


def ignore_index_arg(ignore_index) -> int:
    """ignore_index: any int64 value (a token id never used; -100 by default)."""
    return count(ignore_index, "ignore_index", minimum=-(2**62))


def ce_inputs(logits, targets, ignore_index) -> tuple:
    """cross_entropy's (z (N, V) with V >= 1, targets (N,) in [0, V) or ignore_index, ignore_index)."""
    z = as_float_array(logits, "logits", ndim=2)
    N, V = z.shape
    if V < 1:
        fail("logits", "at least one class (V >= 1)", f"shape {z.shape}")
    ignore_index = ignore_index_arg(ignore_index)
    t = token_array(targets, "targets", 1, "(N,)")
    same_shape(t, (N,), "targets")
    return z, target_ids(t, V, ignore_index, "targets"), ignore_index


def lm_logits(logits, labels, name: str = "tokens") -> tuple:
    """(logits (B, L, V) with V >= 1, labels (B, L) of the same B, L)."""
    z = as_float_array(logits, "logits", ndim=3, shape_doc="(B, L, V)", min_size={2: 1})
    lab = token_array(labels, name, 2, "(B, L)")
    if lab.shape != z.shape[:2]:
        fail(f"logits, {name}", f"logits (B, L, V) and {name} (B, L) to agree", f"{z.shape} and {lab.shape}")
    return z, lab


def class_logits(logits) -> np.ndarray:
    """logits (..., V) with V >= 1."""
    z = as_float_array(logits, "logits")
    if z.ndim < 1 or z.shape[-1] < 1:
        fail("logits", "shape (..., V) with V >= 1", str(z.shape))
    return z


def balance_options(options, what: str):
    """``training_loss``'s balance_options: None or a dict of balance_loss keywords without ``alpha``."""
    if options is None:
        return {}
    instance(options, "balance_options", dict, what)
    if "alpha" in options:
        fail("balance_options", "no 'alpha' (alpha is fixed to 1; aux_coef is the coefficient)",
             f"alpha = {options['alpha']}")
    return dict(options)


def layer_list(x, name: str) -> list:
    """One entry per MoE layer: a sequence (not a str, bytes or an array)."""
    return sequence_of(x, name, "a sequence (one entry per MoE layer)", excluded=(np.ndarray,))


def simulation_finite(ok: bool, lr: float, step: int) -> None:
    """The collapse simulation's weights finite at ``step`` (else the rate ``lr`` is too large)."""
    if not ok:
        fail("lr", "a rate at which the simulation stays finite",
             f"{lr}: the weights overflowed at step {step}; use a smaller lr")
