"""Issue 24's remaining pieces beside the libraries that define them, run on the CPU in float64.

* fla 0.6.0 (the triton extra) ``fla/modules/feature_map.py``: ``SquaredReLUFeatureMap``, ``HedgehogFeatureMap``;
* lucidrains ``linformer`` 0.2.3 ``linformer/linformer.py`` ``LinformerSelfAttention`` (commit 970e1c3), found
  under ``$REFIMPL_LIBRARY_SOURCES/linformer/`` (a checkout), skipped otherwise.

Bounds are stated per test (float64 on both sides unless the library rounds to float32).
"""

from __future__ import annotations

import importlib
import os
import pathlib
import sys

import numpy as np
import pytest

from refimpl.mixers import linear_attention as LA
from refimpl.mixers import linformer as LF

torch = pytest.importorskip("torch", reason="torch is needed to run the libraries")
ROOT = os.environ.get("REFIMPL_LIBRARY_SOURCES", "")
RNG = np.random.default_rng(2024)


def _checkout(name: str, rel: str) -> pathlib.Path:
    base = pathlib.Path(ROOT) / name
    if not ROOT or not (base / rel).is_file():
        pytest.skip(f"library source {name}/{rel} not found (set REFIMPL_LIBRARY_SOURCES to a directory holding it)")
    return base


def _t(x):
    return torch.tensor(np.ascontiguousarray(x), dtype=torch.float64)


def test_fla_feature_maps():
    fm = pytest.importorskip("fla.modules.feature_map", reason="fla (the triton extra) defines the feature maps")
    x = RNG.standard_normal((2, 3, 5, 4)) * 3
    got = fm.SquaredReLUFeatureMap()(_t(x)).numpy()  # fla's sqrelu computes in float32: x rounded (u), squared
    # (2u), the square rounded (u): within 3 u32 relative of the float64 square
    np.testing.assert_allclose(got, LA.apply_feature_map(x, "squared_relu"), rtol=3 * 2.0**-24, atol=0)
    hh = fm.HedgehogFeatureMap(4).double()  # its layer starts as the identity: softmax([2x, -2x])
    want = LA.apply_feature_map(np.concatenate([2 * x, -2 * x], axis=-1), "exp_normalised")
    np.testing.assert_allclose(hh(_t(x)).detach().numpy(), want, rtol=4e-15, atol=1e-300)


def test_lucidrains_linformer():
    base = _checkout("linformer", "linformer/linformer.py")
    sys.path.insert(0, str(base))
    try:
        mod = importlib.import_module("linformer.linformer")
    finally:
        sys.path.remove(str(base))
    dim, n, kp, H = 8, 7, 3, 2
    torch.manual_seed(0)
    layer = mod.LinformerSelfAttention(dim, seq_len=n, k=kp, heads=H).double().eval()
    x = RNG.standard_normal((2, n, dim))
    ref = layer(_t(x)).detach().numpy()
    W_q, W_k, W_v = (getattr(layer, f"to_{c}").weight.detach().numpy().T for c in "qkv")
    E, F = layer.proj_k.detach().numpy().T, layer.proj_v.detach().numpy().T  # proj_k is E^T (n x k_proj)
    split = lambda y: y.reshape(2, n, H, dim // H).transpose(0, 2, 1, 3)  # noqa: E731
    out = LF.linformer_attention(split(x @ W_q), split(x @ W_k), split(x @ W_v), E, F)
    got = out.transpose(0, 2, 1, 3).reshape(2, n, dim) @ layer.to_out.weight.detach().numpy().T
    got = got + layer.to_out.bias.detach().numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-13)
