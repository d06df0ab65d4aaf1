"""SGLang's Triton fused MoE (sglang 0.5.23) as an MoE adapter: the router, the token alignment,
both expert GEMMs and the top-k sum are SGLang's own Triton kernels, run under Triton's interpreter.

The kernels are loaded from source: set ``REFIMPL_LIBRARY_SOURCES`` to a directory holding, from
an unpacked sglang 0.5.23 wheel (``pip download sglang==0.5.23 --no-deps``, unzip it there),

    sglang/kernels/ops/moe/fused_moe_triton_kernels.py       fused_moe_kernel, moe_sum_reduce_triton
    sglang/kernels/ops/moe/moe_align_small_numel.py          moe_align_small_numel
    sglang/kernels/ops/moe/moe_fused_gate.py                 moe_fused_gate (softmax top-k router)
    sglang/srt/layers/moe/moe_runner/triton_utils/fused_moe_triton_config.py   get_default_config

Only these files are executed. Their imports the unquantised path never calls get stand-ins while
they load (no arithmetic): the fp8 / int8 quantisation kernels (raise if called),
``is_arch_support_pdl`` -> False (programmatic dependent launch only orders launches:
``tl.extra.cuda.gdc_wait``, which the interpreter lacks), ``is_cuda`` -> True, ``is_hip``,
``is_cpu``, ``cpu_has_amx_support``, ``is_sm90_supported`` (fp8 swap_ab only),
``is_batch_invariant_mode_enabled`` -> False, ``sglang.srt.environ.envs`` (every flag off),
``get_moe_padding_size`` -> 0 (SGLANG_MOE_PADDING unset), ``get_exec()`` (deterministic inference
off), ``debug_kernel_api`` (identity) and ``moe_route_radix`` (the sigmoid fast path, not used).

What one forward runs: the host sequence of sglang/srt/layers/moe/moe_runner/triton_utils/
fused_moe.py ``_fused_moe_kernel_sequence`` (CUDA branch), written here in its order:

    z = x W^T                      the model's gate (a linear layer, not part of fused_moe), in the dtype
    topk_weights, topk_ids         fused_topk (srt/layers/moe/topk.py) on CUDA = moe_fused_gate(z, None,
                                   k, "softmax", renormalize): softmax of the logits in float32, top-k by
                                   logit (lowest expert id on ties), renormalised by the sum (zero-sum guard)
    sorted_token_ids, expert_ids,  moe_align_block_size's single-launch Triton path (moe_align_small_numel,
    num_tokens_post_padded         its CUDA choice for <= 64 pairs and > 63 experts; correct at any size,
                                   its docstring): pairs t k + j sorted by expert, stable, each expert
                                   padded to BLOCK_SIZE_M with the sentinel T k
    cache1 = x w1^T                invoke_fused_moe_kernel (fused_moe_kernel), w1 (E, 2H, D) [gate; up]
                                   for SwiGLU experts (E, H, D) and bias b1 for FFN experts
    cache2 = act(cache1)           silu(gate) * up (SwiGLU; SGLang's non-CUDA fallback line
                                   ``F.silu(x[..., :d]) * x[..., d:]`` for its CUDA silu_and_mul), or
                                   F.silu / F.gelu (FFN experts, is_gated=False: the same lines on every
                                   platform)
    cache3 = g (cache2 w2^T + b2)  fused_moe_kernel with MUL_ROUTED_WEIGHT, top_k = 1
    y = sum_j cache3[:, j] * s     moe_combine_topk (CUDA): k = 1 and s = 1 written directly, k = 2 and
                                   s = 1 torch.add, else moe_sum_reduce_triton (its choice for <= 32
                                   tokens on an arch with PDL, sgl_kernel's moe_sum_reduce beyond;
                                   s = routed_scaling_factor = route_scale)

Two adapters: ``sglang.fused_moe[float32]`` (hidden states, gate and expert weights float32: the
unquantised float32 path, ``get_config_dtype_str`` "float32") and ``sglang.fused_moe[float16]``
(all float16, as a float16 model serves; the activation line then rounds silu(gate) before the
product, where CUDA's silu_and_mul rounds once). topk_weights are float32 and the GEMMs accumulate
in float32 in both. ``compute_type`` is the caller's: ``tl.bfloat16 if hidden_states.dtype ==
torch.bfloat16 else tl.float16``, so float32 hidden states have each GEMM's float32 accumulator
rounded to float16 before it is stored (into a float32 buffer): SGLang's, recorded in
properties/peers/xfail.json. bfloat16 does not run under the interpreter (triton_shims). Config:
``get_default_config`` (no tuned file for these dtypes): BLOCK_SIZE_M/N/K, GROUP_SIZE_M =
16/32/64/1 when T <= E, else 64/64/32/8 (``tiles``).

Routing (``route`` and the Routing ``moe_forward`` returns): score softmax only (declines sigmoid:
fused_topk's sigmoid path goes to moe_route_radix, a CUDA kernel, for the shapes it covers), dropless (declines
capacity zero and finite), normalize "none" (renormalize=False) or "before_drop"/"after_drop"
(renormalize=True; the same when nothing drops), drop order token_major (positions are the
aligned order of moe_align_small_numel, declines the others; the CUDA align kernel SGLang runs for
<= 64 experts orders pairs within an expert by atomicAdd, scheduling-dependent, which changes no
output), gates = topk_weights * route_scale (SGLang applies the factor to the summed output;
refimpl scales the gates). ``probs`` is not an output of the kernel: it is
softmax(z) in float32 (torch), as the kernel computes it (float16 logits upcast on load).
Capabilities: {"route", "forward.fused"}.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pathlib
import sys
import types

import numpy as np

from ..core import Unsupported
from ..moe_protocol import fused_expert_weights
from ._common import Unavailable, require
from ._moe import check_options, moe_adapter, routing
from .triton_shims import setup as triton_setup

CHECKED = "sglang 0.5.23 (wheel)"
FILES = {
    "fused_moe_triton_kernels": "sglang/kernels/ops/moe/fused_moe_triton_kernels.py",
    "moe_align_small_numel": "sglang/kernels/ops/moe/moe_align_small_numel.py",
    "moe_fused_gate": "sglang/kernels/ops/moe/moe_fused_gate.py",
    "fused_moe_triton_config": "sglang/srt/layers/moe/moe_runner/triton_utils/fused_moe_triton_config.py",
}
MODULES = {
    "fused_moe_triton_kernels": "sglang.kernels.ops.moe.fused_moe_triton_kernels",
    "moe_align_small_numel": "sglang.kernels.ops.moe.moe_align_small_numel",
    "moe_fused_gate": "sglang.kernels.ops.moe.moe_fused_gate",
    "fused_moe_triton_config": "sglang.srt.layers.moe.moe_runner.triton_utils.fused_moe_triton_config",
}
ORDERS = ("k_major", "priority", "per_expert_top_prob", "per_expert_top_masked_logit", "random")
DECLINES = {"capacity": {"zero", "finite"}, "drop_order": set(ORDERS), "score": {"sigmoid"}}
ROUTE_KEYS = ("normalize", "capacity", "drop_order", "seed", "padding_mask", "score", "route_scale")


class _Flags:
    """sglang.srt.environ.envs stand-in: every flag at its default, off."""

    def __getattr__(self, name):
        return types.SimpleNamespace(get=lambda: False)


def _never(name):
    def fn(*args, **kwargs):
        raise RuntimeError(f"{name}: a quantisation kernel, never called on the unquantised path")

    return fn


def _stand_ins() -> dict:
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        m.__path__ = []  # a package, so submodules resolve
        return m

    false = lambda *a, **k: False  # noqa: E731
    exec_ctx = types.SimpleNamespace(deterministic=types.SimpleNamespace(enable_deterministic_inference=False))
    mods = [module(n) for n in ("sglang", "sglang.kernels", "sglang.kernels.ops", "sglang.kernels.ops.moe",
                                "sglang.kernels.ops.quantization", "sglang.srt", "sglang.srt.layers",
                                "sglang.srt.layers.moe", "sglang.srt.layers.moe.moe_runner",
                                "sglang.srt.layers.moe.moe_runner.triton_utils")]
    mods += [
        module("sglang.kernels.jit.utils", is_arch_support_pdl=false, get_jit_cuda_arch=_never("get_jit_cuda_arch")),
        module("sglang.kernels.jit"),
        module("sglang.kernels.ops.quantization.fp8_kernel", **{n: _never(n) for n in (
            "per_token_group_quant_fp8", "scaled_fp8_quant", "sglang_per_token_group_quant_fp8")}),
        module("sglang.kernels.ops.quantization.int8_kernel", **{n: _never(n) for n in (
            "per_token_group_quant_int8", "per_token_quant_int8", "sglang_per_token_group_quant_int8")}),
        module("sglang.kernels.kernel_api_logging", debug_kernel_api=lambda f: f),
        module("sglang.kernels.ops.moe.moe_route_radix", covered=false),
        module("sglang.srt.batch_invariant_ops", is_batch_invariant_mode_enabled=false),
        module("sglang.srt.environ", envs=_Flags()),
        module("sglang.srt.layers.moe.utils", get_moe_padding_size=lambda use_aiter: 0),
        module("sglang.srt.runtime_context", get_exec=lambda: exec_ctx),
        module("sglang.srt.utils", is_cuda=lambda: True, is_hip=false, is_cpu=false, cpu_has_amx_support=false,
               is_sm90_supported=false, get_device_name=lambda device_id=0: "cpu-interpreter"),
    ]
    return {m.__name__: m for m in mods}


@contextlib.contextmanager
def _sglang_stand_ins(stand_ins):
    """The stand-in sglang packages in sys.modules while SGLang's code runs (moe_fused_gate imports
    sglang.srt.environ when called), removed afterwards."""
    if any(n in sys.modules for n in stand_ins):
        raise Unavailable("unavailable: an sglang package is already imported; run the sglang adapters in a "
                          "process without it")
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for n in stand_ins:
            sys.modules.pop(n, None)


def _load(root: pathlib.Path, stand_ins) -> dict:
    out = {}
    with _sglang_stand_ins(stand_ins):
        for key, rel in FILES.items():
            spec = importlib.util.spec_from_file_location(MODULES[key], root / rel)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[MODULES[key]] = mod
            try:
                spec.loader.exec_module(mod)
            finally:
                sys.modules.pop(MODULES[key], None)
            out[key] = mod
    return out


def sglang_fused_moe():
    """SGLang's Triton fused MoE and its softmax top-k router (source via REFIMPL_LIBRARY_SOURCES)."""
    src = os.environ.get("REFIMPL_LIBRARY_SOURCES", "")
    root = pathlib.Path(src)
    if not src or not all((root / rel).is_file() for rel in FILES.values()):
        raise Unavailable("unavailable: set REFIMPL_LIBRARY_SOURCES to a directory holding "
                          + ", ".join(FILES.values())
                          + " (an unpacked sglang wheel: pip download sglang==0.5.23 --no-deps)")
    triton_setup()
    torch = require("torch")
    tl = require("triton.language")
    stand_ins = _stand_ins()
    mods = _load(root, stand_ins)
    kern, align, gate, cfg = (mods[k] for k in FILES)

    def topk(z, k, renormalize):
        with _sglang_stand_ins(stand_ins):
            w, ids = gate.moe_fused_gate(z, None, int(k), scoring_func="softmax", renormalize=renormalize)
        return w, ids

    def aligned(ids, block_m, E):
        """moe_align_block_size's buffers (its sizing, +1-offset buckets) filled by moe_align_small_numel."""
        numel = ids.numel()
        cap = numel * block_m if numel < E + 1 else numel + (E + 1) * (block_m - 1)
        cap = (cap + 3) // 4 * 4
        sorted_ids = torch.empty(cap, dtype=torch.int32)
        expert_ids = torch.empty(-(-cap // block_m), dtype=torch.int32)
        post = torch.empty(1, dtype=torch.int32)
        with _sglang_stand_ins(stand_ins):
            align.moe_align_small_numel(ids, E + 1, block_m, sorted_ids, expert_ids, post)
        return sorted_ids, expert_ids, post

    def positions(sorted_ids, expert_ids, post, T, k, block_m):
        """Slot of pair (t, j) within its expert: its rank among the expert's aligned pairs."""
        n = int(post[0])
        s, ex = sorted_ids[:n].numpy(), expert_ids[: n // block_m].numpy()
        pos = np.full(T * k, -1, np.int64)
        for e in np.unique(ex):
            pairs = s[np.repeat(ex == e, block_m)]
            pairs = pairs[pairs < T * k]
            pos[pairs] = np.arange(len(pairs))
        return pos.reshape(T, k)

    def adapter(dtype):
        """The pipeline with hidden states, gate and expert weights in ``dtype`` (float32 | float16);
        topk_weights float32 and float32 accumulation, as SGLang computes them."""
        name = f"sglang.fused_moe[{dtype}]"
        config_dtype = "float32" if dtype == "float32" else None  # get_config_dtype_str

        def route_torch(z64, k, options):
            check_options(name, DECLINES, options, ROUTE_KEYS)
            if options.get("score", "softmax") != "softmax":
                raise Unsupported(f"{name}: declines score={options['score']!r}")
            normalize = options.get("normalize", "none")
            z = torch.tensor(np.asarray(z64, dtype))
            T, E = z.shape
            w, ids = topk(z, k, normalize != "none")
            block_m = cfg.get_default_config(T, E, 0, 0, int(k), config_dtype, False)["BLOCK_SIZE_M"]
            sorted_ids, expert_ids, post = aligned(ids, block_m, E)
            idx = ids.long().numpy()
            r = routing(torch.softmax(z.float(), -1).double().numpy(), idx,
                        w.double().numpy() * float(options.get("route_scale", 1.0)), np.ones((T, k), bool),
                        positions(sorted_ids, expert_ids, post, T, int(k), block_m), None,
                        np.bincount(idx.ravel(), minlength=E), normalize, "token_major")
            return r, w, ids, (sorted_ids, expert_ids, post)

        def route(logits, k, **options):
            return route_torch(logits, k, options)[0]

        def moe_forward(x, W, experts, k, *, layout="sparse", **options):
            if layout != "sparse":
                raise Unsupported(f"{name}: a fused kernel has no layout {layout!r}")
            xt = torch.tensor(np.asarray(x, dtype))
            z = xt @ torch.tensor(np.asarray(W, dtype)).T  # the model's gate linear, in the model's dtype
            T, E, k = xt.shape[0], z.shape[1], int(k)
            r, w, ids, (sorted_ids, expert_ids, post) = route_torch(z.double().numpy(), k, options)
            f = fused_expert_weights(experts)
            if f.activation not in ("silu", "gelu"):
                raise Unsupported(f"{name}: no activation {f.activation!r} (SGLang's silu, gelu)")
            w1, b1, w2, b2 = (None if a is None else torch.tensor(np.asarray(a, dtype))
                              for a in (f.w1, f.b1, f.w2, f.b2))
            config = cfg.get_default_config(T, E, w2.shape[2], w1.shape[2], k, config_dtype, False)
            compute = tl.bfloat16 if xt.dtype == torch.bfloat16 else tl.float16  # _fused_moe_kernel_sequence's rule
            N = w1.shape[1]
            cache1 = torch.empty(T * k, N, dtype=xt.dtype)

            def gemm(A, B, bias, C, mul_routed_weight, top_k):
                kern.invoke_fused_moe_kernel(A, B, bias, C, None, None, None, w, ids, sorted_ids, expert_ids, post,
                                             mul_routed_weight, top_k, config, compute_type=compute,
                                             use_fp8_w8a8=False, use_int8_w8a8=False, use_int8_w8a16=False,
                                             use_int4_w4a16=False, per_channel_quant=False)

            gemm(xt, w1, b1, cache1, False, k)
            h = cache1.view(-1, N)
            if f.gated:
                cache2 = torch.nn.functional.silu(h[..., : N // 2]) * h[..., N // 2:]
            else:
                cache2 = torch.nn.functional.silu(h) if f.activation == "silu" else torch.nn.functional.gelu(h)
            scale = float(options.get("route_scale", 1.0))
            out = torch.empty(T, w2.shape[1], dtype=xt.dtype)
            direct = k == 1 and scale == 1.0  # moe_combine_topk: the second GEMM writes the output
            cache3 = out.unsqueeze(0) if direct else torch.empty(T, k, w2.shape[1], dtype=xt.dtype)
            gemm(cache2.contiguous(), w2, b2, cache3, True, 1)
            if not direct:
                if k == 2 and scale == 1.0:
                    torch.add(cache3[:, 0], cache3[:, 1], out=out)
                else:
                    with _sglang_stand_ins(stand_ins):
                        kern.moe_sum_reduce_triton(cache3, out, scale)
            return out.double().numpy(), r

        return moe_adapter(name=name, route=route, moe_forward=moe_forward,
                           capabilities=frozenset({"route", "forward.fused"}), declines=DECLINES, precision=dtype,
                           tiles=(16, 64), preset="refimpl.moe (softmax, dropless, token_major slots)",
                           library=f"{CHECKED} (triton {require('triton').__version__})")

    return [adapter("float32"), adapter("float16")]
