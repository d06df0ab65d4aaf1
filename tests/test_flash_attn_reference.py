"""flash-attn's own low-precision baseline judged by the suite: ``attention_ref`` in bf16 and fp16.

flash-attn's tests hold its kernels to 2x the error of ``attention_ref(upcast=False,
reorder_ops=True)`` (tests/test_flash_attn.py), the eager PyTorch attention in the input
dtype. That computation is correct low-precision attention, so the suite's bound
(properties.attention_lowp) must admit it on every drawn case, forward and backward, softcap
included. Nothing of flash-attn is in this project: point ``REFIMPL_LIBRARY_SOURCES`` at a
directory holding ``flash-attention/tests/test_flash_attn.py`` (checked: flash-attn 2.8.4,
commit 0251105); the test skips, saying so, otherwise. Only ``attention_ref`` and
``construct_local_mask`` are taken from the file (its imports need CUDA); it runs on torch CPU.

Conventions of the adapter (flash-attn's, mapped to the spec's keywords): layout
(B, L, H, D); ``window_size`` (left, right) with bottom-right alignment; an unbounded side is
passed as Lq + Lk (``attention_ref`` honours -1 only when both sides are -1); softcap > 0;
``attn_bias`` in the input dtype; scale fixed at 1/sqrt(D) and no lse (so the adapter
declares neither). Measured on 1000 random cases each (max_len 8, D <= 8, both orders, every
option above): worst error / bound bf16 out 0.22, dq 0.43, dk 0.43, dv 0.14; fp16 out 0.24,
dq 0.29, dk 0.42, dv 0.13 (``benchmarks/precision_headroom.py`` prints such figures).
"""

from __future__ import annotations

import ast
import math
import os
import pathlib

import numpy as np
import pytest

from properties import attention as A
from properties.attention_impls import AttentionAdapter
from properties.core import run_property

torch = pytest.importorskip("torch", reason="torch runs flash-attn's attention_ref")
REL = "flash-attention/tests/test_flash_attn.py"
ROOT = os.environ.get("REFIMPL_LIBRARY_SOURCES", "")
CAPS = frozenset({"causal", "window", "gqa", "lq_ne_lk", "dv_ne_d", "softcap", "bias", "backward"})
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def _attention_ref():
    path = pathlib.Path(ROOT) / REL
    if not ROOT or not path.is_file():
        pytest.skip(f"library source {REL} not found (set REFIMPL_LIBRARY_SOURCES to a directory holding it)")
    einops = pytest.importorskip("einops", reason="attention_ref uses einops")
    ns = {"torch": torch, "math": math, "rearrange": einops.rearrange, "repeat": einops.repeat}
    tree = ast.parse(path.read_text())
    wanted = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("construct_local_mask", "attention_ref")]
    exec(compile(ast.Module(body=wanted, type_ignores=[]), str(path), "exec"), ns)
    if "attention_ref" not in ns:
        pytest.skip(f"{REL} has no attention_ref")
    return ns["attention_ref"]


def adapter(precision: str, reorder_ops: bool = True) -> AttentionAdapter:
    """attention_ref(upcast=False, reorder_ops=...) in ``precision`` as an attention adapter."""
    ref = _attention_ref()
    dt = DTYPES[precision]

    def t(x):  # (B, H, L, D) float64 -> (B, L, H, D) in the dtype (exact: inputs are representable)
        return torch.tensor(np.ascontiguousarray(np.swapaxes(x, 1, 2))).to(dt)

    def call(q, k, v, causal=False, window=None, softcap=None, bias=None):
        Lq, Lk = q.shape[2], k.shape[2]
        win = (-1, -1) if window is None else tuple(Lq + Lk if s is None else s for s in window)
        qt, kt, vt = (t(a).requires_grad_() for a in (q, k, v))
        out, _ = ref(qt, kt, vt, attn_bias=None if bias is None else torch.tensor(np.asarray(bias)).to(dt),
                     causal=causal, window_size=win, softcap=0.0 if softcap is None else softcap, upcast=False,
                     reorder_ops=reorder_ops)
        return out, (qt, kt, vt)

    def back(x):
        return np.swapaxes(x.detach().double().numpy(), 1, 2)

    def forward(q, k, v, **kw):
        return back(call(q, k, v, **kw)[0]), None

    def backward(q, k, v, dout, **kw):
        out, inputs = call(q, k, v, **kw)
        return tuple(back(g) for g in torch.autograd.grad(out, inputs, t(dout)))

    return AttentionAdapter(f"flash_attn.attention_ref[{precision}, upcast=False, reorder_ops={reorder_ops}]", forward,
                            CAPS, backward, precision=precision)


PROPERTIES = ("matches_reference", "convex_combination", "causal_ignores_future", "window_ignores_outside",
              "gqa_equals_repeated_mha", "extreme_scores", "backward_matches_reference",
              "backward_finite_differences")


@pytest.mark.parametrize("precision", sorted(DTYPES))
@pytest.mark.parametrize("name", PROPERTIES)
def test_attention_ref_passes(precision, name):
    prop = next(p for p in A.PROPERTIES if p.name == name)
    run_property(prop, adapter(precision))  # the profile's count: thorough draws 2000 per property
