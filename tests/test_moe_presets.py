"""Presets against line-by-line NumPy transcriptions of the libraries' routing code.

Each ``_lib_*`` function below follows the cited library function statement by
statement (cumsum locations, masks, clamps), in float64, so that the preset's
description in terms of named conventions is checked against the library's own
formulation. Randomness the libraries use (jitter, Gumbel second expert, RTS) is
switched off as in the presets.
"""

import math

import numpy as np
import pytest

from refimpl import moe as M
from refimpl.moe import presets as P


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _one_hot(i, n):
    return np.eye(n, dtype=np.int64)[i]


def _argmax_first(a):  # torch.argmax / tf.argmax: first maximal index
    return np.argmax(a, axis=1)


def _cases(n=25, seed=0, E_choices=(4, 8, 16), T_choices=(5, 16, 33, 64)):
    rng = np.random.default_rng(seed)
    for i in range(n):
        E = int(rng.choice(E_choices))
        T = int(rng.choice(T_choices))
        scale = [0.5, 2.0, 6.0][i % 3]
        z = rng.standard_normal((T, E)) * scale
        if i % 4 == 0:  # crowd one expert so that capacity binds
            z[:, rng.integers(E)] += 3.0
        yield z


# --- DeepSpeed top2gating (top2_2nd_expert_sampling=False), deepspeed/moe/sharded_moe.py -------


def _lib_deepspeed_top2(logits, capacity_factor, min_capacity):
    gates = _softmax(logits)
    S, E = gates.shape
    indices1_s = _argmax_first(gates)
    mask1 = _one_hot(indices1_s, E)
    logits_except1 = np.where(mask1.astype(bool), -np.inf, logits)
    indices2_s = _argmax_first(logits_except1)
    mask2 = _one_hot(indices2_s, E)
    locations1 = np.cumsum(mask1, axis=0) - 1
    locations2 = np.cumsum(mask2, axis=0) - 1
    locations2 += mask1.sum(axis=0, keepdims=True)
    me, ce = gates.mean(axis=0), mask1.mean(axis=0)
    l_aux = np.mean(me * ce) * E * E
    exp_counts = (mask1 + mask2).sum(axis=0)
    capacity = int(np.ceil(np.float32(S / E) * np.float32(capacity_factor * 2)))
    capacity = max(capacity, min_capacity)
    mask1 = mask1 * (locations1 < capacity)
    mask2 = mask2 * (locations2 < capacity)
    locations1_s = (locations1 * mask1).sum(axis=1)
    locations2_s = (locations2 * mask2).sum(axis=1)
    gates1_s = (gates * mask1).sum(axis=1)
    gates2_s = (gates * mask2).sum(axis=1)
    denom_s = np.maximum(gates1_s + gates2_s, np.finfo(np.float64).eps)
    gates1_s, gates2_s = gates1_s / denom_s, gates2_s / denom_s
    kept = np.stack([mask1.sum(axis=1) > 0, mask2.sum(axis=1) > 0], axis=1)
    return dict(indices=np.stack([indices1_s, indices2_s], 1), gates=np.stack([gates1_s, gates2_s], 1),
                position=np.where(kept, np.stack([locations1_s, locations2_s], 1), -1), kept=kept,
                capacity=capacity, counts=exp_counts, l_aux=l_aux)


@pytest.mark.parametrize("cf", [1.0, 0.5, 1.25])
def test_deepspeed_top2_matches_transcription(cf):
    for z in _cases():
        lib = _lib_deepspeed_top2(z, cf, 8)
        r = M.route(z, 2, preset="deepspeed_top2", capacity_factor=cf)
        assert r.capacity == lib["capacity"]
        for f in ("indices", "kept", "position", "counts"):
            np.testing.assert_array_equal(getattr(r, f), lib[f], err_msg=f)
        np.testing.assert_allclose(r.gates, lib["gates"], rtol=1e-13, atol=1e-15)
        assert P.deepspeed_top2.balance_loss(r) == pytest.approx(lib["l_aux"], rel=1e-12)


# --- fairseq top2gating ('all', normalize after dropping), fairseq/modules/moe/top2gate.py ------


