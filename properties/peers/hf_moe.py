"""HF transformers MoE routers: Mixtral and Qwen2-MoE, with load_balancing_loss_func.

Presets: ``refimpl.moe.presets.mixtral`` and ``qwen2_moe``. Read and run in
transformers 5.23.0 and 5.25.0: models/mixtral/modeling_mixtral.py MixtralTopKRouter.forward
(router_logits = linear(x, W); probs = softmax(router_logits.float()); top-k of the
probabilities; renormalise) and MixtralExperts.forward (an expert's tokens are
``torch.where(one_hot(top_k_index).permute(2, 1, 0)[e])``: ordered by choice slot,
then token: k-major); models/qwen2_moe/modeling_qwen2_moe.py Qwen2MoeTopKRouter
(the same with renormalisation only when config.norm_topk_prob, default False).

The adapter runs the real router module on the spec's logits: a router with
hidden_size = E and weight = I (linear(z, I) = z exactly in float64). The router
returns no probabilities; ``probs`` is softmax(router_logits.float()), the router's
own line. Everything is dropless (no capacity). The router's softmax is float32
(precision "float32").

Declines (``declines``): capacity "zero" and "finite" (dropless only), drop orders other than
k_major (positions follow MixtralExperts' k-major order), and the normalisation
the module does not compute ("none" for Mixtral and Qwen2 with norm_topk_prob=True,
"before_drop"/"after_drop" for Qwen2 with norm_topk_prob=False).
Capabilities: {"route"}. ``balance_loss`` calls the module's
load_balancing_loss_func (f k_hot, scale E, softmax, one group only); it is not
declared as "losses", which also promises cv_squared and the z-loss HF lacks.
"""

from __future__ import annotations

import functools

import numpy as np

from ..core import Unsupported
from ._common import require, version
from ._moe import check_options, moe_adapter, routing

ALL_ORDERS = ("token_major", "priority", "per_expert_top_prob", "per_expert_top_masked_logit", "random")


def _k_major_positions(torch, idx, E):
    """MixtralExperts.forward's token order per expert, as slot numbers (T, k)."""
    T, k = idx.shape
    pos = np.full((T, k), -1, np.int64)
    expert_mask = torch.nn.functional.one_hot(idx, num_classes=E + 1).permute(2, 1, 0)
    for e in range(E):
        top_k_pos, token_idx = torch.where(expert_mask[e])
        pos[token_idx.numpy(), top_k_pos.numpy()] = np.arange(token_idx.numel())
    return pos


def _adapter(family: str, norm_topk_prob: bool):
    torch = require("torch")
    tf = require("transformers")
    if family == "mixtral":
        mod = require("transformers.models.mixtral.modeling_mixtral")
        Config, Router = tf.MixtralConfig, mod.MixtralTopKRouter
        n_experts_key, name, preset = "num_local_experts", "hf.mixtral_router", "refimpl.moe.presets.mixtral"
    else:
        mod = require("transformers.models.qwen2_moe.modeling_qwen2_moe")
        Config, Router = tf.Qwen2MoeConfig, mod.Qwen2MoeTopKRouter
        n_experts_key, preset = "num_experts", "refimpl.moe.presets.qwen2_moe"
        name = f"hf.qwen2_moe_router[norm_topk_prob={norm_topk_prob}]"
    normalizes = ("before_drop", "after_drop") if norm_topk_prob else ("none",)
    declines = {"capacity": {"zero", "finite"}, "drop_order": set(ALL_ORDERS),
                "normalize": {"none", "before_drop", "after_drop"} - set(normalizes)}

    @functools.lru_cache(maxsize=64)
    def router(E, k):
        kw = {"hidden_size": E, n_experts_key: E, "num_experts_per_tok": k}
        if family != "mixtral":
            kw["norm_topk_prob"] = norm_topk_prob
        r = Router(Config(**kw)).double()
        with torch.no_grad():
            r.weight.copy_(torch.eye(E, dtype=torch.float64))
        return r.eval()

    def route(logits, k, **options):
        check_options(name, declines, options)
        z = np.asarray(logits, np.float64)
        T, E = z.shape
        with torch.no_grad():
            router_logits, scores, idx = router(E, int(k))(torch.tensor(z))
            probs = torch.nn.functional.softmax(router_logits.float(), dim=-1)  # the router's line
        return routing(probs.double().numpy(), idx.numpy(), scores.double().numpy(), np.ones((T, k), bool),
                       _k_major_positions(torch, idx, E), None, np.bincount(idx.numpy().ravel(), minlength=E),
                       options.get("normalize", normalizes[0]), "k_major")

    def balance_loss(r, *, alpha=1.0, f="k_hot", scale="E", probs="softmax", groups=1):
        if (f, scale, probs, groups) != ("k_hot", "E", "softmax", 1):
            raise Unsupported(f"{name}: load_balancing_loss_func computes only f=k_hot, scale=E, one group")
        p = np.asarray(r.probs, np.float64)
        T, E = p.shape
        with np.errstate(divide="ignore"):
            z = torch.tensor(np.log(p))  # softmax(log p) = p: the loss recomputes softmax and top-k
        mask = None if r.token_mask.all() else torch.tensor(r.token_mask.astype(np.float64))
        return alpha * float(mod.load_balancing_loss_func((z,), E, top_k=r.indices.shape[1], attention_mask=mask))

    return moe_adapter(name=name, route=route, balance_loss=balance_loss, capabilities=frozenset({"route"}),
                       declines=declines, precision="float32", preset=preset,
                       library=f"transformers {version(tf)}, torch {version(torch)}")


def hf_mixtral():
    return _adapter("mixtral", True)


def hf_qwen2_moe():
    return [_adapter("qwen2_moe", False), _adapter("qwen2_moe", True)]
