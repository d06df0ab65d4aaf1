"""Deliberately wrong kernels, made by small textual edits of the real sources.

Each mutation is a bug seen in real kernels. It is applied to the Numba kernel
module's source and to the neutral-dialect C text alike, so the very same bug
can be run under the CUDA simulator, on OpenCL and on a GPU. The tests assert
that the execution checks reject every mutant (a meta-test: a check that
cannot fail verifies nothing). Every edit must match its source exactly the
stated number of times, so a mutant cannot silently turn into the original
kernel when the source changes. A Numba edit is counted over the kernel module
and the shared device-function modules it imports (``SHARED_NUMBA``: the per-tile
code of ``gpu.tile_numba``); an edited shared module is run as a fresh copy that
only the mutant kernel module imports. The C edits apply to the kernel's whole
text, which holds the shared device functions (``gpu.tile_c``) too.

Attention:
    partial_tile_dropped   key-tile count floor(kv_hi / BC) instead of ceil: the
                           last, partial key tile is never visited
    key_bound_off_by_one   j <= Lk instead of j < Lk: the zero padding row of a
                           partial tile is attended as a key with score 0
    missing_rescale        acc not multiplied by exp(m_old - m_new) when the
                           running max grows (l still is)
    head_map_mod           GQA query head h reads kv head h % Hkv, not h // G
    window_left_off_by_one j > p - left instead of j >= p - left
Routing:
    ties_to_higher_id      >= instead of > in the top-k scan
    token_major_for_k_major the k_major claiming order walks token by token
    renormalize_before_drop after_drop divides by the sum over all k choices
    scan_inclusive         rank = inclusive prefix (positions start at 1)
    capacity_off_by_one    kept iff rank <= C
Attention backward:
    backward_no_D          dS = P * dP: the rowsum(dO * O) term is never subtracted
    backward_group_dropped dK, dV sum only the first query head of each kv head
                           (GQA gradients of the other G - 1 heads lost)
Split-KV:
    split_merge_no_rescale the merge weighs chunk c by l_c instead of exp(m_c - m) l_c
Paged decode:
    block_table_off_by_one token j read from block table[(j + 1) // bs]: the last slot of
                           each block comes from the next block
Norm:
    norm_weight_offset_ignored  RMSNorm multiplies by w where the convention says offset + w
                           (HF Gemma's 1 + w lost)
RoPE:
    rope_interleaved_as_half    interleaved pairs (2i, 2i + 1) rotated as half pairs (i, i + d/2)
MoE experts:
    moe_bins_count_dropped      bins sized by every choice of the expert, dropped ones included
                           (capacity ignored): rows land in the wrong places
    moe_gemm_partial_k_dropped  the grouped GEMM's K loop stops at the last whole BK slice
    moe_combine_double_count    the combine reads the first choice's row for every choice: a
                           token's first expert output counted k times, the others never
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
import types

Edit = tuple  # (old, new, expected number of occurrences)


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    kernel: str  # a kernel of KERNEL_MODULES: "attention" | "routing" | "attention_backward" | ...
    doc: str
    numba: tuple  # edits of the Numba module source
    c: tuple  # edits of the C body


def apply_edits(text: str, edits, what: str) -> str:
    for old, new, count in edits:
        found = text.count(old)
        if found != count:
            raise AssertionError(f"mutation edit for {what}: expected {count} occurrence(s) of {old!r}, found {found}")
        text = text.replace(old, new)
    return text


MUTATIONS = {m.name: m for m in (
    Mutation(
        "partial_tile_dropped", "attention", "the last, partial key tile is never visited",
        numba=(("tile_hi = (kv_hi + BC - 1) // BC", "tile_hi = kv_hi // BC", 1),),
        c=(("int tile_hi = (kv_hi + BC - 1) / BC;", "int tile_hi = kv_hi / BC;", 1),),
    ),
    Mutation(
        "key_bound_off_by_one", "attention", "the padding row past Lk is attended with score 0",
        numba=(("visible = i < Lq and j < Lk and", "visible = i < Lq and j <= Lk and", 1),),
        c=(("const int visible = i < Lq && j < Lk &&", "const int visible = i < Lq && j <= Lk &&", 1),),
    ),
    Mutation(
        "missing_rescale", "attention", "the accumulator is not rescaled when the running max grows",
        numba=(("acc[a] = alpha * acc[a] + pv", "acc[a] = acc[a] + pv", 1),),
        c=(("acc[a] = alpha * acc[a] + pv;", "acc[a] = acc[a] + pv;", 1),),
    ),
    Mutation(
        "head_map_mod", "attention", "query head h reads kv head h % Hkv",
        numba=(("hk = h // group", "hk = h % (Hq // group)", 1),),
        c=(("const int hk = h / (Hq / Hkv);", "const int hk = h % Hkv;", 1),),
    ),
    Mutation(
        "window_left_off_by_one", "attention", "the window's left end is excluded",
        numba=(("j >= i + offset - left", "j > i + offset - left", 1),),
        c=(("j >= i + offset - left", "j > i + offset - left", 1),),
    ),
    Mutation(
        "ties_to_higher_id", "routing", "equal logits go to the higher expert id",
        numba=(("if after_prev and (best < 0 or x > best_z):", "if after_prev and (best < 0 or x >= best_z):", 1),),
        c=(("if (after_prev && (best < 0 || x > best_z)) {", "if (after_prev && (best < 0 || x >= best_z)) {", 1),),
    ),
    Mutation(
        "token_major_for_k_major", "routing", "k_major claims slots token by token",
        numba=(("if order == 0:  # k_major", "if order == 1:  # k_major", 1), ("            if order == 0:\n", "            if order == 1:\n", 1)),
        c=(("order == 0 ?", "order == 1 ?", 4),),
    ),
    Mutation(
        "renormalize_before_drop", "routing", "after_drop renormalises over all k choices",
        numba=(("g = w / sum_kept", "g = w / sum_all", 1),),
        c=(("g = sum_kept > 0.0f ? w / sum_kept : 0.0f;", "g = sum_kept > 0.0f ? w / sum_all : 0.0f;", 1),),
    ),
    Mutation(
        "scan_inclusive", "routing", "positions from the inclusive prefix sum (start at 1)",
        numba=(("pos = scan[tid] - mine", "pos = scan[tid]", 1),),
        c=(("int pos = scan[tid] - mine;", "int pos = scan[tid];", 1),),
    ),
    Mutation(
        "capacity_off_by_one", "routing", "kept iff rank <= C",
        numba=(("(capacity < 0 or r < capacity)", "(capacity < 0 or r <= capacity)", 1),),
        c=(("(capacity < 0 || r < capacity)", "(capacity < 0 || r <= capacity)", 1),),
    ),
    Mutation(
        "backward_no_D", "attention_backward", "dS = P * dP, without subtracting D = rowsum(dO * O)",
        numba=(("ds = p * (dp - delta_i)", "ds = p * dp", 1),),
        c=(("ds = p * (dp - (DELTA_I));", "ds = p * dp;", 1),),
    ),
    Mutation(
        "backward_group_dropped", "attention_backward", "dK, dV summed over the first query head of a group only",
        numba=(("for g in range(group):", "for g in range(1):", 1),),
        c=(("for (int g = 0; g < group; ++g) {", "for (int g = 0; g < 1; ++g) {", 1),),
    ),
    Mutation(
        "split_merge_no_rescale", "split_kv", "the merge weighs each chunk by l_c, not exp(m_c - m) l_c",
        numba=(("w = math.exp(m_c[s, b, h, i] - m) * l_c[s, b, h, i]", "w = l_c[s, b, h, i]", 1),),
        c=(("const float w = EXPF(m_c[s * rows + row] - m) * l_c[s * rows + row];",
            "const float w = l_c[s * rows + row];", 1),),
    ),
    Mutation(
        "block_table_off_by_one", "paged", "token j read from block table[(j + 1) // bs]",
        numba=(("block_table[b, min(j // bs, nblk - 1)]", "block_table[b, min((j + 1) // bs, nblk - 1)]", 2),),
        c=(("table[IMIN(j / bs, nblk - 1)]", "table[IMIN((j + 1) / bs, nblk - 1)]", 2),),
    ),
    Mutation(
        "norm_weight_offset_ignored", "norm", "RMSNorm scales by w instead of offset + w",
        numba=(("(x[row, e] * r) * (offset + w[e])", "(x[row, e] * r) * w[e]", 1),),
        c=(("(xr[e] * r) * (offset + w[e])", "(xr[e] * r) * w[e]", 1),),
    ),
    Mutation(
        "rope_interleaved_as_half", "rope", "interleaved pairs rotated as (i, i + d/2)",
        numba=(("ia = 2 * i\n", "ia = i\n", 1), ("ib = 2 * i + 1\n", "ib = i + n_pairs\n", 1)),
        c=(("ia = 2 * i;", "ia = i;", 1), ("ib = 2 * i + 1;", "ib = i + n_pairs;", 1)),
    ),
    Mutation(
        "moe_bins_count_dropped", "moe", "expert bins counted with the dropped choices",
        numba=(("if kept[a // k, a % k] != 0 and indices[a // k, a % k] == e:", "if indices[a // k, a % k] == e:", 1),),
        c=(("if (kept[a] != 0 && indices[a] == e) n += 1;", "if (indices[a] == e) n += 1;", 1),),
    ),
    Mutation(
        "moe_gemm_partial_k_dropped", "moe", "the grouped GEMM skips the last, partial K slice",
        numba=(("n_kt = (K + BK - 1) // BK", "n_kt = K // BK", 1),),
        c=(("const int n_kt = (K + BK - 1) / BK;", "const int n_kt = K / BK;", 1),),
    ),
    Mutation(
        "moe_combine_double_count", "moe", "the combine reads the first choice's row for every choice",
        numba=(("r = row_of[t, j]\n", "r = row_of[t, 0]\n", 1),),
        c=(("const int r = row_of[t * k + j];", "const int r = row_of[t * k];", 1),),
    ),
)}


def _kernel_modules(kernel: str):
    return f"gpu.{kernel}_numba", f"gpu.{kernel}_c"


#: modules of shared device functions a Numba kernel module may import (``from .<name> import``)
SHARED_NUMBA = ("tile_numba",)


def _exec_module(name: str, src: str, origin: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__package__ = "gpu"
    mod.__file__ = origin
    sys.modules[name] = mod  # numba resolves the kernel's globals through the module
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)
    return mod


def numba_module(mutation: Mutation) -> types.ModuleType:
    """A fresh copy of the Numba kernel module with the mutation applied (to the kernel module and
    the shared device functions it imports, counted together)."""
    base = importlib.import_module(_kernel_modules(mutation.kernel)[0])
    texts = {base.__name__: inspect.getsource(base)}
    for shared in SHARED_NUMBA:
        if f"from .{shared} import" in texts[base.__name__]:
            texts[f"gpu.{shared}"] = inspect.getsource(importlib.import_module(f"gpu.{shared}"))
    what = f"{' + '.join(texts)} ({mutation.name})"
    for old, new, count in mutation.numba:
        found = sum(text.count(old) for text in texts.values())
        if found != count:
            raise AssertionError(f"mutation edit for {what}: expected {count} occurrence(s) of {old!r}, found {found}")
        texts = {k: text.replace(old, new) for k, text in texts.items()}
    src = texts.pop(base.__name__)
    for shared_name, text in texts.items():
        if text != inspect.getsource(importlib.import_module(shared_name)):
            short = shared_name.split(".")[-1]
            _exec_module(f"{shared_name}__mutant_{mutation.name}", text, f"<mutant {mutation.name} of {shared_name}>")
            src = src.replace(f"from .{short} import", f"from .{short}__mutant_{mutation.name} import")
    name = f"{base.__name__}__mutant_{mutation.name}"
    return _exec_module(name, src, f"<mutant {mutation.name} of {base.__file__}>")


def c_source(mutation: Mutation) -> str:
    """The full neutral-dialect C text of the kernel with the mutation applied."""
    from .dialect import with_prelude

    base = importlib.import_module(_kernel_modules(mutation.kernel)[1])
    return with_prelude(apply_edits(base.BODY, mutation.c, f"{base.__name__} ({mutation.name})"))


def backend(name: str, runtime: str):
    """A backend running mutant ``name``: runtime "numba", "opencl" or "cupy"."""
    from .backends import CSourceBackend, NumbaBackend

    m = MUTATIONS[name]
    label = f"{runtime}[mutant {name}]"
    if runtime == "numba":
        mod = numba_module(m)
        return NumbaBackend(label=label, **{m.kernel: mod})
    src = c_source(m)
    if m.kernel in ("attention", "routing"):
        return CSourceBackend(runtime, label=label, **{f"{m.kernel}_source": src})
    return CSourceBackend(runtime, label=label, **{m.kernel: src})
