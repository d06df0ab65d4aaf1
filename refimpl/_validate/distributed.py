"""Distributed arguments (``refimpl.distributed``): rank layouts, rank programs and their drivers, the
exchange protocol, communication-volume sizes and expert placement.

The classes these checks need (``Exchange``, ``Log``, ``Routing``, ``ProtocolError``...) are passed in
by the calling module: this package stays a leaf."""

from __future__ import annotations

import dataclasses

import numpy as np

from .arrays import as_float_array, index_array
from .scalars import _type, axis_index, count, fail, instance, positive_int


def rank_sequence(x, name: str, what: str) -> None:
    """``x`` a list or tuple (one entry per rank), else TypeError naming ``what`` was expected."""
    if not isinstance(x, (list, tuple)):
        fail(name, f"a {what}", _type(x), error=TypeError)


def rank_sizes(sizes, name: str, max_len: int) -> tuple:
    """A sequence of 1 to ``max_len`` non-negative ints (one per rank or chunk), as a tuple of ints."""
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__") or not hasattr(sizes, "__len__"):
        fail(name, "a sequence of non-negative ints", _type(sizes), error=TypeError)
    if not 1 <= len(sizes) <= max_len:
        fail(name, f"1 to {max_len} entries", f"{len(sizes)}")
    return tuple(positive_int(s, f"{name}[{i}]", allow_zero=True) for i, s in enumerate(sizes))


def zigzag_chunks(chunk_sizes, max_len: int) -> tuple:
    """2P chunk sizes (an even number of them) for a zig-zag layout."""
    sizes = rank_sizes(chunk_sizes, "chunk_sizes", max_len)
    if len(sizes) % 2:
        fail("chunk_sizes", "an even number 2P of chunks (zig-zag)", f"{len(sizes)}")
    return sizes


def layout(positions, L, max_ranks: int) -> tuple:
    """``positions``: 1 to ``max_ranks`` 1-D int arrays (one per rank) partitioning 0..L-1 (L = their
    total size when None), as int64."""
    rank_sequence(positions, "positions", "sequence of int arrays (one per rank)")
    if not 1 <= len(positions) <= max_ranks:
        fail("positions", f"1 to {max_ranks} ranks", f"{len(positions)}")
    out = tuple(index_array(p, f"positions[{r}]", ndim=1) for r, p in enumerate(positions))
    allpos = np.concatenate(out)
    L = allpos.size if L is None else L
    if allpos.size != L or not np.array_equal(np.sort(allpos), np.arange(L)):
        fail("positions", f"the ranks' positions to partition 0..{L - 1} exactly once",
             f"{allpos.size} positions with gaps, repeats or entries beyond it")
    return out


def rank_parts(parts, positions: tuple, axis) -> tuple:
    """``gather``'s parts: one float64 array per rank of ``positions`` (-inf passes), ``parts[r]``
    holding len(positions[r]) rows along ``axis`` and agreeing with parts[0] elsewhere; (parts, axis)."""
    rank_sequence(parts, "parts", "sequence of arrays (one per rank)")
    if len(parts) != len(positions):
        fail("parts", f"{len(positions)} arrays (one per rank of positions)", f"{len(parts)}")
    parts = [as_float_array(p, f"parts[{r}]", allow_neg_inf=True) for r, p in enumerate(parts)]
    axis = axis_index(axis, parts[0].ndim)
    for r, (p, pos) in enumerate(zip(parts, positions)):
        want = parts[0].shape[:axis] + (len(pos),) + parts[0].shape[axis + 1:]
        if p.shape != want:
            fail(f"parts[{r}]", f"shape {want} (len(positions[{r}]) rows along axis {axis})", f"{p.shape}")
    return parts, axis


def global_positions(i: np.ndarray, j: np.ndarray, L: int) -> None:
    """Query and key positions (checked index arrays) within [0, L)."""
    for x, name in ((i, "qpos"), (j, "kpos")):
        if x.size and int(x.max()) >= L:
            fail(name, f"global positions in [0, L) = [0, {L})", f"{int(x.max())}")


def one_sequence(Lq: int, Lk: int) -> None:
    """Context parallelism shards one sequence: Lq = Lk."""
    if Lq != Lk:
        fail("q, k", "equal lengths (context parallelism shards one sequence)", f"Lq = {Lq}, Lk = {Lk}")


def head_groups(H: int, P: int, name: str) -> int:
    """Ulysses: P (= len(positions)) divides the head count H of ``name``; returns H / P."""
    if H % P:
        fail(f"{name}, positions", f"a head count divisible by the number of ranks P = {P} (len(positions); "
                                   f"Ulysses)", f"{H} heads")
    return H // P


