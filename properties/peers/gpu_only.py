"""GPU-only attention libraries: flash-attn, xformers, FlashInfer.

Each factory checks, in order, that torch imports, that a CUDA device is present
and that the library imports, and raises :class:`Unavailable` with the first
reason that fails. On a machine with all three, ``flash_attn`` returns an
adapter for ``flash_attn.flash_attn_func`` (preset ``refimpl.conventions.FLASH_ATTN2``,
bfloat16, bottom-right causal, window (left, right) with -1 for an unbounded side,
``return_attn_probs=True`` for the lse). The bfloat16 bound needs the suite's
low-precision tolerances; until then the adapter declares precision "bfloat16"
and is not run by CI (no GPU there). xformers and FlashInfer report what is
missing; their adapters are not written yet (the factory says so).
"""

from __future__ import annotations

import numpy as np

from ..attention_impls import AttentionAdapter
from ..core import Unsupported
from ._common import Unavailable, make, require, require_cuda, version


def _gpu(module: str, what: str):
    torch = require("torch")
    require_cuda(torch, what)
    return torch, require(module, extra=f"peers-gpu: pip install {what}")


def flash_attn():
    torch, fa = _gpu("flash_attn", "flash-attn")

    def forward(q, k, v, *, causal=False, window=None, scale=None, softcap=None, align="bottom_right", **rest):
        if align != "bottom_right" or any(val is not None for val in rest.values()):
            raise Unsupported("flash_attn adapter: bottom_right causal/window, softcap and scale only")
        t = [torch.as_tensor(np.swapaxes(np.asarray(a), 1, 2).copy(), device="cuda", dtype=torch.bfloat16)
             for a in (q, k, v)]  # (B, L, H, D)
        ws = (-1, -1) if window is None else tuple(-1 if w is None else int(w) for w in window)
        out, lse, _ = fa.flash_attn_func(*t, softmax_scale=scale, causal=causal, window_size=ws,
                                         softcap=0.0 if softcap is None else softcap, return_attn_probs=True)
        return np.swapaxes(out.float().cpu().numpy(), 1, 2).astype(np.float64), lse.cpu().numpy().astype(np.float64)

    return make(AttentionAdapter, name="flash_attn.flash_attn_func[bfloat16]", forward=forward,
                capabilities=frozenset({"lse", "causal", "window", "softcap", "gqa", "lq_ne_lk", "scale"}),
                precision="bfloat16", preset="refimpl.conventions.FLASH_ATTN2", library=f"flash-attn {version(fa)}")


def xformers():
    _gpu("xformers.ops", "xformers")
    raise Unavailable("unavailable: the xformers adapter is not written yet (preset refimpl.conventions.XFORMERS)")


def flashinfer():
    _gpu("flashinfer", "flashinfer-python")
    raise Unavailable("unavailable: the FlashInfer adapter is not written yet")
