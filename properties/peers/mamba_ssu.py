"""mamba's Triton ``selective_state_update`` (the Mamba-2 decode step), run token by token as a
selective scan (kind ``ssm_scan``).

mamba_ssm cannot be pip-installed without building its CUDA extensions, so the kernel is loaded
from a source checkout: set ``REFIMPL_LIBRARY_SOURCES`` to a directory holding
``mamba/mamba_ssm/ops/triton/selective_state_update.py`` and ``.../softplus.py`` (the same
variable tests/test_mixers_libraries.py reads; checked at state-spaces/mamba e9594ce,
mamba_ssm 2.3.2.post1). Only those two files are executed; the package's ``__init__`` (which
imports the CUDA extensions) is not: while they load, ``mamba_ssm``, ``mamba_ssm.ops`` and
``mamba_ssm.ops.triton`` are empty stand-in packages, removed afterwards.

    kind's argument            selective_state_update argument (one call per position t)
    u[:, :, t] (B, H, P)        x (batch, nheads, dim)
    delta[:, :, t]              dt (dt_softplus=False: delta is the step already)
    A (H, P, N)                 A (nheads, dim, dstate)
    B, C[:, :, t] (B, G, N)     B, C (batch, ngroups, dstate): head h reads group h // (H / G)
    D (H, P) or None            D; None -> zeros (x * 0 adds an exact 0)
    z[:, :, t] or None          z (out *= z sigmoid(z))
    initial_state (B, H, P, N)  state (updated in place: a copy; zeros when None)
    dt_bias                     zeros (nheads, dim): at e9594ce the wrapper's
                                ``*(dt_bias.stride(0), dt_bias.stride(1)) if dt_bias is not None else 0``
                                unpacks 0 for None (TypeError), the same for D
    torch.cuda.device(None)     entered by the wrapper for a CPU tensor: a no-op under the
                                interpreter (torch 2.13 raises on None)

Precision float32 (the kernel loads every operand ``.to(tl.float32)``). The decode step is what
mamba's generation runs; the chunked SSD scan (``ssd_combined.py``) is not shipped: the
``ssm_scan`` kind draws a per-channel A (H, P, N), which the SSD's scalar-per-head decay cannot take.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pathlib
import sys
import types
from unittest import mock

import numpy as np

from ..mixers_scan import ScanAdapter
from ._common import Unavailable, make, require
from .triton_shims import setup as triton_setup

REL = "mamba/mamba_ssm/ops/triton"
CHECKED = "state-spaces/mamba e9594ce (mamba_ssm 2.3.2.post1)"


def _load(root: pathlib.Path):
    """selective_state_update from the two files, with stand-in parent packages while they load."""
    stubs = [n for n in ("mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.triton") if n not in sys.modules]
    for n in stubs:
        sys.modules[n] = types.ModuleType(n)
    try:
        mods = {}
        for name in ("softplus", "selective_state_update"):
            full = f"mamba_ssm.ops.triton.{name}"
            spec = importlib.util.spec_from_file_location(full, root / f"{name}.py")
            mods[name] = importlib.util.module_from_spec(spec)
            sys.modules[full] = mods[name]
            spec.loader.exec_module(mods[name])
        return mods["selective_state_update"].selective_state_update
    finally:
        for n in stubs + [f"mamba_ssm.ops.triton.{m}" for m in ("softplus", "selective_state_update")]:
            sys.modules.pop(n, None)


def mamba_triton():
    """mamba's selective_state_update (Triton) as a token-by-token selective scan."""
    src = os.environ.get("REFIMPL_LIBRARY_SOURCES", "")
    root = pathlib.Path(src) / REL
    if not src or not (root / "selective_state_update.py").is_file() or not (root / "softplus.py").is_file():
        raise Unavailable(f"unavailable: set REFIMPL_LIBRARY_SOURCES to a directory holding {REL}/"
                          f"selective_state_update.py and softplus.py (a state-spaces/mamba checkout)")
    interpreted = triton_setup()
    require("einops", extra="triton")
    torch = require("torch")
    ssu = _load(root)

    def forward(u, delta, A, B, C, D, z, initial_state):
        Bsz, H, L, P = np.shape(u)
        N = np.shape(A)[-1]

        def T(a):
            return torch.tensor(np.ascontiguousarray(a, dtype=np.float64), dtype=torch.float32)

        state = T(np.zeros((Bsz, H, P, N)) if initial_state is None else initial_state)
        tA, tD, bias = T(A), T(np.zeros((H, P)) if D is None else D), torch.zeros(H, P)
        ys = []
        # the wrapper enters torch.cuda.device(x.device.index); a CPU tensor's index is None, which
        # torch 2.13 rejects: a no-op under the interpreter (it selects a device, computes nothing)
        cuda_device = (lambda idx: contextlib.nullcontext()) if interpreted else torch.cuda.device
        with torch.no_grad(), mock.patch.object(torch.cuda, "device", cuda_device):
            for t in range(L):
                ys.append(ssu(state, T(u[:, :, t]), T(delta[:, :, t]), tA, T(B[:, :, t]), T(C[:, :, t]), D=tD,
                              z=None if z is None else T(z[:, :, t]), dt_bias=bias))
        y = torch.stack(ys, dim=2) if ys else torch.zeros(Bsz, H, 0, P)
        return y.double().numpy().copy(), state.double().numpy().copy()

    return make(ScanAdapter, name="mamba.selective_state_update[float32]", forward=forward,
                capabilities=frozenset({"time_varying", "grouped", "skip_and_gate", "initial_state", "final_state"}),
                precision="float32", preset="refimpl.mixers.presets.mamba_selective_scan", library=f"mamba {CHECKED}")
