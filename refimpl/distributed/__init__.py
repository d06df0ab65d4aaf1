"""Distributed forms of attention and MoE, specified as rank programs (see messages.py).

    messages         the Exchange protocol of rank programs, message sizes
    sharding         sequence layouts (contiguous, zig-zag), the global mask
    ring             ring attention forward and backward (context parallelism)
    ulysses          all-to-all (DeepSpeed-Ulysses) sequence <-> head resharding
    expert_parallel  expert-parallel MoE: routing per rank, all-to-all dispatch/combine
    simulate         all ranks in one process, lockstep, counting messages
    comm_volume      communication volume per rank as formulas
    mpi              the same rank programs on real MPI ranks (needs mpi4py)
"""

from . import comm_volume, expert_parallel, ring, sharding, simulate, ulysses  # noqa: F401

__all__ = ["comm_volume", "expert_parallel", "ring", "sharding", "simulate", "ulysses"]
