"""SGLang's Triton decode attention (``decode_attention_fwd``, sglang/kernels/ops/attention/
decode_attention.py in sglang 0.5.23; python/sglang/srt/layers/attention/triton_ops/ in older
releases) as an attention adapter: each query row is one decode request over a paged KV buffer.

The kernel is loaded from source: set ``REFIMPL_LIBRARY_SOURCES`` to a directory holding
``sglang/kernels/ops/attention/decode_attention.py`` and ``score_mod.py`` (an unpacked sglang
wheel: ``pip download sglang==0.5.23 --no-deps`` and unzip it there; the wheel's other modules
need CUDA-built dependencies). Only those two files are executed. They import three names of
sglang's runtime configuration, given stand-ins while they load (no arithmetic): ``sglang.srt.
utils.is_hip``, ``is_gfx95_supported``, ``is_gfx1250_supported`` -> False (the CUDA path, what an
NVIDIA GPU runs), ``get_device_core_count`` -> 132 (used by the MLA split heuristic only) and
``sglang.srt.environ.envs`` (every flag ``.get()`` -> False: the defaults).

How the attention kind maps onto a decode kernel (what SGLang's scheduler does for each request):

    q row i of batch b           one request: q (requests, Hq, D)
    keys it sees                 its kv_indices: positions max(0, p - left) .. p, p = i + Lk - Lq
                                 (causal, bottom-right; window=(left, .) under causal), per varlen
                                 sequence with its own offsets
    k, v                         a KV buffer of one-token pages (page_size 1) at shuffled slots
                                 (the kernel reads through kv_indices, never by position)
    scale, softcap, sinks        sm_scale (k_scale = v_scale = 1), logit_cap, sinks (Hq,)
    gqa, Dv != D                 Hkv < Hq (decode_attention_fwd_grouped), Lv != Lk
    num_kv_splits                4 per request (max_kv_splits 4): keys split in pieces of whole
                                 32-key blocks (MIN_BLOCK_KV), merged by their lse in stage 2

A decode kernel is causal by construction: ``declines`` non-causal cases, windows without causal and
Lq > Lk (a query before every key). No lse (stage 2 writes only the output), no masks other than
the index lists, no backward. Sizes: the default small lengths (1..9), one split per request;
``test_sglang_decode_splits`` (tests/test_triton_peers.py) runs lengths 33 and 70, where requests
span several splits (an interpreted call with ~100 requests takes ~30 s, so the suite's tile-scale
draws are not declared). Precision float32.

SGLang's fused MoE kernel is the adapter of properties/peers/sglang_moe.py (sglang_fused_moe).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys
import types

import numpy as np

from ..attention_impls import AttentionAdapter
from ._common import Unavailable, make, require
from .triton_shims import setup as triton_setup

REL = "sglang/kernels/ops/attention"
CHECKED = "sglang 0.5.23 (wheel)"
SPLITS = 4
CAPABILITIES = frozenset({"causal", "window", "gqa", "lq_ne_lk", "dv_ne_d", "scale", "softcap", "sinks", "varlen"})
DECLINES = {"causal": {"non_causal"}, "window_causal": {"without_causal"}, "lengths": {"lq_gt_lk"}}


class _Flags:
    """sglang.srt.environ.envs stand-in: every flag at its default, off."""

    def __getattr__(self, name):
        return types.SimpleNamespace(get=lambda: False)


def _load(root: pathlib.Path):
    """decode_attention_fwd from the two files, with stand-in sglang packages while they load."""
    utils = types.ModuleType("sglang.srt.utils")
    utils.is_hip = utils.is_gfx95_supported = utils.is_gfx1250_supported = lambda: False
    utils.get_device_core_count = lambda device_index=0: 132
    environ = types.ModuleType("sglang.srt.environ")
    environ.envs = _Flags()
    stand_ins = {n: types.ModuleType(n) for n in ("sglang", "sglang.srt", "sglang.kernels", "sglang.kernels.ops",
                                                   "sglang.kernels.ops.attention")}
    stand_ins.update({"sglang.srt.utils": utils, "sglang.srt.environ": environ})
    if any(n in sys.modules for n in stand_ins):
        raise Unavailable("unavailable: an sglang package is already imported; run the sglang adapter in a "
                          "process without it")
    sys.modules.update(stand_ins)
    loaded = []
    try:
        for name in ("score_mod", "decode_attention"):
            full = f"sglang.kernels.ops.attention.{name}"
            spec = importlib.util.spec_from_file_location(full, root / f"{name}.py")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[full] = mod
            loaded.append(full)
            spec.loader.exec_module(mod)
        return mod.decode_attention_fwd
    finally:
        for n in list(stand_ins) + loaded:
            sys.modules.pop(n, None)


def _requests(kw, B, Lq, Lk):
    """[(batch, query row, key positions)] of every query row: causal bottom-right, window left,
    per varlen sequence (the index lists a serving engine builds)."""
    left = (kw.get("window") or (None, None))[0]
    cu_q, cu_k = kw.get("cu_seqlens_q"), kw.get("cu_seqlens_k")
    seqs = [(0, Lq, 0, Lk)] if cu_q is None else [
        (int(cu_q[s]), int(cu_q[s + 1]), int(cu_k[s]), int(cu_k[s + 1])) for s in range(len(cu_q) - 1)]
    out = []
    for b in range(B):
        for q0, q1, k0, k1 in seqs:
            for i in range(q0, q1):
                p = (i - q0) + (k1 - k0) - (q1 - q0)  # the row's position among its sequence's keys
                lo = 0 if left is None else max(0, p - int(left))
                out.append((b, i, k0 + np.arange(lo, p + 1)))
    return out


def sglang_decode():
    """SGLang's Triton decode attention (source via REFIMPL_LIBRARY_SOURCES)."""
    src = os.environ.get("REFIMPL_LIBRARY_SOURCES", "")
    root = pathlib.Path(src) / REL
    if not src or not all((root / f"{n}.py").is_file() for n in ("decode_attention", "score_mod")):
        raise Unavailable(f"unavailable: set REFIMPL_LIBRARY_SOURCES to a directory holding {REL}/decode_attention.py "
                          f"and score_mod.py (an unpacked sglang wheel: pip download sglang==0.5.23 --no-deps)")
    triton_setup()
    torch = require("torch")
    decode_attention_fwd = _load(root)

    def forward(q, k, v, **kw):
        B, Hq, Lq, D = np.shape(q)
        Hkv, Lk, Dv = np.shape(k)[1], np.shape(k)[2], np.shape(v)[3]
        reqs = _requests(kw, B, Lq, Lk)
        out = np.zeros((B, Hq, Lq, Dv))
        if not reqs:
            return out, None
        slot = np.random.default_rng(B * 1009 + Lk).permutation(B * Lk)  # token (b, j) lives at slot[b Lk + j]
        kbuf, vbuf = np.empty((B * Lk, Hkv, D)), np.empty((B * Lk, Hkv, Dv))
        kbuf[slot] = np.transpose(np.asarray(k), (0, 2, 1, 3)).reshape(B * Lk, Hkv, D)
        vbuf[slot] = np.transpose(np.asarray(v), (0, 2, 1, 3)).reshape(B * Lk, Hkv, Dv)
        indices = [slot[b * Lk + keys] for b, _, keys in reqs]
        indptr = np.concatenate([[0], np.cumsum([len(i) for i in indices])])
        R = len(reqs)

        def T(a, dtype=torch.float32):
            return torch.tensor(np.ascontiguousarray(a), dtype=dtype)

        o = torch.zeros(R, Hq, Dv)
        sinks = kw.get("sinks")
        scale = float(kw["scale"]) if kw.get("scale") is not None else D ** -0.5
        decode_attention_fwd(T(np.stack([np.asarray(q)[b, :, i] for b, i, _ in reqs])), T(kbuf), T(vbuf), o,
                             T(indptr, torch.int32), T(np.concatenate(indices), torch.int32),
                             torch.zeros(R, Hq, SPLITS, Dv), torch.zeros(R, Hq, SPLITS),
                             T(np.full(R, SPLITS), torch.int32), SPLITS, scale, 1.0, 1.0,
                             logit_cap=float(kw.get("softcap") or 0.0), sinks=None if sinks is None else T(sinks))
        res = o.double().numpy()
        for r, (b, i, _) in enumerate(reqs):
            out[b, :, i] = res[r]
        return out, None

    return make(AttentionAdapter, name="sglang.decode_attention[float32]", forward=forward,
                capabilities=CAPABILITIES, declines=DECLINES, precision="float32",
                preset="refimpl.attention (causal, bottom_right)", library=f"{CHECKED} (triton {require('triton').__version__})")