# ---------------------------------------------------------------------------
# rank programs, drivers and the exchange protocol (messages, simulate, mpi, ring)


def callable_arg(f, name: str, expected: str, *, allow_none: bool = False):
    """``f`` callable (or None with ``allow_none``), else TypeError ``<name>: expected <expected>, got <type>``."""
    if not (callable(f) or (allow_none and f is None)):
        fail(name, expected, _type(f), error=TypeError)
    return f


def rank_programs(programs, max_ranks: int, is_generator) -> list:
    """1 to ``max_ranks`` generators (``is_generator``: inspect.isgenerator), one rank program per rank."""
    rank_sequence(programs, "programs", "list of generators (one rank program per rank)")
    if not 1 <= len(programs) <= max_ranks:
        fail("programs", f"1 to {max_ranks} rank programs", f"{len(programs)}")
    for r, prog in enumerate(programs):
        if not is_generator(prog):
            fail(f"programs[{r}]", "a generator (a rank program)", _type(prog), error=TypeError)
    return list(programs)


def rank_log(log, P: int, ranks_from: str, log_cls: type) -> None:
    """A ``log_cls`` (simulate.Log) of P ranks; ``ranks_from`` names the argument that sets P."""
    instance(log, "log", log_cls, "refimpl.distributed.simulate.Log or None")
    if log.num_ranks != P:
        fail(f"log, {ranks_from}", f"a Log of P = {P} ranks ({ranks_from})", f"one of {log.num_ranks}")


def exchange(ex, exchange_cls: type, rank: int, names: str):
    """What a rank program yielded: an ``exchange_cls`` (messages.Exchange)."""
    if not isinstance(ex, exchange_cls):
        fail(names, f"rank {rank}'s program to yield Exchange objects", _type(ex), error=TypeError)
    return ex


def distinct_sources(recv_from: tuple) -> tuple:
    """An Exchange's ``recv_from``: each source at most once."""
    if len(set(recv_from)) != len(recv_from):
        fail("recv_from", "each source at most once", f"{recv_from}")
    return recv_from


def message_kind(msg) -> str:
    """What a message part is: "none", "array", "int", "dataclass" or "sequence" (else TypeError)."""
    if msg is None:
        return "none"
    if isinstance(msg, np.ndarray):
        return "array"
    if isinstance(msg, (bool, np.bool_, int, np.integer)):
        return "int"
    if dataclasses.is_dataclass(msg):
        return "dataclass"
    if isinstance(msg, (tuple, list)):
        return "sequence"
    fail("msg", "an ndarray, a number or a list/tuple/dict of them", _type(msg), error=TypeError)


def communicator_size(size: int, num_ranks) -> None:
    """An MPI driver runs on exactly num_ranks ranks."""
    if size != num_ranks:
        fail("num_ranks", f"the communicator's size {size}", f"{num_ranks}")


def every_rank_exchanges(live, P: int, names: str, rnd: int, error: type) -> None:
    """The protocol (bulk-synchronous programs): every rank yields in every round, else ``error``."""
    if len(live) != P:
        fail(names, "every rank to exchange in each round",
             f"ranks {sorted(set(range(P)) - set(live))} finished while others wait (round {rnd})", error=error)


def destination(dest, P: int, src: int, names: str, rnd: int, error: type) -> None:
    """The protocol: messages go to ranks 0..P-1, else ``error``."""
    if not 0 <= dest < P:
        fail(names, f"messages to ranks 0..{P - 1}", f"rank {src} sending to rank {dest} (round {rnd})", error=error)


def deliveries(senders, recv_from, dest: int, names: str, rnd: int, error: type) -> None:
    """The protocol: rank ``dest`` is sent messages by exactly the sources it named, else ``error``."""
    if set(senders) != set(recv_from):
        fail(names, f"rank {dest} to be sent messages by {sorted(recv_from)}",
             f"messages by {sorted(senders)} (round {rnd})", error=error)


# ---------------------------------------------------------------------------
# communication volume (comm_volume)


def exact_dims(**dims) -> list:
    """Problem sizes: ints >= 1 (exact Python ints, any size: the formulas are exact)."""
    return [count(v, n, minimum=1, maximum=None) for n, v in dims.items()]


def ring_volume_args(sizes, num_steps, B, Hkv, D, Dv, max_ranks: int) -> tuple:
    """(sizes, num_steps in 1..P, B, Hkv, D, Dv) of the ring volume formulas."""
    sizes = rank_sizes(sizes, "sizes", max_ranks)
    num_steps = count(num_steps, "num_steps", minimum=1, what="ring steps")
    if num_steps > len(sizes):  # a bound set by another argument: the message names both
        fail("num_steps, sizes", f"at most P = len(sizes) = {len(sizes)} ring steps", f"{num_steps}")
    return (sizes, num_steps, *exact_dims(B=B, Hkv=Hkv, D=D, Dv=Dv))


