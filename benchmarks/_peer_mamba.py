"""mamba's pure-PyTorch selective scan, ``selective_scan_ref``, as it ships (a peer for benchmarks/families.py).

Source: state-spaces/mamba, ``mamba_ssm/ops/selective_scan_interface.py``, function
``selective_scan_ref`` (mamba_ssm 2.3.2.post1, commit e9594ce1c732d97440f0332fdc43170a2294dbfa),
Copyright (c) 2023, Tri Dao, Albert Gu; Apache License 2.0. The file cannot be imported without
mamba's CUDA extension, so the one function is copied here unchanged but for the real-A branch
kept and the complex-A branch dropped (the benchmark passes a real A); ``einops`` calls are written
with torch (``rearrange(D, "d -> d 1")`` is ``D[:, None]``, the ``repeat`` over groups is
``repeat_interleave``). If ``REFIMPL_LIBRARY_SOURCES`` holds
``mamba/mamba_ssm/ops/selective_scan_interface.py``, families.py loads the function from there instead.
"""

import torch
import torch.nn.functional as F


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    """u, delta, z (B D L); A (D N) real; B, C (B N L) or (B G N L); D, delta_bias (D)."""
    dtype_in = u.dtype
    u = u.float()
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, dstate = u.shape[0], A.shape[0], A.shape[1]
    is_variable_B = B.dim() >= 3
    is_variable_C = C.dim() >= 3
    B = B.float()
    C = C.float()
    x = A.new_zeros((batch, dim, dstate))
    ys = []
    deltaA = torch.exp(torch.einsum('bdl,dn->bdln', delta, A))
    if not is_variable_B:
        deltaB_u = torch.einsum('bdl,dn,bdl->bdln', delta, B, u)
    else:
        if B.dim() == 3:
            deltaB_u = torch.einsum('bdl,bnl,bdl->bdln', delta, B, u)
        else:
            B = B.repeat_interleave(dim // B.shape[1], dim=1)
            deltaB_u = torch.einsum('bdl,bdnl,bdl->bdln', delta, B, u)
    if is_variable_C and C.dim() == 4:
        C = C.repeat_interleave(dim // C.shape[1], dim=1)
    last_state = None
    for i in range(u.shape[2]):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        if not is_variable_C:
            y = torch.einsum('bdn,dn->bd', x, C)
        else:
            if C.dim() == 3:
                y = torch.einsum('bdn,bn->bd', x, C[:, :, i])
            else:
                y = torch.einsum('bdn,bdn->bd', x, C[:, :, :, i])
        if i == u.shape[2] - 1:
            last_state = x
        if y.is_complex():
            y = y.real * 2
        ys.append(y)
    y = torch.stack(ys, dim=2)  # (batch dim L)
    out = y if D is None else y + u * D[:, None]
    if z is not None:
        out = out * F.silu(z)
    out = out.to(dtype=dtype_in)
    return out if not return_last_state else (out, last_state)
