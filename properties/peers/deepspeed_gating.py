"""DeepSpeed's top-k gating: deepspeed.moe.sharded_moe.topkgating.

Presets: ``refimpl.moe.presets.deepspeed_topk`` (drop_policy="probs", DeepSpeed
>= 0.19.0) and ``deepspeed_topk_position`` (drop_policy="position"). Read and run
in deepspeed 0.19.8 (CPU accelerator). topkgating has no randomness (top1gating's
use_rts and top2gating's second-expert sampling are the random ones; not wrapped).

Mapping: an int capacity C is passed as capacity_factor=0, min_capacity=C
(_capacity: ceil(S/E * 0) = 0, raised to min_capacity); capacity None is
drop_tokens=False (dropless). The function returns (l_aux, combine_weights (S, E, C),
dispatch_mask (S, E, C), exp_counts): kept, position and gates are read off
dispatch_mask / combine_weights, counts is exp_counts. It does not return the
top-k indices or the probabilities: the adapter computes them with the function's
own lines (gates = softmax(logits, dim=1); top_idx = torch.topk(gates, k)).

drop_order: "per_expert_top_prob" -> drop_policy="probs", "token_major" ->
"position" (both number survivors by cumsum over tokens; dropless too). Declined:
normalize "none" and "before_drop" (gates are renormalised over the kept choices),
the other drop orders, capacity "zero" (topkgating raises "Class values must be
smaller than num_classes" for capacity 0), padding masks (no used_token argument).
Arithmetic: float64 in, float64 out.
"""

from __future__ import annotations

import os

import numpy as np

from ._common import require, version
from ._moe import check_options, moe_adapter, routing

POLICY = {"per_expert_top_prob": "probs", "token_major": "position"}


def deepspeed_topk():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    torch = require("torch")
    ds = require("deepspeed")
    sm = require("deepspeed.moe.sharded_moe")
    name = "deepspeed.topkgating"
    declines = {"normalize": {"none", "before_drop"}, "capacity": {"zero"},
                "drop_order": {"k_major", "priority", "per_expert_top_masked_logit", "random"}}

    def route(logits, k, **options):
        check_options(name, declines, options)
        order = options.get("drop_order", "per_expert_top_prob")
        C = options.get("capacity")
        z = torch.tensor(np.asarray(logits, np.float64))
        T, E = z.shape
        with torch.no_grad():
            _, combine, dispatch, exp_counts = sm.topkgating(
                z, int(k), 0.0, 0 if C is None else int(C), drop_tokens=C is not None, drop_policy=POLICY[order])
            probs = torch.nn.functional.softmax(z, dim=1)  # topkgating's own lines
            idx = torch.topk(probs, k=int(k), dim=1)[1]
        d = dispatch.numpy()[np.arange(T)[:, None], idx.numpy()]  # (T, k, C)
        w = combine.numpy()[np.arange(T)[:, None], idx.numpy()]
        kept = d.any(axis=-1)
        position = np.where(kept, d.argmax(axis=-1), -1)
        return routing(probs.numpy(), idx.numpy(), w.sum(axis=-1), kept, position, C, exp_counts.numpy(),
                       "after_drop", order)

    return moe_adapter(name=name, route=route, capabilities=frozenset({"route", "route.drop_orders"}),
                       declines=declines, preset="refimpl.moe.presets.deepspeed_topk (+ deepspeed_topk_position)",
                       library=f"deepspeed {version(ds)}, torch {version(torch)}")