def ulysses_volume_args(sizes, B, Hq, Hkv, D, Dv, max_ranks: int) -> tuple:
    """(sizes, B, Hq, Hkv, D, Dv) of the Ulysses volume formulas: P = len(sizes) divides Hq and Hkv."""
    sizes = rank_sizes(sizes, "sizes", max_ranks)
    B, Hq, Hkv, D, Dv = exact_dims(B=B, Hq=Hq, Hkv=Hkv, D=D, Dv=Dv)
    for n, H in (("Hq", Hq), ("Hkv", Hkv)):
        if H % len(sizes):
            fail(n, f"a multiple of P = len(sizes) = {len(sizes)} (heads split in P groups)", f"{H}")
    return sizes, B, Hq, Hkv, D, Dv


def rank_routings(routings, routing_cls: type) -> tuple[int, int]:
    """One ``routing_cls`` (refimpl.moe.Routing) per rank, all over the same E experts; (P, E)."""
    if isinstance(routings, (str, bytes)) or not isinstance(routings, (list, tuple)) or not routings:
        fail("routings", "a non-empty sequence of refimpl.moe.Routing (one per rank)", _type(routings),
             error=TypeError)
    for r, rt in enumerate(routings):
        if not isinstance(rt, routing_cls):
            fail(f"routings[{r}]", "a refimpl.moe.Routing (the result of refimpl.moe.route)", _type(rt),
                 error=TypeError)
    E = routings[0].num_experts
    if any(rt.num_experts != E for rt in routings):
        fail("routings", "the same number of experts on every rank", f"{[rt.num_experts for rt in routings]}")
    return len(routings), E


def expert_owner(owner, E: int, P: int, *, E_doc: str = "one rank per expert", P_doc: str = "") -> np.ndarray:
    """owner (E,): the rank 0..P-1 of each expert, as int64."""
    owner = index_array(owner, "owner", ndim=1)
    if owner.shape != (E,) or (owner.size and owner.max() >= P):
        fail("owner", f"shape ({E},) ({E_doc}) with ranks in 0..{P - 1}{P_doc}",
             f"shape {owner.shape} and entries {owner.tolist()[:8]}")
    return owner


def kept_counts(m) -> np.ndarray:
    """m (P, P), P >= 1: kept assignments of rank r's tokens to experts on rank p."""
    m = index_array(m, "m", ndim=2)
    if m.shape[0] != m.shape[1] or m.shape[0] == 0:
        fail("m", "shape (P, P) with P >= 1", f"{m.shape}")
    return m


# ---------------------------------------------------------------------------
# expert parallelism (expert_parallel)


def placement(E, P, max_ranks: int) -> tuple[int, int]:
    """(E, P) with P in 1..max_ranks dividing E (contiguous placement)."""
    E, P = count(E, "E", minimum=1), count(P, "P", minimum=1, maximum=max_ranks)
    if E % P:
        fail("E, P", "P dividing E (contiguous placement)", f"P = {P}, E = {E}")
    return E, P


def preset_k(k, preset) -> None:
    """A routing preset that routes to exactly ``preset.k`` experts takes no other k."""
    if preset.k is not None and k != preset.k:
        fail("k", f"k = {preset.k} (preset {preset.name!r} routes to exactly k={preset.k})", f"{k}")


def global_drop_order(drop_order, capacity_convention: str, orders: tuple) -> None:
    """The global capacity convention computes slots from exchanged counts: a drop order of ``orders``."""
    if capacity_convention == "global" and drop_order not in orders:
        fail("drop_order", f"one of {orders} with the global capacity convention (slots from exchanged counts)",
             repr(drop_order))


def local_reroute(reroute: bool, capacity_convention: str) -> None:
    """Rerouting needs the local capacity convention."""
    if reroute and capacity_convention == "global":
        fail("reroute", f"False with capacity_convention={capacity_convention!r} (reroute is supported with "
                        f"'local' only; see the module docstring)", "True")


def rank_token_lists(xs, max_ranks: int) -> None:
    """``xs``: a list of 1 to ``max_ranks`` (T_r, D) arrays, one per rank."""
    rank_sequence(xs, "xs", "list of (T_r, D) arrays (one per rank)")
    if not 1 <= len(xs) <= max_ranks:
        fail("xs", f"1 to {max_ranks} ranks", f"{len(xs)}")
