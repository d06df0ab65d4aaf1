"""Run P rank programs single-process, in lockstep, counting every message.

Each round, every unfinished rank yields an ``Exchange``; the simulator
delivers ``sends[dest]`` to ``dest`` and resumes each rank with the messages
from the sources it named. A rank that names a source which sent it nothing
(or is sent a message it did not ask for) is a protocol error: a deadlock or a
lost message on real ranks, so it raises here too. All ranks must finish in
the same round (the programs here are bulk-synchronous).

``Log`` records, per round, the size of every message a rank sent to another
rank (self-sends are local copies and are not counted), so tests can compare
the counted volume with the formulas of ``refimpl.distributed.comm_volume``.
"""

from __future__ import annotations

import dataclasses
import inspect

from .._validate import count
from .._validate.distributed import (callable_arg, deliveries, destination, every_rank_exchanges, exchange, rank_log,
                                     rank_programs)
from .messages import Exchange, Size, message_size

MAX_RANKS = 2**16
"""Most simulated ranks (each is a Python generator driven in lockstep)."""


@dataclasses.dataclass
class Log:
    """Counted communication. ``sent[r]`` is the list of (round, dest, Size) rank r sent."""

    num_ranks: int
    sent: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.num_ranks = count(self.num_ranks, "num_ranks", minimum=1, maximum=MAX_RANKS)
        self.sent = [[] for _ in range(self.num_ranks)]

    def record(self, rnd: int, src: int, dest: int, msg) -> None:
        if src != dest:
            self.sent[src].append((rnd, dest, message_size(msg)))

    def volume(self, rank: int) -> Size:
        """Total elements rank ``rank`` sent to other ranks."""
        rank = count(rank, "rank", maximum=self.num_ranks - 1)
        return sum((s for _, _, s in self.sent[rank]), Size())

    def messages(self, rank: int) -> int:
        """Number of messages rank ``rank`` sent to other ranks."""
        rank = count(rank, "rank", maximum=self.num_ranks - 1)
        return len(self.sent[rank])


class ProtocolError(ValueError, RuntimeError):
    """The rank programs broke the exchange protocol (a deadlock or a lost message on real ranks):
    a ValueError naming the programs (catch that); also a RuntimeError, what earlier versions raised."""


def run(programs: list, log: Log | None = None) -> list:
    """Drive the generators ``programs`` (one per rank) to completion; return their results.

    ``log``: a ``Log`` of ``len(programs)`` ranks, or None. A protocol error of the programs
    (a deadlock or a lost message on real ranks) raises ``ProtocolError`` (a ValueError)."""
    programs = rank_programs(programs, MAX_RANKS, inspect.isgenerator)
    return _run(programs, _check_log(log, len(programs)), "programs")


def _run(programs: list, log: Log, names: str) -> list:
    """``run`` of checked programs and log; ``names``: the caller's arguments the programs come from (drive:
    make_program, num_ranks), named by a protocol error."""
    P = len(programs)
    results = [None] * P
    pending = {}
    for r, prog in enumerate(programs):
        pending[r] = _advance(prog, None, r, results)
    rnd = 0
    while any(x is not None for x in pending.values()):
        live = {r: ex for r, ex in pending.items() if ex is not None}
        every_rank_exchanges(live, P, names, rnd, ProtocolError)
        inbox = {r: {} for r in range(P)}
        for src, ex in live.items():
            exchange(ex, Exchange, src, names)
            for dest, msg in ex.sends.items():
                destination(dest, P, src, names, rnd, ProtocolError)
                inbox[dest][src] = msg
                log.record(rnd, src, dest, msg)
        for dest, ex in live.items():
            deliveries(inbox[dest], ex.recv_from, dest, names, rnd, ProtocolError)
            pending[dest] = _advance(programs[dest], {s: inbox[dest][s] for s in ex.recv_from}, dest, results)
        rnd += 1
    return results


def drive(make_program, num_ranks: int, log: Log | None = None) -> list:
    """The simulated driver: ``run([make_program(r) for r in range(num_ranks)], log)``.

    Entry points (``ring.ring_attention`` ...) take a ``driver`` with this
    signature; ``refimpl.distributed.mpi.driver()`` runs the same programs on MPI ranks.
    """
    callable_arg(make_program, "make_program", "a callable rank -> rank program")
    num_ranks = count(num_ranks, "num_ranks", minimum=1, maximum=MAX_RANKS)
    log = _check_log(log, num_ranks, "num_ranks")
    programs = rank_programs([make_program(r) for r in range(num_ranks)], MAX_RANKS, inspect.isgenerator)
    return _run(programs, log, "make_program, num_ranks")


def resolve(driver):
    """``driver``, or the simulated one when None."""
    callable_arg(driver, "driver", "None (simulated) or a driver such as refimpl.distributed.mpi.driver()",
                 allow_none=True)
    return drive if driver is None else driver


def _check_log(log, P: int, ranks_from: str = "programs"):
    """``log``, or a new Log of P ranks when None; ``ranks_from`` names the argument that sets P."""
    if log is None:
        return Log(P)
    rank_log(log, P, ranks_from, Log)
    return log


def _advance(prog, value, rank, results):
    try:
        return prog.send(value)
    except StopIteration as stop:
        results[rank] = stop.value
        return None


__all__ = ["Log", "drive", "run"]
