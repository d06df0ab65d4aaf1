"""Named presets: the routing conventions of real libraries, each read from its source.

Use as ``route(logits, k, preset="deepspeed_top2", capacity_factor=1.25)`` or
``route(logits, k, preset=presets.deepspeed_top2)``; explicit convention
keywords override the preset's. Each preset records the library file and
function it follows, its balance loss variant and the value that loss takes
under uniform routing, written out by hand (``uniform_balance_loss``) so that
a property can check it against the loss actually computed.

What a preset reproduces: selection, the gate formula, the capacity expression
(in the library's own floating-point order), the drop order, the balance-loss
variant. What it does not: the library's float32/bfloat16 rounding, its random
number streams (jitter, Gumbel sampling of the second expert, random token
selection), and library-specific padding quirks (listed per preset).

Tie-breaking: the spec breaks ties toward the lower expert id; jax/tf top_k and
torch.argmax do the same, torch.topk documents nothing.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import numpy as np

from .losses import BalanceLoss
from .. import _validate as V
from .._validate import moe as VM
from ..preset_registry import Registry, Source
from .options import RouteOptions

# ---------------------------------------------------------------------------
# capacity expressions, written as each library writes them (floating point)

RULES = ("mesh_tf", "flaxformer", "lingvo", "deepspeed_top1", "deepspeed_top2", "deepspeed_topk", "fairseq",
         "megablocks", "tutel")


def _int(x):
    """int(x) truncating like the libraries' int(); inf stays inf (reported by the caller)."""
    return int(x) if math.isfinite(x) else math.inf


