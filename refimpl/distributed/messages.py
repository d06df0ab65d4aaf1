"""How a rank program talks: one ``Exchange`` per communication round.

A *rank program* is a generator, one per rank, that computes on its own shard
and, whenever it must communicate, yields

    Exchange(sends={dest: message, ...}, recv_from=(source, ...))

and is resumed with ``{source: message}`` for exactly the sources it named.
It returns its result (``StopIteration.value``). The computation between two
yields is a call to a pure function of the rank's state and the messages it
received; the program holds no other state. The same generator runs

* single-process, every rank simulated in lockstep (``refimpl.distributed.simulate``),
* on real MPI ranks (``refimpl.distributed.mpi``: one isend per message, one
  recv per named source),

so both execute the very same algorithm. A round where every rank yields is
one collective step (a ring shift, an all-to-all); ``sends`` to oneself are
delivered locally and are not communication.

Messages are frozen dataclasses of NumPy arrays and ints. ``message_size``
counts what a message carries: ``floats`` (payload: activations, K/V,
gradients) and ``ints`` (metadata: positions, expert ids, slots).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .._validate.distributed import distinct_sources, message_kind


@dataclasses.dataclass(frozen=True)
class Exchange:
    """One communication round of one rank: messages to send and sources to receive from."""

    sends: dict
    recv_from: tuple

    def __post_init__(self):
        object.__setattr__(self, "recv_from", distinct_sources(tuple(int(s) for s in self.recv_from)))


@dataclasses.dataclass(frozen=True)
class Size:
    floats: int = 0
    ints: int = 0

    def __add__(self, other: "Size") -> "Size":
        return Size(self.floats + other.floats, self.ints + other.ints)


def message_size(msg) -> Size:
    """Elements a message carries: float arrays count as ``floats``, int arrays and ints as ``ints``."""
    kind = message_kind(msg)
    if kind == "none":
        return Size()
    if kind == "array":
        return Size(floats=msg.size) if np.issubdtype(msg.dtype, np.floating) else Size(ints=msg.size)
    if kind == "int":
        return Size(ints=1)
    if kind == "dataclass":
        return sum((message_size(getattr(msg, f.name)) for f in dataclasses.fields(msg)), Size())
    return sum((message_size(m) for m in msg), Size())  # a tuple or list
