"""Shared by the MoE peer adapters: build a refimpl ``Routing`` from a library's outputs,
and an adapter with no refimpl fallback (every method not supplied is None)."""

from __future__ import annotations

import numpy as np

from refimpl.moe.router import RouteOptions, Routing

from ..core import Unsupported
from ..moe import MOE_KIND, MoEAdapter
from ._common import make

ROUTE_KEYWORDS = ("normalize", "capacity", "drop_order", "seed", "padding_mask")


def routing(probs, indices, gates, kept, position, capacity, counts, normalize, drop_order) -> Routing:
    T = np.shape(indices)[0]
    return Routing(probs=np.asarray(probs, np.float64), indices=np.asarray(indices, np.int64),
                   gates=np.asarray(gates, np.float64), kept=np.asarray(kept, bool),
                   position=np.asarray(position, np.int64), capacity=capacity,
                   counts=np.asarray(counts, np.int64), token_mask=np.ones(T, bool),
                   options=RouteOptions(normalize=normalize, capacity=capacity, drop_order=drop_order))


def option_values(options) -> dict:
    """The declinable option values of a route call: capacity "none" | "zero" | "finite",
    normalize and drop_order as given."""
    cap = options.get("capacity")
    return {"capacity": "none" if cap is None else ("zero" if cap == 0 else "finite"),
            "normalize": options.get("normalize"), "drop_order": options.get("drop_order")}


def check_options(adapter_name, declines, options, allowed_keys=ROUTE_KEYWORDS):
    """Raise Unsupported for a keyword the library has no counterpart for, or a declined value."""
    extra = sorted(set(options) - set(allowed_keys))
    if extra:
        raise Unsupported(f"{adapter_name}: no counterpart for {extra}")
    if options.get("padding_mask") is not None:
        raise Unsupported(f"{adapter_name}: no padding mask")
    for key, val in option_values(options).items():
        if val in declines.get(key, ()):
            raise Unsupported(f"{adapter_name}: declines {key}={val!r}")


def moe_adapter(**fields) -> MoEAdapter:
    """A MoEAdapter whose every method is None unless given (no refimpl fallback)."""
    methods = {m: None for m in MOE_KIND.methods}
    return make(MoEAdapter, **{**methods, **fields})
