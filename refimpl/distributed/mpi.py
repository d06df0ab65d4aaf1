"""The rank programs on real MPI ranks (mpi4py): a thin driver, no algorithm of its own.

``run_program(program)`` drives one rank's generator (see ``messages.py``):
for each ``Exchange`` it posts one non-blocking send per message to another
rank (``comm.isend``, pickled; the round number is the tag, so rounds never
mix), delivers a self-send locally, receives one message from each named
source (``comm.recv``) and waits for its sends. The simulator
(``simulate.run``) drives the very same generators in one process, so a run
on ranks and a simulated run compute bit-for-bit the same numbers.

mpi4py is imported lazily; ``available()`` says whether it can be. Install:
``pip install -e ".[mpi]"`` (mpi4py and the PyPI ``mpich`` wheel, which
brings ``mpiexec``). Launch: ``mpiexec -n 4 python -m properties.mpi_demo`` (every
distributed property's check on real ranks).
MPICH needs no extra flags for more ranks than cores or as root; Open MPI's
``mpiexec`` needs ``--oversubscribe`` for more ranks than cores and
``--allow-run-as-root`` (or OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1) as root.
"""

from __future__ import annotations

from .._validate.distributed import communicator_size, exchange
from .messages import Exchange
from .simulate import Log


def available() -> bool:
    """True if mpi4py imports (an MPI library is then loadable)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def world():
    from mpi4py import MPI

    return MPI.COMM_WORLD


def run_program(program, comm=None, log: Log | None = None):
    """Drive this rank's generator ``program`` over ``comm`` (default COMM_WORLD); return its result.

    ``log`` (a ``simulate.Log`` of comm.size ranks) records what this rank sends.
    """
    comm = world() if comm is None else comm
    rank = comm.Get_rank()
    value, rnd = None, 0
    while True:
        try:
            ex = program.send(value)
        except StopIteration as stop:
            return stop.value
        exchange(ex, Exchange, rank, "make_program")
        requests = []
        for dest, msg in ex.sends.items():
            if dest != rank:
                requests.append(comm.isend(msg, dest=dest, tag=rnd))
            if log is not None:
                log.record(rnd, rank, dest, msg)
        value = {}
        for src in ex.recv_from:
            if src == rank:
                if rank not in ex.sends:
                    raise RuntimeError(f"round {rnd}: rank {rank} expects a message from itself but sent none")
                value[src] = ex.sends[rank]
            else:
                value[src] = comm.recv(source=src, tag=rnd)
        for req in requests:
            req.wait()
        rnd += 1


def driver(comm=None):
    """A driver for the entry points (``ring.ring_attention(..., driver=mpi.driver())``): every rank calls
    the entry point with the same arguments, runs only its own program, and gets every rank's result
    (collected with ``allgather`` after the algorithm, outside the counted communication). ``log`` is
    filled with every rank's sent messages."""

    def drive(make_program, num_ranks: int, log: Log | None = None) -> list:
        c = world() if comm is None else comm
        rank = c.Get_rank()
        communicator_size(c.Get_size(), num_ranks)
        own = Log(num_ranks)
        result = run_program(make_program(rank), c, own)
        results = c.allgather(result)
        sent = c.allgather(own.sent[rank])
        if log is not None:
            for r in range(num_ranks):
                log.sent[r].extend(sent[r])
        return results

    return drive


def library_version() -> str:
    """The MPI library's own version line (e.g. 'MPICH Version: 5.0.2')."""
    from mpi4py import MPI

    return " ".join(MPI.Get_library_version().split()[:3])