def _lib_fairseq_top2(logits, bpr=False):
    gates = _softmax(logits)
    S, E = gates.shape
    capacity = 2 * math.ceil(S / E)
    indices1_s = _argmax_first(gates)
    mask1 = _one_hot(indices1_s, E)
    indices2_s = _argmax_first(np.where(mask1.astype(bool), -np.inf, logits))
    mask2 = _one_hot(indices2_s, E)
    if bpr:
        order = np.argsort(-gates.max(axis=1), kind="stable")
        inv = np.argsort(order, kind="stable")
        locations1 = ((np.cumsum(mask1[order], axis=0) - 1) * mask1[order])[inv]
        locations2 = ((np.cumsum(mask2[order], axis=0) - 1) * mask2[order])[inv]
    else:
        locations1 = np.cumsum(mask1, axis=0) - 1
        locations2 = np.cumsum(mask2, axis=0) - 1
    locations2 = locations2 + mask1.sum(axis=0, keepdims=True)
    l_aux = np.mean(gates.mean(axis=0) * mask1.mean(axis=0)) * E * E
    mask1 = mask1 * (locations1 < capacity)
    mask2 = mask2 * (locations2 < capacity)
    g1, g2 = (gates * mask1).sum(axis=1), (gates * mask2).sum(axis=1)
    denom = np.maximum(g1 + g2, np.finfo(np.float64).eps)
    kept = np.stack([mask1.sum(1) > 0, mask2.sum(1) > 0], 1)
    pos = np.stack([(locations1 * mask1).sum(1), (locations2 * mask2).sum(1)], 1)
    return dict(gates=np.stack([g1 / denom, g2 / denom], 1), kept=kept, position=np.where(kept, pos, -1),
                capacity=capacity, l_aux=l_aux)


@pytest.mark.parametrize("bpr", [False, True])
def test_fairseq_top2_matches_transcription(bpr):
    for z in _cases(seed=1):
        lib = _lib_fairseq_top2(z, bpr)
        r = M.route(z, 2, preset="fairseq_top2", drop_order="priority" if bpr else "k_major")
        assert r.capacity == lib["capacity"]
        np.testing.assert_array_equal(r.kept, lib["kept"])
        np.testing.assert_array_equal(r.position, lib["position"])
        np.testing.assert_allclose(r.gates, lib["gates"], rtol=1e-13, atol=1e-15)
        assert P.fairseq_top2.balance_loss(r) == pytest.approx(lib["l_aux"], rel=1e-12)


def test_fairseq_capacity_has_no_factor():
    with pytest.raises(ValueError, match="no factor"):
        M.route(np.zeros((4, 2)), 2, preset="fairseq_top2", capacity_factor=1.5)


# --- lingvo Top2GatingOnLogits (legacy_mtf_behavior, policy 'all'), gshard_layers.py ------------


def _lib_lingvo_top2(logits, capacity_factor):
    raw = _softmax(logits)
    S, E = raw.shape
    c = int((S * capacity_factor) / E)
    if c == 0:
        c = 4
    while c % 4:
        c += 1
    index_1 = _argmax_first(raw)
    mask_1 = _one_hot(index_1, E).astype(float)
    gate_1 = (raw * mask_1).sum(1)
    without1 = raw * (1 - mask_1)
    index_2 = _argmax_first(without1)
    mask_2 = _one_hot(index_2, E).astype(float)
    gate_2 = (without1 * mask_2).sum(1)
    denom = gate_1 + gate_2 + 1e-9
    gate_1, gate_2 = gate_1 / denom, gate_2 / denom
    pos1 = np.cumsum(mask_1, axis=0) - mask_1  # exclusive cumsum
    aux = np.mean(raw.mean(0) * mask_1.mean(0)) * E * E
    mask_1 = mask_1 * (pos1 < c)
    pos1 = (pos1 * mask_1).sum(1)
    mask_1_count = mask_1.sum(0)
    mask_1_flat = mask_1.sum(1)
    pos2 = np.cumsum(mask_2, axis=0) - mask_2 + mask_1_count[None, :]
    mask_2 = mask_2 * (pos2 < c)
    pos2 = (pos2 * mask_2).sum(1)
    mask_2_flat = mask_2.sum(1)
    kept = np.stack([mask_1_flat > 0, mask_2_flat > 0], 1)
    return dict(gates=np.stack([gate_1 * mask_1_flat, gate_2 * mask_2_flat], 1), kept=kept,
                position=np.where(kept, np.stack([pos1, pos2], 1).astype(int), -1), capacity=c, aux=aux)


