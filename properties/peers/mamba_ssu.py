"""mamba's Triton kernels as ``ssm_scan`` adapters: ``selective_state_update`` (the decode step, run
token by token) and ``mamba_chunk_scan_combined`` (the Mamba-2 SSD chunk scan).

mamba_ssm cannot be pip-installed without building its CUDA extensions, so the kernels are loaded
from a source checkout: set ``REFIMPL_LIBRARY_SOURCES`` to a directory holding ``mamba/mamba_ssm``
(the same variable tests/test_mixers_libraries.py reads; checked at state-spaces/mamba e9594ce,
mamba_ssm 2.3.2.post1). Only the files named in ``FILES`` are executed (mamba_ssm/ops/triton/
softplus.py, selective_state_update.py, ssd_bmm.py, ssd_chunk_state.py, ssd_state_passing.py,
ssd_chunk_scan.py, layernorm_gated.py, k_activations.py, ssd_combined.py and mamba_ssm/utils/
torch.py, determinism.py); the package's ``__init__`` (which imports the CUDA extensions) is not:
while they load, ``mamba_ssm``, ``mamba_ssm.ops``, ``mamba_ssm.ops.triton`` and ``mamba_ssm.utils``
are empty stand-in packages, removed afterwards. The sources are not vendored: code brought into
this workspace from public repositories stays out of the project's commits, so the checkout is
the user's (``git clone https://github.com/state-spaces/mamba DIR/mamba``).

selective_state_update (one call per position t):

    kind's argument            selective_state_update argument
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
    torch.cuda.device(None)     entered by the wrappers for a CPU tensor: a no-op under the
                                interpreter (torch 2.13 raises on None)

mamba_chunk_scan_combined (ssd_combined.py; the kind's decay option 'per_channel' declined: one
decay per head, refimpl.mixers.ssm.ssd):

    kind's argument            mamba_chunk_scan_combined argument
    u, z (B, H, L, P)           x, z (batch, seqlen, nheads, headdim): axes 1 and 2 swapped
    delta[..., 0] (B, H, L)     dt (batch, seqlen, nheads); dt_softplus False, no dt_bias, dt_limit (0, inf)
    A[:, 0, 0] (H,)             A (nheads,)
    B, C (B, G, L, N)           B, C (batch, seqlen, ngroups, dstate)
    D (H, P)                    D (nheads, headdim)
    initial_state, last state   initial_states, return_final_states=True
    chunk_size                  4 (CHUNK): the kind draws L <= 16, so lengths cross 0 to 3 chunk
                                boundaries (Mamba-2 models use 256; the kernel takes any)

Precision float32 (both load every operand ``.to(tl.float32)``; SSD's dots run in float32 on
float32 inputs).
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

REL = "mamba/mamba_ssm"
CHECKED = "state-spaces/mamba e9594ce (mamba_ssm 2.3.2.post1)"
CHUNK = 4
#: the files executed, in import order (paths under mamba_ssm/)
FILES = ("utils/torch", "utils/determinism", "ops/triton/softplus", "ops/triton/selective_state_update",
         "ops/triton/ssd_bmm", "ops/triton/ssd_chunk_state", "ops/triton/ssd_state_passing", "ops/triton/ssd_chunk_scan",
         "ops/triton/layernorm_gated", "ops/triton/k_activations", "ops/triton/ssd_combined")
_PACKAGES = ("mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.triton", "mamba_ssm.utils")


def _load(root: pathlib.Path) -> dict:
    """{file: module} of ``FILES`` under ``root`` (mamba_ssm/), with stand-in parent packages while they load."""
    stubs = [n for n in _PACKAGES if n not in sys.modules]
    for n in stubs:
        sys.modules[n] = types.ModuleType(n)
    names = {rel: "mamba_ssm." + rel.replace("/", ".") for rel in FILES}
    try:
        mods = {}
        for rel, full in names.items():
            spec = importlib.util.spec_from_file_location(full, root / f"{rel}.py")
            mods[rel] = importlib.util.module_from_spec(spec)
            sys.modules[full] = mods[rel]
            spec.loader.exec_module(mods[rel])
        return mods
    finally:
        for n in stubs + list(names.values()):
            sys.modules.pop(n, None)


def _source_root() -> pathlib.Path:
    src = os.environ.get("REFIMPL_LIBRARY_SOURCES", "")
    root = pathlib.Path(src) / REL
    missing = [rel for rel in FILES if not (root / f"{rel}.py").is_file()]
    if not src or missing:
        raise Unavailable(f"unavailable: set REFIMPL_LIBRARY_SOURCES to a directory holding {REL}/ with "
                          f"{', '.join(f + '.py' for f in (missing or FILES))} (a state-spaces/mamba checkout at "
                          f"DIR/mamba)")
    return root


def mamba_triton():
    """mamba's selective_state_update (token by token) and mamba_chunk_scan_combined (Mamba-2 SSD),
    as selective-scan adapters (Triton)."""
    root = _source_root()
    interpreted = triton_setup()
    require("einops", extra="triton")
    torch = require("torch")
    mods = _load(root)
    ssu = mods["ops/triton/selective_state_update"].selective_state_update
    chunk_scan = mods["ops/triton/ssd_combined"].mamba_chunk_scan_combined
    # the wrappers enter torch.cuda.device(x.device.index); a CPU tensor's index is None, which
    # torch 2.13 rejects: a no-op under the interpreter (it selects a device, computes nothing)
    cuda_device = (lambda idx: contextlib.nullcontext()) if interpreted else torch.cuda.device

    def T(a):
        return torch.tensor(np.ascontiguousarray(a, dtype=np.float64), dtype=torch.float32)

    def step_by_step(u, delta, A, B, C, D, z, initial_state):
        Bsz, H, L, P = np.shape(u)
        N = np.shape(A)[-1]
        state = T(np.zeros((Bsz, H, P, N)) if initial_state is None else initial_state)
        tA, tD, bias = T(A), T(np.zeros((H, P)) if D is None else D), torch.zeros(H, P)
        ys = []
        with torch.no_grad(), mock.patch.object(torch.cuda, "device", cuda_device):
            for t in range(L):
                ys.append(ssu(state, T(u[:, :, t]), T(delta[:, :, t]), tA, T(B[:, :, t]), T(C[:, :, t]), D=tD,
                              z=None if z is None else T(z[:, :, t]), dt_bias=bias))
        y = torch.stack(ys, dim=2) if ys else torch.zeros(Bsz, H, 0, P)
        return y.double().numpy().copy(), state.double().numpy().copy()

    def ssd(u, delta, A, B, C, D, z, initial_state):
        def L_first(a):  # (B, H, L, ...) -> (B, L, H, ...)
            return T(np.swapaxes(np.asarray(a), 1, 2))

        with torch.no_grad(), mock.patch.object(torch.cuda, "device", cuda_device):
            y, last = chunk_scan(L_first(u), L_first(np.asarray(delta)[..., 0]), T(np.asarray(A)[:, 0, 0]), L_first(B),
                                 L_first(C), CHUNK, D=None if D is None else T(D), z=None if z is None else L_first(z),
                                 initial_states=None if initial_state is None else T(initial_state),
                                 return_final_states=True)
        return np.swapaxes(y.double().numpy(), 1, 2).copy(), last.double().numpy().copy()

    caps = frozenset({"time_varying", "grouped", "skip_and_gate", "initial_state", "final_state"})
    lib = f"mamba {CHECKED}"
    return [make(ScanAdapter, name="mamba.selective_state_update[float32]", forward=step_by_step, capabilities=caps,
                 precision="float32", preset="refimpl.mixers.presets.mamba_selective_scan", library=lib),
            make(ScanAdapter, name=f"mamba.mamba_chunk_scan_combined[float32,chunk={CHUNK}]", forward=ssd,
                 capabilities=caps, declines={"decay": {"per_channel"}}, precision="float32",
                 preset="refimpl.mixers.ssm.ssd (scalar decay per head)", library=lib)]
