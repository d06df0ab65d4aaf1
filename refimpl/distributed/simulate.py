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

from .._validate import count, instance
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
    return _run(programs, log, "programs")


def _run(programs, log, names: str) -> list:
    """``run``; ``names``: the caller's arguments the programs come from (drive: make_program, num_ranks)."""
    if isinstance(programs, (str, bytes)) or not isinstance(programs, (list, tuple)):
        raise TypeError(f"programs: expected a list of generators (one rank program per rank), "
                        f"got {type(programs).__name__}")
    if not 1 <= len(programs) <= MAX_RANKS:
        raise ValueError(f"programs: expected 1 to {MAX_RANKS} rank programs, got {len(programs)}")
    for r, prog in enumerate(programs):
        if not inspect.isgenerator(prog):
            raise TypeError(f"programs[{r}]: expected a generator (a rank program), got {type(prog).__name__}")
    P = len(programs)
    log = _check_log(log, P)
    results = [None] * P
    pending = {}
    for r, prog in enumerate(programs):
        pending[r] = _advance(prog, None, r, results)
    rnd = 0
    while any(x is not None for x in pending.values()):
        live = {r: ex for r, ex in pending.items() if ex is not None}
        if len(live) != P:
            raise ProtocolError(f"{names}: expected every rank to exchange in each round, got ranks "
                                f"{sorted(set(range(P)) - set(live))} finished while others wait (round {rnd})")
        inbox = {r: {} for r in range(P)}
        for src, ex in live.items():
            if not isinstance(ex, Exchange):
                raise TypeError(f"{names}: expected rank {src}'s program to yield Exchange objects, got "
                                f"{type(ex).__name__}")
            for dest, msg in ex.sends.items():
                if not 0 <= dest < P:
                    raise ProtocolError(f"{names}: expected messages to ranks 0..{P - 1}, got rank {src} sending to "
                                        f"rank {dest} (round {rnd})")
                inbox[dest][src] = msg
                log.record(rnd, src, dest, msg)
        for dest, ex in live.items():
            if set(inbox[dest]) != set(ex.recv_from):
                raise ProtocolError(
                    f"{names}: expected rank {dest} to be sent messages by {sorted(ex.recv_from)}, "
                    f"got messages by {sorted(inbox[dest])} (round {rnd})"
                )
            pending[dest] = _advance(programs[dest], {s: inbox[dest][s] for s in ex.recv_from}, dest, results)
        rnd += 1
    return results


def drive(make_program, num_ranks: int, log: Log | None = None) -> list:
    """The simulated driver: ``run([make_program(r) for r in range(num_ranks)], log)``.

    Entry points (``ring.ring_attention`` ...) take a ``driver`` with this
    signature; ``refimpl.distributed.mpi.driver()`` runs the same programs on MPI ranks.
    """
    if not callable(make_program):
        raise TypeError(f"make_program: expected a callable rank -> rank program, got {type(make_program).__name__}")
    num_ranks = count(num_ranks, "num_ranks", minimum=1, maximum=MAX_RANKS)
    _check_log(log, num_ranks, "num_ranks")
    return _run([make_program(r) for r in range(num_ranks)], log, "make_program, num_ranks")


def resolve(driver):
    """``driver``, or the simulated one when None."""
    if driver is not None and not callable(driver):
        raise TypeError(f"driver: expected None (simulated) or a driver such as refimpl.distributed.mpi.driver(), "
                        f"got {type(driver).__name__}")
    return drive if driver is None else driver


def _check_log(log, P: int, ranks_from: str = "programs"):
    """``log``, or a new Log of P ranks when None; ``ranks_from`` names the argument that sets P."""
    if log is None:
        return Log(P)
    instance(log, "log", Log, "refimpl.distributed.simulate.Log or None")
    if log.num_ranks != P:
        raise ValueError(f"log, {ranks_from}: expected a Log of P = {P} ranks ({ranks_from}), "
                         f"got one of {log.num_ranks}")
    return log


def _advance(prog, value, rank, results):
    try:
        return prog.send(value)
    except StopIteration as stop:
        results[rank] = stop.value
        return None


__all__ = ["Log", "drive", "run"]