@pytest.mark.parametrize("cf", [2.0, 1.0, 0.3])
def test_gshard_matches_transcription(cf):
    for z in _cases(seed=2):
        lib = _lib_lingvo_top2(z, cf)
        r = M.route(z, 2, preset="gshard", capacity_factor=cf)
        assert r.capacity == lib["capacity"]
        np.testing.assert_array_equal(r.kept, lib["kept"])
        np.testing.assert_array_equal(r.position, lib["position"])
        np.testing.assert_allclose(r.gates, lib["gates"], rtol=1e-13, atol=1e-15)
        assert P.gshard.balance_loss(r) == pytest.approx(lib["aux"], rel=1e-12)


# --- Mesh TF _switch_gating + capacity (transformer_moe_layer_v1) --------------------------------


def _lib_switch(logits, cf, min_cap=4):
    raw = _softmax(logits)
    S, E = raw.shape
    cap = max(min(S, int((S * cf) / E)), min_cap)
    index = _argmax_first(raw)
    gate = raw[np.arange(S), index]
    mask = _one_hot(index, E).astype(float)
    loss = np.mean(raw.mean(0) * mask.mean(0)) * E * E
    pos = (np.cumsum(mask, 0) - mask) * mask
    mask = mask * (pos < cap)
    flat = mask.sum(1)
    return dict(gates=(gate * flat)[:, None], kept=(flat > 0)[:, None],
                position=np.where(flat > 0, pos.sum(1), -1)[:, None].astype(int), capacity=cap, loss=loss)


def test_switch_matches_transcription():
    for z in _cases(seed=3):
        lib = _lib_switch(z, 1.25)
        r = M.route(z, 1, preset="switch")
        assert r.capacity == lib["capacity"]
        np.testing.assert_array_equal(r.kept, lib["kept"])
        np.testing.assert_array_equal(r.position, lib["position"])
        np.testing.assert_allclose(r.gates, lib["gates"], rtol=1e-15)
        assert P.switch.balance_loss(r) == pytest.approx(lib["loss"], rel=1e-12)


# --- Tutel extract_critical (normalize_gate, no BPR), tutel/impls/fast_dispatch.py --------------