@dataclasses.dataclass(frozen=True)
class LibraryCapacity:
    """A library's capacity expression with a replaceable ``factor``.

    ``rule`` names the expression (see :meth:`__call__`); ``min_capacity`` and
    ``alignment`` are the library's own knobs where it has them.
    """

    rule: str
    factor: float = 1.0
    min_capacity: int = 0
    alignment: int = 1

    @property
    def fixed_capacity(self) -> Optional[str]:
        """The expression when it has no factor to replace (fairseq's), else None."""
        return "fairseq's training capacity 2 * ceil(S / E)" if self.rule == "fairseq" else None

    def with_factor(self, factor) -> "LibraryCapacity":
        """This rule with ``factor`` (checked by ``refimpl._validate.capacity_factor``)."""
        return dataclasses.replace(self, factor=factor)

    def __post_init__(self):
        V.choice(self.rule, "rule", RULES)
        V.real_number(self.factor, "factor", minimum=0.0)
        V.count(self.min_capacity, "min_capacity")
        V.count(self.alignment, "alignment", minimum=1)

    def __call__(self, S: int, E: int, k: int) -> Optional[int]:
        S, E, k = V.count(S, "S"), V.count(E, "E", minimum=1), V.count(k, "k", minimum=1)
        with np.errstate(over="ignore"):
            c = self._capacity(S, E, k)
        return VM.library_capacity(c, self.rule, S, E, k, self.factor)

    def _capacity(self, S: int, E: int, k: int):
        """The expression, in the library's floating-point order (may be inf for a huge factor)."""
        cf = self.factor
        if self.rule == "mesh_tf":
            # transformer_moe_layer_v1: min(S, int((S * cf) / E)), then max(., min_expert_capacity)
            return max(min(S, _int((S * cf) / E)), self.min_capacity)
        if self.rule == "flaxformer":
            # moe_layers.MoeLayer: int(round(cf * S / E)), then max(., min_expert_capacity)
            return max(_int(round(cf * S / E)) if math.isfinite(cf * S / E) else math.inf, self.min_capacity)
        if self.rule == "lingvo":
            # Top2GatingOnLogits with expert_capacity_dim=0: int((S * cf) / E), 0 -> 4, up to a multiple of 4
            c = _int((S * cf) / E)
            if isinstance(c, float):  # inf
                return c
            if c == 0:
                c = 4
            while c % 4:
                c += 1
            return c
        if self.rule.startswith("deepspeed"):
            # _capacity: ceil((S / E) * torch.tensor(cf * m)), float32; m = 1 (top1), 2 (top2), k (topk)
            m = {"deepspeed_top1": 1, "deepspeed_top2": 2, "deepspeed_topk": k}[self.rule]
            c = np.ceil(np.float32(S / E) * np.float32(cf * m))
            return max(_int(c), self.min_capacity)
        if self.rule == "fairseq":
            # top2gating (training): 2 * math.ceil(num_tokens / num_experts)
            return 2 * math.ceil(S / E)
        if self.rule == "megablocks":
            # ParallelMLP.expert_capacity: int(cf * (k * T / E)); 0 means dropless
            c = _int(cf * (k * S / E))
            return None if c == 0 else c
        if self.rule == "tutel":
            # extract_critical: k * int(cf * ceil(S / E)), rounded up to `alignment`; cf = 0: dropless
            if cf == 0:
                return None
            c = k * _int(cf * ((S + E - 1) // E))
            if isinstance(c, float):  # inf
                return c
            if c % self.alignment:
                c += self.alignment - c % self.alignment
            return c
        raise AssertionError(self.rule)  # checked by __post_init__


# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Preset:
    """A library's routing conventions.

    name:        attribute name in this module and the string ``route`` accepts
    library:     the library and version range
    source:      file and function the conventions were read from
    options:     the RouteOptions
    k:           the k the library's function hard-wires (top-1 / top-2), or None
    balance:     the balance-loss variant (BalanceLoss)
    uniform_balance_loss: hand-written value of that loss under uniform routing,
                 as a function of (k, E), for alpha = 1
    pool:        how the library combines layers' balance losses
    z_loss:      the router z-loss form, or None
    notes:       what is not reproduced, and disagreements with docs/conventions.md#moe-presets
    """

    name: str
    library: str
    source: str
    options: RouteOptions
    balance: BalanceLoss
    uniform_balance_loss: Callable[[int, int], float]
    k: Optional[int] = None
    pool: str = "sum"
    z_loss: Optional[str] = None
    notes: str = ""

    def __post_init__(self):
        object.__setattr__(self, "__doc__", self.describe())

    def describe(self) -> str:
        return (f"{self.library} preset '{self.name}'.\n\nSource: {self.source}\n\n"
                f"Options: {self.options}\nBalance loss: {self.balance}, layers: {self.pool}; "
                f"z-loss: {self.z_loss}\n\n{self.notes}")

    def supports(self, k: int, E: int) -> bool:
        """Whether (k, E) is a shape this preset routes."""
        if self.k is not None and k != self.k:
            return False
        o = self.options
        if o.n_groups is not None:
            if E % o.n_groups or k > o.topk_groups * (E // o.n_groups):
                return False
            if o.group_score == "top2_sum" and E // o.n_groups < 2:
                return False
        return 1 <= k <= E

    def balance_loss(self, routing, *, alpha=1.0, groups=1) -> float:
        return self.balance(routing, alpha=alpha, groups=groups)


switch = Preset(
    name="switch",
    library="Switch Transformer / Mesh TensorFlow",
    source="tensorflow/mesh mesh_tensorflow/transformer/moe.py: _switch_gating (policy 'argmax'), "
           "capacity in transformer_moe_layer_v1",
    k=1,
    options=RouteOptions(normalize="none", drop_order="k_major",
                         capacity=LibraryCapacity("mesh_tf", factor=1.25, min_capacity=4)),
    balance=BalanceLoss(f="top1", scale="E"),
    uniform_balance_loss=lambda k, E: 1.0,
    z_loss="mean over non-padding tokens of logsumexp^2, times moe_z_loss (then moe_loss_coef)",
    notes="Gate = raw top-1 probability, zeroed when dropped; positions by exclusive cumsum in "
          "token order. Capacity max(min(S, int(S*cf/E)), 4) with capacity_factor_train = 1.25 "
          "(eval 2.0). Loss reduce_mean(density_1_proxy * density_1) * E^2 = E * sum f P. Padding "
          "('importance') is not reproduced: Mesh TF computes density_1 before masking padding.",
)

flaxformer = Preset(
    name="flaxformer",
    library="flaxformer (T5X MoE)",
    source="google/flaxformer flaxformer/architectures/moe/routing.py: "
           "TokensChooseScatterRouter._compute_routing_instructions, _load_balancing_loss, "
           "_router_z_loss; capacity in moe_layers.py MoeLayer",
    options=RouteOptions(normalize="none", drop_order="k_major",
                         capacity=LibraryCapacity("flaxformer", factor=1.0, min_capacity=4)),
    balance=BalanceLoss(f="k_hot", scale="E"),
    uniform_balance_loss=lambda k, E: float(k),
    z_loss="sum of logsumexp^2 / (num_groups * tokens_per_group)",
    notes="Raw top-k probabilities as combine weights; all top-1 choices claim slots before any "
          "top-2 choice; batch_prioritized_routing=True is drop_order='priority' (tokens sorted "
          "by top-1 probability). Capacity max(int(round(cf*S/E)), min_expert_capacity=4); the "
          "factor has no default in flaxformer. Loss mean_e(f_e P_e) * E^2 with k-hot f, per group "
          "then mean (groups=G). Padding tokens have their probabilities zeroed and may still be "
          "selected; not reproduced.",
)

gshard = Preset(
    name="gshard",
    library="GShard (lingvo)",
    source="tensorflow/lingvo lingvo/core/gshard_layers.py: Top2GatingOnLogits "
           "(second_expert_policy='all', legacy_mtf_behavior=True, expert_capacity_dim=0)",
    k=2,
    options=RouteOptions(normalize="before_drop", normalize_eps=1e-9, drop_order="k_major",
                         capacity=LibraryCapacity("lingvo", factor=2.0)),
    balance=BalanceLoss(f="top1", scale="E"),
    uniform_balance_loss=lambda k, E: 1.0,
    notes="Greedy second expert. Gates renormalised over both choices before capacity "
          "(gate / (g1 + g2 + 1e-9)), then zeroed if dropped. Second choices' positions start "
          "after the kept first choices. Capacity int(S*cf/E), 0 -> 4, rounded up to a multiple of "
          "4; k is not in the formula. Loss mean_e(density_1_proxy * density_1) * E^2, top-1 f; "
          "padding zeroes the numerators, the means still divide by S (legacy), not reproduced.",
)

deepspeed_top1 = Preset(
    name="deepspeed_top1",
    library="DeepSpeed",
    source="microsoft/DeepSpeed deepspeed/moe/sharded_moe.py: top1gating (use_rts=False, "
           "noisy_gate_policy=None, drop_tokens=True), _capacity",
    k=1,
    options=RouteOptions(normalize="none", drop_order="k_major",
                         capacity=LibraryCapacity("deepspeed_top1", factor=1.0, min_capacity=8)),
    balance=BalanceLoss(f="top1", scale="E"),
    uniform_balance_loss=lambda k, E: 1.0,
    notes="Raw top-1 probability as gate. Capacity ceil((S/E) * cf) in float32, at least "
          "min_capacity = 8 (TopKGate default). WHICH tokens survive an over-full expert is not "
          "specified: with use_rts=False DeepSpeed keeps the tokens torch.topk returns over a 0/1 "
          "mask (not position order; it differed in 190 of 200 cases, docs/conventions.md#observed-behaviour) and "
          "then renumbers survivors by cumsum. This preset promises only: indices, counts, the "
          "number kept per expert (min(count, C)), the gates of kept tokens, the loss, and the "
          "no-drop case; its k_major choice of survivors is the spec's. use_rts=True is "
          "drop_order='random' with an explicit seed (DeepSpeed's RNG is not reproduced).",
)

deepspeed_top2 = Preset(
    name="deepspeed_top2",
    library="DeepSpeed",
    source="microsoft/DeepSpeed deepspeed/moe/sharded_moe.py: top2gating "
           "(top2_2nd_expert_sampling=False, drop_tokens=True), _capacity",
    k=2,
    options=RouteOptions(normalize="after_drop", drop_order="k_major",
                         capacity=LibraryCapacity("deepspeed_top2", factor=1.0, min_capacity=8)),
    balance=BalanceLoss(f="top1", scale="E"),
    uniform_balance_loss=lambda k, E: 1.0,
    notes="Greedy second expert (argmax of logits without the first). Capacity ceil((S/E) * 2cf) "
          "in float32, at least 8. Positions: second choices after all first choices (k-major). "
          "Gates renormalised over the kept choices, denominator clamped at float32 eps (the spec "
          "gives 0 when both are dropped, as DeepSpeed does). Loss mean_e(me * ce) * E^2 with "
          "top-1 ce.",
)

deepspeed_topk = Preset(
    name="deepspeed_topk",
    library="DeepSpeed >= 0.19.0",
    source="deepspeedai/DeepSpeed deepspeed/moe/sharded_moe.py: topkgating (drop_policy='probs', "
           "drop_tokens=True), _capacity; read at tags v0.19.0 and v0.19.5 and in the installed 0.19.8 "
           "(commit 853c93894 'fix: topkgating major bug (#7986)' made the ranked column probabilities)",
    options=RouteOptions(normalize="after_drop", drop_order="per_expert_top_prob",
                         capacity=LibraryCapacity("deepspeed_topk", factor=1.0, min_capacity=8)),
    balance=BalanceLoss(f="k_hot", scale="E/k"),
    uniform_balance_loss=lambda k, E: 1.0,
    notes="Capacity ceil((S/E) * k cf) in float32, at least 8. Drop policy 'probs': top_gate, top_idx = "
          "topk(softmax(logits)); each expert's column of topk_masked_gates (the selected "
          "probabilities, zeros elsewhere) keeps its C largest (torch.topk(dim=0, sorted=False): "
          "ties unspecified, the spec takes the lower token). Survivors are renumbered in token "
          "order. Gates renormalised over kept choices. Loss mean_e(me * ce) * E^2 / k, k-hot ce. "
          "v0.15.0-v0.18.x ranked logits instead: preset deepspeed_topk_v0_15. drop_policy="
          "'position' is the preset deepspeed_topk_position.",
)

deepspeed_topk_v0_15 = dataclasses.replace(
    deepspeed_topk,
    name="deepspeed_topk_v0_15",
    library="DeepSpeed 0.15.0 - 0.18.x",
    source="microsoft/DeepSpeed deepspeed/moe/sharded_moe.py: topkgating (drop_policy='probs', "
           "drop_tokens=True), read at tags v0.15.0, v0.18.0 and v0.18.9 (topkgating first appears in v0.15.0)",
    options=dataclasses.replace(deepspeed_topk.options, drop_order="per_expert_top_masked_logit"),
    notes="As deepspeed_topk, but top_gate, top_idx = topk(logits), so topk_masked_gates holds the "
          "selected *logits* with zeros elsewhere: a selected token with a negative logit can lose "
          "its slot to unselected zeros even when the expert is not full. Fixed in v0.19.0.",
)

deepspeed_topk_position = dataclasses.replace(
    deepspeed_topk,
    name="deepspeed_topk_position",
    library="DeepSpeed >= 0.15.0",
    source="deepspeed/moe/sharded_moe.py: topkgating (drop_policy='position'), unchanged v0.15.0 - 0.19.8",
    options=dataclasses.replace(deepspeed_topk.options, drop_order="token_major"),
    notes="As deepspeed_topk, but slots by cumsum of the k-hot (T, E) mask over tokens: all of a "
          "token's choices before the next token's (token-major).",
)

fairseq_top2 = Preset(
    name="fairseq_top2",
    library="fairseq (mirror of fairscale)",
    source="facebookresearch/fairseq fairseq/modules/moe/top2gate.py: top2gating "
           "(second_expert_policy='all', normalize_gate_prob_before_dropping=False, "
           "batch_prioritized_routing=False, training mode)",
    k=2,
    options=RouteOptions(normalize="after_drop", drop_order="k_major",
                         capacity=LibraryCapacity("fairseq")),
    balance=BalanceLoss(f="top1", scale="E"),
    uniform_balance_loss=lambda k, E: 1.0,
    notes="Capacity 2 * ceil(S/E) in training (no factor; eval uses a token fraction). "
          "batch_prioritized_routing=True is drop_order='priority' (torch argsort is not stable: "
          "the spec breaks priority ties by token index). normalize_gate_prob_before_dropping=True "
          "is normalize='before_drop'. Loss mean_e(me * ce) * E^2, top-1 ce; padding zeroes the "
          "masks but not me, and both means divide by S: not reproduced. fairscale's top2gating "
          "differs: Gumbel-sampled second expert, capacity 2*S//E and mean_e(me * ce) without "
          "E^2 (uniform value 1/E^2, BalanceLoss(f='top1', scale='1/E')).",
)

mixtral = Preset(
    name="mixtral",
    library="HF transformers Mixtral",
    source="huggingface/transformers src/transformers/models/mixtral/modeling_mixtral.py: "
           "MixtralSparseMoeBlock.forward, load_balancing_loss_func",
    options=RouteOptions(normalize="after_drop", capacity=None),
    balance=BalanceLoss(f="k_hot", scale="E"),
    uniform_balance_loss=lambda k, E: float(k),
    pool="concat",
    notes="softmax, top-k, renormalise (dropless, so before = after). Loss over the "
          "concatenated router logits of all layers (pool='concat'): E * sum over the k slots and "
          "experts of tokens_per_expert * router_prob_per_expert; with an attention mask both "
          "means run over real tokens. Mixtral-8x7B: E = 8, k = 2, router_aux_loss_coef = 0.02.",
)

qwen2_moe = Preset(
    name="qwen2_moe",
    library="HF transformers Qwen2-MoE",
    source="huggingface/transformers src/transformers/models/qwen2_moe/modeling_qwen2_moe.py: "
           "Qwen2MoeSparseMoeBlock.forward (norm_topk_prob), load_balancing_loss_func",
    options=RouteOptions(normalize="none", capacity=None),
    balance=BalanceLoss(f="k_hot", scale="E"),
    uniform_balance_loss=lambda k, E: float(k),
    pool="concat",
    notes="As Mixtral but renormalisation is the flag norm_topk_prob, default False "
          "(normalize='none'; pass normalize='after_drop' for True). A shared expert, gated by "
          "sigmoid(x W_shared), is added outside the router (not part of route()).",
)

deepseek_v2 = Preset(
    name="deepseek_v2",
    library="DeepSeek-V2",
    source="deepseek-ai/DeepSeek-V2 modeling_deepseek.py: MoEGate.forward "
           "(topk_method='group_limited_greedy', norm_topk_prob=False, seq_aux=True), "
           "config n_group=8, topk_group=3, routed_scaling_factor=16.0",
    options=RouteOptions(normalize="none", route_scale=16.0, capacity=None,
                         n_groups=8, topk_groups=3, group_score="max"),
    balance=BalanceLoss(f="k_hot", scale="E/k"),
    uniform_balance_loss=lambda k, E: 1.0,
    notes="softmax; group score = max probability in the group; experts outside the chosen "
          "groups get score 0 (masked_fill 0.0, the spec uses -inf: the same selection unless "
          "probabilities underflow to 0). Gates = 16 * raw probability (with norm_topk_prob the "
          "library renormalises with +1e-20 and does not scale). Expert-level loss "
          "alpha * sum_i f_i P_i with f_i = E/(kT) * count_i, per sequence (seq_aux: groups = "
          "batch size) then mean; uniform value alpha. Device- and communication-level losses are "
          "not encoded.",
)

deepseek_v3 = Preset(
    name="deepseek_v3",
    library="DeepSeek-V3",
    source="deepseek-ai/DeepSeek-V3 inference/model.py: Gate.forward; "
           "inference/configs/config_671B.json (n_expert_groups=8, n_limited_groups=4, "
           "route_scale=2.5, score_func='sigmoid', n_activated_experts=8, n_routed_experts=256)",
    options=RouteOptions(score="sigmoid", normalize="after_drop", route_scale=2.5, capacity=None,
                         n_groups=8, topk_groups=4, group_score="top2_sum"),
    balance=BalanceLoss(f="k_hot", scale="E/k", probs="normalized_scores"),
    uniform_balance_loss=lambda k, E: 1.0,
    notes="Sigmoid scores s; selection on s + b (pass the bias as selection_bias); group score = "
          "sum of the two largest biased scores (the library uses max when the model has no bias: "
          "pass group_score='max'); gates = s / sum of selected s, times 2.5. Balance: the paper's "
          "complementary sequence-wise loss (DeepSeek-V3 report eqs. 17-20), f_i = E/(kT) count_i, "
          "P_i = mean of s_i / sum_j s_j, per sequence (groups); uniform value alpha. Not in the "
          "inference code.",
)

megablocks = Preset(
    name="megablocks",
    library="Megablocks",
    source="databricks/megablocks megablocks/layers/router.py: LearnedRouter.forward; "
           "megablocks/layers/moe.py: ParallelMLP.expert_capacity, load_balancing_loss, "
           "batched_load_balancing_loss, indices_and_bins; router.py batched_router_zloss",
    options=RouteOptions(normalize="none", drop_order="token_major",
                         capacity=LibraryCapacity("megablocks", factor=1.0)),
    balance=BalanceLoss(f="k_hot", scale="E/k"),
    uniform_balance_loss=lambda k, E: 1.0,
    pool="mean",
    z_loss="per router mean of logsumexp^2, times moe_zloss_weight",
    notes="Raw probabilities (moe_normalize_expert_weights=None; p = 1 is renormalisation "
          "before capacity). Capacity int(cf * k * T / E), 0 meaning dropless. Tokens are sorted "
          "by expert from the flattened (T, k) choices, so each expert's buffer fills token-major. "
          "Loss E/(T k) * dot(tokens_per_expert, mean scores), averaged over layers.",
)

tutel = Preset(
    name="tutel",
    library="Tutel",
    source="microsoft/tutel tutel/impls/fast_dispatch.py: extract_critical (normalize_gate=True, "
           "batch_prioritized_routing=False); tutel/impls/losses.py: gshard_loss; "
           "tutel/impls/moe_layer.py routing()",
    options=RouteOptions(normalize="before_drop", normalize_top1=False, drop_order="k_major",
                         capacity=LibraryCapacity("tutel", factor=1.0)),
    balance=BalanceLoss(f="top1", scale="E"),
    uniform_balance_loss=lambda k, E: 1.0,
    pool="sum",
    notes="Gates renormalised over the top-k before capacity, only for k > 1 (normalize_top1=False; "
          "clamp at eps). Positions "
          "k-major (acc_base of earlier choices). Capacity k * int(cf * ceil(S/E)), rounded up to "
          "`alignment`; cf = 0 is dropless, cf < 0 (a bound on the dropless capacity) is not "
          "encoded. gshard_loss is E * sum_e P_e f_e with top-1 f (uniform 1; an earlier conventions "
          "table said '/k', the source has top-1 f). load_importance_loss uses torch's sample variance.",
)

def _src(library, file, function, version) -> Source:
    return Source("docs/conventions.md#moe-presets", library, file, function, version)


_DS = "deepspeed/moe/sharded_moe.py"
#: name -> Preset, each with its Source (``ALL.source(name)``); refimpl.preset_registry.
ALL = Registry("preset", [
    (switch.name, switch, _src("Mesh TF", "mesh_tensorflow/transformer/moe.py",
                               "_switch_gating, transformer_moe_layer_v1", "read")),
    (flaxformer.name, flaxformer, _src("flaxformer", "flaxformer/architectures/moe/routing.py; moe_layers.py",
                                       "TokensChooseScatterRouter, _load_balancing_loss; MoeLayer", "read")),
    (gshard.name, gshard, _src("lingvo", "lingvo/core/gshard_layers.py", "Top2GatingOnLogits", "read")),
    (deepseek_v2.name, deepseek_v2, _src("DeepSeek-V2", "modeling_deepseek.py", "MoEGate.forward", "read")),
    (deepseek_v3.name, deepseek_v3, _src("DeepSeek-V3", "inference/model.py", "Gate.forward", "read")),
    (deepspeed_top1.name, deepspeed_top1, _src("DeepSpeed", _DS, "top1gating, _capacity", "read")),
    (deepspeed_top2.name, deepspeed_top2, _src("DeepSpeed", _DS, "top2gating", "read")),
    (deepspeed_topk.name, deepspeed_topk, _src("DeepSpeed", _DS, "topkgating (drop_policy='probs')", "run 0.19.8")),
    (deepspeed_topk_v0_15.name, deepspeed_topk_v0_15, _src("DeepSpeed", _DS, "topkgating",
                                                           "read at tags v0.15.0, v0.18.0, v0.18.9")),
    (deepspeed_topk_position.name, deepspeed_topk_position, _src("DeepSpeed", _DS, "topkgating (drop_policy='position')",
                                                                 "run 0.19.8")),
    (fairseq_top2.name, fairseq_top2, _src("fairseq", "fairseq/modules/moe/top2gate.py", "top2gating", "read")),
    (mixtral.name, mixtral, _src("transformers", "models/mixtral/modeling_mixtral.py",
                                 "MixtralSparseMoeBlock.forward, load_balancing_loss_func", "run 5.25.0 and 5.23.0")),
    (qwen2_moe.name, qwen2_moe, _src("transformers", "models/qwen2_moe/modeling_qwen2_moe.py",
                                     "Qwen2MoeSparseMoeBlock.forward", "run 5.25.0 and 5.23.0")),
    (megablocks.name, megablocks, _src("Megablocks", "megablocks/layers/router.py; megablocks/layers/moe.py",
                                       "LearnedRouter.forward; expert_capacity, load_balancing_loss", "read")),
    (tutel.name, tutel, _src("Tutel", "tutel/impls/fast_dispatch.py; tutel/impls/losses.py",
                             "extract_critical; gshard_loss", "read")),
], kind=Preset)


def get(preset) -> Preset:
    """A Preset from a Preset or its name (``ALL.lookup``)."""
    return ALL.lookup(preset)
