"""Dispatch and combine: the two equivalent layouts of a Routing.

Dense (GShard, Lepikhin et al. 2020; Mesh TF, DeepSpeed, fairseq):

    dispatch[t, e, c] = True  iff some kept choice j of token t has
                              indices[t, j] = e and position[t, j] = c
    combine[t, e, c]  = gates[t, j] at the same places, 0 elsewhere
    expert_inputs[e, c, :] = sum_t dispatch[t, e, c] x[t, :]         ("tec,td->ecd")
    y[t, :]           = sum_{e,c} combine[t, e, c] expert_outputs[e, c, :]  ("tec,ecd->td")

Sparse (Megablocks ``indices_and_bins`` / ``binned_gather``; Tutel
``fast_encode``): the kept assignments sorted by (expert, position), so
expert e's rows are a contiguous bin ``offsets[e]:offsets[e+1]`` in buffer
order; gather x by token index, run each expert on its bin, scatter-add the
gated outputs back.

C for the dense layout is the routing's capacity; for a dropless routing it is
the largest buffer actually used (max kept count), as DeepSpeed does with
drop_tokens=False.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import _validate as V
from .._validate import as_float_array
from .._validate import moe as VM


def buffer_capacity(routing) -> int:
    """C of the dense layout: routing.capacity, or the largest buffer used when dropless."""
    routing = V.routing(routing)
    if routing.capacity is not None:
        return routing.capacity
    return int(routing.kept_counts.max(initial=0))


def dispatch_combine_tensors(routing):
    """(dispatch bool (T, E, C), combine float (T, E, C)) from a Routing."""
    routing = V.routing(routing)
    T, E = routing.num_tokens, routing.num_experts
    C = buffer_capacity(routing)
    dispatch = np.zeros((T, E, C), dtype=bool)
    combine = np.zeros((T, E, C))
    t, j = np.nonzero(routing.kept)
    e, c = routing.indices[t, j], routing.position[t, j]
    dispatch[t, e, c] = True
    combine[t, e, c] = routing.gates[t, j]
    return dispatch, combine


def dispatch_dense(x, dispatch) -> np.ndarray:
    """expert_inputs (E, C, D) = einsum("tec,td->ecd", dispatch, x); empty slots are 0.

    One GEMM: dispatch folded to (T, E*C), transposed, times x (T, D)."""
    x = as_float_array(x, "x", ndim=2, shape_doc="(T, D)")
    dispatch = V.bool_array(dispatch, "dispatch", shape=(x.shape[0], None, None), shape_doc="(T, E, C) with T from x")
    T, E, C = dispatch.shape
    return (dispatch.reshape(T, E * C).T.astype(np.float64) @ x).reshape(E, C, x.shape[1])


def combine_dense(expert_outputs, combine) -> np.ndarray:
    """y (T, D) = einsum("tec,ecd->td", combine, expert_outputs): one GEMM,
    (T, E*C) times (E*C, D)."""
    combine = as_float_array(combine, "combine", ndim=3, shape_doc="(T, E, C)")
    T, E, C = combine.shape
    expert_outputs = as_float_array(expert_outputs, "expert_outputs", shape=(E, C, None),
                                    shape_doc="(E, C, D) with E, C from combine")
    with np.errstate(over="ignore", invalid="ignore"):
        y = combine.reshape(T, E * C) @ expert_outputs.reshape(E * C, expert_outputs.shape[-1])
    return V.finite_result(y, "the combined outputs y", "expert_outputs, combine")


@dataclasses.dataclass(frozen=True)
class SortedAssignments:
    """The kept assignments sorted by (expert, position).

    token:   (N,) token of each row
    choice:  (N,) which of the token's k choices
    expert:  (N,) expert id, non-decreasing
    gate:    (N,) gate of the assignment
    offsets: (E + 1,) expert e owns rows offsets[e]:offsets[e + 1]
    """

    token: np.ndarray
    choice: np.ndarray
    expert: np.ndarray
    gate: np.ndarray
    offsets: np.ndarray


def sort_by_expert(routing) -> SortedAssignments:
    return _sort_by_expert(V.routing(routing))


def _sort_by_expert(routing) -> SortedAssignments:
    """``sort_by_expert`` of a checked Routing (``refimpl.moe.forward`` checked it once)."""
    t, j = np.nonzero(routing.kept)
    e, pos = routing.indices[t, j], routing.position[t, j]
    order = np.lexsort((pos, e))  # by expert, then slot
    t, j, e = t[order], j[order], e[order]
    counts = np.bincount(e, minlength=routing.num_experts)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return SortedAssignments(token=t.astype(np.int64), choice=j.astype(np.int64), expert=e.astype(np.int64),
                             gate=routing.gates[t, j], offsets=offsets)


def gather_by_expert(x, sa: SortedAssignments) -> np.ndarray:
    """(N, D): row i is x[token[i]]."""
    x = VM.gather_inputs(x, sa, SortedAssignments)
    return x[sa.token]


def scatter_combine(rows, sa: SortedAssignments, num_tokens: int) -> np.ndarray:
    """y (T, D): y[token[i]] += gate[i] * rows[i], summed over a token's choices in order j = 0, 1, ..."""
    rows, num_tokens = VM.scatter_inputs(rows, sa, num_tokens, SortedAssignments)
    return _scatter_combine(rows, sa, num_tokens)


def _scatter_combine(rows, sa: SortedAssignments, num_tokens: int) -> np.ndarray:
    """``scatter_combine`` of checked rows and num_tokens (``refimpl.moe.forward`` checked them once)."""
    N = sa.token.shape[0]
    y = np.zeros((num_tokens, rows.shape[1]))
    ks = int(sa.choice.max()) + 1 if N else 0
    row_of = _row_of_token_choice(sa, num_tokens, ks) if ks * num_tokens <= y.size + N else None
    if row_of is None:  # a (token, choice) twice, a choice < 0, or choices too sparse to tabulate
        np.add.at(y, sa.token, sa.gate[:, None] * rows)
        return y
    for j in range(ks):  # y[t] += gate * row of (t, j), j = 0, 1, ...: a gather, no scatter
        i = row_of[:, j]
        t = slice(None) if i.max(initial=-1) < N else np.flatnonzero(i < N)  # every token, or those with a row
        weighted = rows[i[t]]
        weighted *= sa.gate[i[t], None]
        y[t] += weighted
        del weighted  # freed before the next choice's rows are gathered: the peak holds one (T, D) buffer, not two
    return y


def _row_of_token_choice(sa: SortedAssignments, num_tokens: int, ks: int):
    """(num_tokens, ks) int64: the row i of (token t, choice j), N where none; None where a pair
    has two rows (or a choice is negative)."""
    N = sa.token.shape[0]
    if N and sa.choice.min() < 0:
        return None
    row_of = np.full((num_tokens, ks), N, dtype=np.int64)
    row_of[sa.token, sa.choice] = np.arange(N)
    if np.count_nonzero(row_of != N) < N:  # a later row of a pair overwrote an earlier one
        return None
    return row_of