def _lib_tutel(scores, top_k, cf):
    S, E = scores.shape
    topk_indices = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    masks = [_one_hot(topk_indices[:, i], E) for i in range(top_k)]
    gates_s = [(scores * m).sum(1) for m in masks]
    loc1 = np.cumsum(masks[0], 0) - 1
    locations = [(loc1 * masks[0]).sum(1)]
    acc = None
    for i in range(1, top_k):
        acc = masks[i - 1].sum(0, keepdims=True) if acc is None else acc + masks[i - 1].sum(0, keepdims=True)
        loc = np.cumsum(masks[i], 0) - 1 + acc
        locations.append((loc * masks[i]).sum(1))
    if top_k > 1:
        denom = np.maximum(sum(gates_s), np.finfo(np.float64).eps)
        gates_s = [g / denom for g in gates_s]
    cap = top_k * int(cf * ((S + E - 1) // E))
    loc = np.stack(locations, 1)
    kept = loc < cap
    # gshard_loss: mask of top-1 with hot value E / S
    me = scores.sum(0)
    ce = (masks[0] * (E / S)).sum(0)
    return dict(gates=np.stack(gates_s, 1) * kept, kept=kept, position=np.where(kept, loc, -1), capacity=cap,
                l_aux=float((me * ce).sum() / S))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_tutel_matches_transcription(k):
    for z in _cases(seed=4):
        lib = _lib_tutel(_softmax(z), k, 1.0)
        r = M.route(z, k, preset="tutel")
        assert r.capacity == lib["capacity"]
        np.testing.assert_array_equal(r.kept, lib["kept"])
        np.testing.assert_array_equal(r.position, lib["position"])
        np.testing.assert_allclose(r.gates, lib["gates"], rtol=1e-13, atol=1e-15)
        assert P.tutel.balance_loss(r) == pytest.approx(lib["l_aux"], rel=1e-12)


# --- Megablocks: sort flattened (T, k) choices by expert, keep the first C of each bin -----------


def _lib_megablocks(logits, k, cf):
    scores = _softmax(logits)
    T, E = scores.shape
    w = np.sort(scores, axis=1)[:, ::-1][:, :k]
    idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_experts = idx.ravel()
    order = np.argsort(top_experts, kind="stable")  # ops.sort (radix: stable)
    tokens_per_expert = np.bincount(top_experts, minlength=E)
    cap = int(cf * (k * T / E)) or int(tokens_per_expert.max())
    bins = np.concatenate([[0], np.cumsum(tokens_per_expert)])
    kept_flat = np.zeros(T * k, bool)
    pos_flat = -np.ones(T * k, int)
    for e in range(E):
        members = order[bins[e]:bins[e + 1]]
        kept_flat[members[:cap]] = True
        pos_flat[members[:cap]] = np.arange(min(cap, members.size))
    loss = E / (T * k) * float(tokens_per_expert @ scores.mean(0))
    return dict(gates=(w.ravel() * kept_flat).reshape(T, k), kept=kept_flat.reshape(T, k),
                position=pos_flat.reshape(T, k), loss=loss)


@pytest.mark.parametrize("k, cf", [(1, 1.0), (2, 1.0), (2, 0.5), (2, 0.0)])
def test_megablocks_matches_transcription(k, cf):
    for z in _cases(seed=5):
        lib = _lib_megablocks(z, k, cf)
        r = M.route(z, k, preset="megablocks", capacity_factor=cf)
        np.testing.assert_array_equal(r.kept, lib["kept"])
        np.testing.assert_array_equal(r.position, lib["position"])
        np.testing.assert_allclose(r.gates, lib["gates"], rtol=1e-15)
        assert P.megablocks.balance_loss(r) == pytest.approx(lib["loss"], rel=1e-12)


# --- HF Mixtral / Qwen2-MoE ----------------------------------------------------------------------


def test_mixtral_and_qwen2_moe_match_transcription():
    for z in _cases(seed=6):
        w = _softmax(z)
        idx = np.argsort(-w, axis=1, kind="stable")[:, :2]
        top = np.take_along_axis(w, idx, 1)
        r = M.route(z, 2, preset="mixtral")
        np.testing.assert_array_equal(r.indices, idx)
        np.testing.assert_allclose(r.gates, top / top.sum(1, keepdims=True), rtol=1e-15)
        assert r.kept.all() and r.capacity is None
        q = M.route(z, 2, preset="qwen2_moe")
        np.testing.assert_allclose(q.gates, top, rtol=0)


def _lib_mixtral_loss(logits_per_layer, num_experts, top_k):
    cat = np.concatenate(logits_per_layer)
    w = _softmax(cat)
    sel = np.argsort(-w, axis=1, kind="stable")[:, :top_k]
    expert_mask = np.eye(num_experts)[sel]  # (N, k, E)
    tokens_per_expert = expert_mask.mean(0)  # (k, E)
    router_prob = w.mean(0)
    return float((tokens_per_expert * router_prob[None, :]).sum() * num_experts)


def test_mixtral_loss_is_pooled_over_layers():
    rng = np.random.default_rng(7)
    layers = [rng.standard_normal((20, 8)) * 2 for _ in range(3)]
    routings = [M.route(z, 2, preset="mixtral") for z in layers]
    pooled = M.balance_loss_layers(routings, pool="concat")
    assert pooled == pytest.approx(_lib_mixtral_loss(layers, 8, 2), rel=1e-12)
    mean = M.balance_loss_layers(routings, pool="mean")
    assert abs(pooled - mean) > 1e-6  # pooling is a convention: the two differ


# --- DeepSeek-V2 MoEGate and DeepSeek-V3 Gate ----------------------------------------------------


def _lib_deepseek_v3_gate(logits, bias, topk, n_groups, topk_groups, route_scale):
    scores = 1 / (1 + np.exp(-logits))
    original = scores
    scores = scores + bias
    T, E = scores.shape
    s = scores.reshape(T, n_groups, -1)
    group_scores = np.sort(s, axis=-1)[..., ::-1][..., :2].sum(-1)
    indices = np.argsort(-group_scores, axis=-1, kind="stable")[:, :topk_groups]
    mask = np.ones((T, n_groups), bool)
    np.put_along_axis(mask, indices, False, axis=1)
    s = np.where(mask[..., None], -np.inf, s).reshape(T, E)
    idx = np.argsort(-s, axis=-1, kind="stable")[:, :topk]
    weights = np.take_along_axis(original, idx, 1)
    weights = weights / weights.sum(-1, keepdims=True)
    return idx, weights * route_scale


def test_deepseek_v3_matches_transcription():
    rng = np.random.default_rng(8)
    for _ in range(20):
        z = rng.standard_normal((12, 32)) * 2
        b = rng.standard_normal(32) * 0.3
        idx, w = _lib_deepseek_v3_gate(z, b, 8, 8, 4, 2.5)
        r = M.route(z, 8, preset="deepseek_v3", selection_bias=b)
        np.testing.assert_array_equal(r.indices, idx)
        np.testing.assert_allclose(r.gates, w, rtol=1e-14)
        # the bias steers selection only: gates are the unbiased sigmoid scores
        s = 1 / (1 + np.exp(-z))
        np.testing.assert_allclose(r.gates / 2.5, np.take_along_axis(s, idx, 1) /
                                   np.take_along_axis(s, idx, 1).sum(1, keepdims=True), rtol=1e-14)


def _lib_deepseek_v2_gate(logits, topk, n_group, topk_group, routed_scaling_factor, alpha, seq_len):
    scores = _softmax(logits)
    T, E = scores.shape
    group_scores = scores.reshape(T, n_group, -1).max(-1)
    group_idx = np.argsort(-group_scores, axis=-1, kind="stable")[:, :topk_group]
    group_mask = np.zeros((T, n_group))
    np.put_along_axis(group_mask, group_idx, 1, axis=1)
    score_mask = np.repeat(group_mask, E // n_group, axis=1)
    tmp = np.where(score_mask.astype(bool), scores, 0.0)
    idx = np.argsort(-tmp, axis=-1, kind="stable")[:, :topk]
    w = np.take_along_axis(tmp, idx, 1) * routed_scaling_factor
    bsz = T // seq_len  # seq_aux
    ce = np.zeros((bsz, E))
    for b in range(bsz):
        np.add.at(ce[b], idx[b * seq_len:(b + 1) * seq_len].ravel(), 1.0)
    ce /= seq_len * topk / E
    aux = float((ce * scores.reshape(bsz, seq_len, E).mean(1)).sum(1).mean() * alpha)
    return idx, w, aux


def test_deepseek_v2_matches_transcription():
    rng = np.random.default_rng(9)
    for _ in range(20):
        z = rng.standard_normal((12, 16)) * 2
        idx, w, aux = _lib_deepseek_v2_gate(z, 6, 8, 3, 16.0, 0.003, seq_len=4)
        r = M.route(z, 6, preset="deepseek_v2")
        np.testing.assert_array_equal(r.indices, idx)  # sorted=False in the library: compare as sets there
        np.testing.assert_allclose(r.gates, w, rtol=1e-14)
        assert P.deepseek_v2.balance_loss(r, alpha=0.003, groups=3) == pytest.approx(aux, rel=1e-12)


# --- DeepSpeed topkgating drop policies ----------------------------------------------------------


def _lib_deepspeed_topk(logits, k, capacity, drop_policy, ranks="probs"):
    """topkgating; ranks="logits" is v0.15-v0.18 (topk over logits), "probs" v0.19+ (over softmax)."""
    T, E = logits.shape
    gates = _softmax(logits)
    ranked = logits if ranks == "logits" else gates
    top_idx = np.argsort(-ranked, axis=1, kind="stable")[:, :k]
    top_gate = np.take_along_axis(ranked, top_idx, 1)
    topk_masked_gates = np.zeros_like(logits)
    np.put_along_axis(topk_masked_gates, top_idx, top_gate, axis=1)
    mask = np.zeros((T, E), bool)
    np.put_along_axis(mask, top_idx, True, axis=1)
    l_aux = np.mean(gates.mean(0) * mask.mean(0)) * E * E / k
    if drop_policy == "probs":
        cap_idx = np.argsort(-topk_masked_gates, axis=0, kind="stable")[:capacity]  # ties: lower token
        cap_mask = np.zeros((T, E))
        np.put_along_axis(cap_mask, cap_idx, 1, axis=0)
        mask = mask & cap_mask.astype(bool)
        locations = np.cumsum(mask, 0) - 1
    else:
        locations = np.cumsum(mask, 0) - 1
        mask = mask & (locations < capacity)
    gm = gates * mask
    gm = gm / np.maximum(gm.sum(-1, keepdims=True), np.finfo(np.float64).eps)
    kept = np.take_along_axis(mask, top_idx, 1)
    return dict(kept=kept, position=np.where(kept, np.take_along_axis(locations, top_idx, 1), -1),
                gates=np.take_along_axis(gm, top_idx, 1), l_aux=l_aux)


@pytest.mark.parametrize("policy, ranks, preset", [("probs", "probs", "deepspeed_topk"),
                                                   ("probs", "logits", "deepspeed_topk_v0_15"),
                                                   ("position", "probs", "deepspeed_topk_position")])
def test_deepspeed_topk_matches_transcription(policy, ranks, preset):
    for i, z in enumerate(_cases(seed=10)):
        k = 1 + i % 3
        if k > z.shape[1]:
            continue
        C = 1 + i % 5
        lib = _lib_deepspeed_topk(z, k, C, policy, ranks)
        r = M.route(z, k, preset=preset, capacity=C)
        np.testing.assert_array_equal(r.kept, lib["kept"])
        np.testing.assert_array_equal(r.position, lib["position"])
        np.testing.assert_allclose(r.gates, lib["gates"], rtol=1e-13, atol=1e-15)
        assert P.ALL[preset].balance_loss(r) == pytest.approx(lib["l_aux"], rel=1e-12)


def test_deepspeed_v0_15_probs_policy_drops_negative_logits_for_unselected_zeros():
    # expert 0 has a single assignment (token 0, logit -1) and C = 1, yet DeepSpeed 0.15-0.18's
    # topk over the zero-filled logit column prefers token 1's unselected 0: token 0 is dropped.
    # Since 0.19.0 the column holds probabilities (> 0 for the selected): nothing is dropped.
    z = np.array([[-1.0, -2.0], [-3.0, 5.0]])
    r = M.route(z, 1, preset="deepspeed_topk_v0_15", capacity=1)
    np.testing.assert_array_equal(r.kept[:, 0], [False, True])
    assert M.route(z, 1, preset="deepspeed_topk", capacity=1).kept.all()
    assert M.route(z, 1, drop_order="per_expert_top_prob", capacity=1).kept.all()


# --- capacity expressions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "preset, S, E, k, cf, want",
    [
        ("switch", 1024, 64, 1, 1.25, 20),  # int(1280 / 64)
        ("switch", 8, 64, 1, 1.25, 4),  # min_expert_capacity
        ("flaxformer", 100, 8, 2, 1.0, 12),  # round(12.5) = 12, half to even
        ("flaxformer", 108, 8, 2, 1.0, 14),  # round(13.5) = 14
        ("gshard", 100, 16, 2, 2.0, 12),  # int(12.5) = 12, a multiple of 4
        ("gshard", 100, 16, 2, 1.5, 12),  # int(9.375) = 9 -> 12
        ("gshard", 10, 16, 2, 1.0, 4),  # int(0.625) = 0 -> 4
        ("deepspeed_top1", 100, 8, 1, 1.0, 13),  # ceil(12.5)
        ("deepspeed_top1", 16, 8, 1, 1.0, 8),  # min_capacity 8
        ("deepspeed_top2", 100, 8, 2, 1.0, 25),  # ceil(12.5 * 2)
        ("deepspeed_topk", 100, 8, 3, 1.0, 38),  # ceil(12.5 * 3)
        ("fairseq_top2", 100, 8, 2, None, 26),  # 2 * ceil(12.5)
        ("megablocks", 100, 8, 2, 1.0, 25),  # int(1.0 * 2 * 100 / 8)
        ("tutel", 100, 8, 2, 1.0, 26),  # 2 * int(1.0 * ceil(100 / 8))
    ],
)
def test_library_capacity_expressions(preset, S, E, k, cf, want):
    kw = {} if cf is None else {"capacity_factor": cf}
    assert M.route(np.zeros((S, E)), k, preset=preset, **kw).capacity == want


def test_dropless_capacity_rules():
    assert M.route(np.zeros((10, 4)), 2, preset="megablocks", capacity_factor=0.0).capacity is None
    assert M.route(np.zeros((10, 4)), 2, preset="tutel", capacity_factor=0.0).capacity is None


def test_every_preset_routes_and_documents_its_source():
    for name, p in P.ALL.items():
        assert p.source and p.library and "." in p.source, name
        assert p.__doc__ and p.source in p.__doc__
        assert getattr(P, name) is p
        E = 16
        k = p.k or 2
        r = M.route(np.random.default_rng(0).standard_normal((32, E)), k, preset=name)
        assert r.indices.shape == (32, k)


def test_preset_k_is_enforced_and_overrides_apply():
    with pytest.raises(ValueError, match="exactly k=2"):
        M.route(np.zeros((4, 4)), 1, preset="gshard")
    r = M.route(np.zeros((4, 4)), 2, preset="mixtral", normalize="none")
    assert r.options.normalize == "none"
    with pytest.raises(ValueError, match="preset"):
        M.route(np.zeros((4, 4)), 2, preset="nonexistent")
