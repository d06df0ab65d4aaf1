"""The mixer facade: NumPy in, NumPy out, the kernels of ``gpu.mixers_numba`` / ``gpu.mixers_c``.

    gpu.mixers_api.selective_scan(u, delta, A, B, C, D=None, z=None, *, backend,
                                  initial_state=None, block=None) -> (out, last state)
    gpu.mixers_api.gated_linear_attention(q, k, v, g=None, *, backend, scale=None,
                                          initial_state=None, chunk_size=None,
                                          block_v=None, threads=None) -> (o, final state)
    gpu.mixers_api.delta_rule(q, k, v, beta, g=None, *, backend, scale=None, initial_state=None,
                              chunk_size=None, block_v=None, threads=None) -> (o, final state)

Semantics: ``refimpl.mixers.ssm.selective_scan`` (form "sequential"),
``refimpl.mixers.gated.gated_linear_attention`` and ``refimpl.mixers.delta_rule.delta_rule``
(form "recurrent"), computed in float32 with
float32 accumulation. ``backend`` is "numba", "cupy" or "opencl" as in ``gpu.api``, or a
:class:`MixerBackend` (how the meta-tests run the mutants of ``gpu.mixers_mutants``).
The rules of ``gpu.api``: inputs are validated and copied to float32 (never mutated), options
the kernels lack raise :class:`gpu.errors.UnsupportedOption` (``delta_bias``,
``delta_softplus``, ``discretization="zoh"``: pass the processed delta; a per-value-channel
``beta``), outputs are filled
with NaN before the launch and an element left unwritten is a RuntimeError; a float32 overflow
of an output is a ValueError naming the inputs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from refimpl import validation as V
from refimpl.logistic import silu

from .api_common import MAX_STATIC_SHARED_BYTES, MAX_THREADS_PER_BLOCK, _check_written, _positive_float32, _tile
from .backends import INSTALL_HINT
from .errors import BackendUnavailable, unsupported

#: state sizes N the scan is compiled for (the smallest that holds N is used)
STATE_VARIANTS = (16, 64)
#: key dims K the GLA kernel is compiled for
KEY_DIM_VARIANTS = (16, 32, 64, 128)
DEFAULT_SCAN_BLOCK = 64
DEFAULT_CHUNK = 16
DEFAULT_BLOCK_V = 16
DEFAULT_GLA_THREADS = 128
_INT32_LIMIT = 2**31 - 1


# ---------------------------------------------------------------------------
# backends


class MixerBackend:
    """Where the mixer kernels run: ``runtime`` "numba" (``numba_module``, default
    gpu.mixers_numba), or "opencl" / "cupy" (``c_source``, default gpu.mixers_c.SOURCE)."""

    def __init__(self, runtime: str, numba_module=None, c_source: str | None = None, label: str | None = None):
        if runtime not in ("numba", "cupy", "opencl"):
            raise ValueError(f"backend: expected 'numba', 'cupy' or 'opencl', got {runtime!r}")
        self.runtime_name, self._module, self._source = runtime, numba_module, c_source
        self.name = label or runtime

    def __repr__(self):
        return f"<gpu mixer backend {self.name}>"

    def numba(self):
        try:
            from numba import cuda
        except ImportError as e:
            raise BackendUnavailable(f"backend 'numba': numba / numba-cuda is not installed ({e}); {INSTALL_HINT}") from e
        if not cuda.is_available():
            raise BackendUnavailable(
                "backend 'numba': no CUDA GPU and driver found. To run the kernels on the CPU, set "
                "NUMBA_ENABLE_CUDASIM=1 before numba is first imported (the Numba CUDA simulator)")
        if self._module is None:
            from . import mixers_numba

            self._module = mixers_numba
        return self._module

    def c(self):
        """(runtime, source) for the C routes; the runtime is shared with gpu.api's backend."""
        from . import mixers_c
        from .backends import get_backend

        return get_backend(self.runtime_name).runtime(), self._source or mixers_c.SOURCE

    def selective_scan(self, arrays, out, last, p):
        if self.runtime_name == "numba":
            self.numba().launch_scan(*arrays, out, last, p)
            return out, last
        from . import mixers_c

        rt, src = self.c()
        return mixers_c.run_scan(rt, src, *arrays, out, last, p)

    def delta(self, arrays, o, sT, p):
        if self.runtime_name == "numba":
            self.numba().launch_delta(*arrays, o, sT, p)
            return o, sT
        from . import mixers_c

        rt, src = self.c()
        return mixers_c.run_delta(rt, src, *arrays, o, sT, p)

    def gla(self, arrays, o, sT, p):
        if self.runtime_name == "numba":
            self.numba().launch_gla(*arrays, o, sT, p)
            return o, sT
        from . import mixers_c

        rt, src = self.c()
        return mixers_c.run_gla(rt, src, *arrays, o, sT, p)


_DEFAULT: dict = {}


def get_backend(backend) -> MixerBackend:
    if isinstance(backend, MixerBackend):
        return backend
    if backend not in ("numba", "cupy", "opencl"):
        raise ValueError(f"backend: expected one of ('numba', 'cupy', 'opencl') or a gpu.mixers_api.MixerBackend, "
                         f"got {backend!r}")
    return _DEFAULT.setdefault(backend, MixerBackend(backend))


# ---------------------------------------------------------------------------
# validation shared by both kernels


def _f32(x, name: str, ndim: int) -> np.ndarray:
    arr = V.as_float_array(x, name, ndim=ndim)
    if arr.size > _INT32_LIMIT:
        raise unsupported(name, "at most 2**31 - 1 elements (the kernels index with int32)", arr.size)
    with np.errstate(over="ignore"):
        out = np.array(arr, dtype=np.float32, order="C", copy=True)  # a copy: the kernel never sees the caller's buffer
    if not np.isfinite(out).all():
        raise ValueError(f"{name}: expected values within float32 range (the kernels' precision), got an entry that "
                         f"overflows float32")
    return out


def _variant(x: int, variants: tuple, name: str) -> int:
    for v in variants:
        if x <= v:
            return v
    raise unsupported(name, f"<= {variants[-1]} (the largest the kernels are built for)", x)


_F32_MAX = float(np.finfo(np.float32).max)


def _check_outputs(names: str, log2_bound: float, **arrays) -> None:
    """Outputs arrive pre-filled with NaN. A non-finite output is an overflow (ValueError naming
    the inputs ``names``) when an output is inf or when ``log2_bound``, log2 of an a-priori bound
    on every output and every intermediate of the kernel, reaches float32's range (an inf - inf
    inside the kernel gives NaN too); otherwise a NaN is an element the kernel never wrote
    (RuntimeError, ``gpu.api._check_written``)."""
    bad = [what for what, a in arrays.items() if not np.isfinite(a).all()]
    if not bad:
        return
    if log2_bound >= 126 or any(np.isinf(arrays[w]).any() for w in bad):
        raise ValueError(f"{bad[0]}: expected outputs within float32 range (the kernels' precision), got one that "
                         f"overflows float32; scale down {names} or use refimpl")
    _check_written(**arrays)


def _log2(x: float) -> float:
    return float(np.log2(x)) if x > 0 else -np.inf


def _amax(a) -> float:
    return float(np.max(np.abs(a), initial=0.0))


# ---------------------------------------------------------------------------
# selective scan


@dataclasses.dataclass(frozen=True)
class ScanLaunch:
    block: int
    n_max: int
    has_d: int
    has_z: int
    has_x0: int


def prepare_scan(u, delta, A, B, C, D=None, z=None, *, initial_state=None, delta_bias=None, delta_softplus=False,
                 discretization="zoh_a_euler_b", block=None):
    """Validated float32 arrays (placeholders for absent ones) and the ScanLaunch."""
    if delta_bias is not None or delta_softplus:
        raise unsupported("delta_bias, delta_softplus", "None and False (the scan kernel takes the processed step "
                          "delta: apply softplus(delta + delta_bias) first, or use refimpl)", "a bias or softplus")
    V.choice(discretization, "discretization", ("zoh_a_euler_b", "zoh"))
    if discretization != "zoh_a_euler_b":
        raise unsupported("discretization", "'zoh_a_euler_b' (the scan kernel's: selective_scan_ref's; use refimpl "
                          "for 'zoh')", "'zoh'")
    u = _f32(u, "u", 4)
    b, H, L, P = u.shape
    delta = _f32(delta, "delta", 4)
    V.leading_shape(delta, "delta", (b, H, L, P), "(B, H, L, P) of u")
    if delta.ndim != 4 or delta.shape != u.shape:
        raise ValueError(f"delta: expected the shape of u {u.shape}, got {delta.shape}")
    A = _f32(A, "A", 3)
    V.leading_shape(A, "A", (H, P), "(H, P)")
    N = A.shape[2]
    Bm, Cm = _f32(B, "B", 4), _f32(C, "C", 4)
    G = Bm.shape[1]
    for arr, name in ((Bm, "B"), (Cm, "C")):
        if arr.shape != (b, G, L, N):
            raise ValueError(f"{name}: expected (B, G, L, N) = {(b, G, L, N)}, got {arr.shape}")
    if G == 0 or H % G:
        raise ValueError(f"B: expected a number of groups that divides the number of heads {H}, got {G}")
    if (delta < 0).any():
        raise ValueError(f"delta: expected step sizes >= 0, got min {float(delta.min())!r}")
    if (A > 0).any():
        raise ValueError(f"A: expected a stable diagonal A <= 0 (Mamba uses A = -exp(A_log)), got max {float(A.max())!r}")
    p_d = np.zeros((1, 1), np.float32) if D is None else _f32(D, "D", 2)
    if D is not None and p_d.shape != (H, P):
        raise ValueError(f"D: expected (H, P) = {(H, P)}, got {p_d.shape}")
    p_z = np.zeros((1, 1, 1, 1), np.float32) if z is None else _f32(z, "z", 4)
    if z is not None and p_z.shape != u.shape:
        raise ValueError(f"z: expected the shape of u {u.shape}, got {p_z.shape}")
    p_x0 = np.zeros((1, 1, 1, 1), np.float32) if initial_state is None else _f32(initial_state, "initial_state", 4)
    if initial_state is not None and p_x0.shape != (b, H, P, N):
        raise ValueError(f"initial_state: expected (B, H, P, N) = {(b, H, P, N)}, got {p_x0.shape}")
    if b * H > 65535:
        raise unsupported("u", "B * H <= 65535 (the grid's y dimension)", f"B * H = {b * H}")
    blk = _tile(block, "block", DEFAULT_SCAN_BLOCK)
    if blk > MAX_THREADS_PER_BLOCK:
        raise ValueError(f"block: expected at most {MAX_THREADS_PER_BLOCK} threads per block, got {blk}")
    p = ScanLaunch(blk, _variant(max(N, 1), STATE_VARIANTS, "N"), int(D is not None), int(z is not None),
                   int(initial_state is not None))
    return (u, delta, A, Bm, Cm, p_d, p_z, p_x0), p


def selective_scan(u, delta, A, B, C, D=None, z=None, *, backend, initial_state=None, delta_bias=None,
                   delta_softplus=False, discretization="zoh_a_euler_b", block=None):
    """Mamba's selective scan on a GPU backend; the semantics of ``refimpl.mixers.ssm.selective_scan``.

    u, delta, z (B, H, L, P); A (H, P, N) <= 0, N <= 64; B, C (B, G, L, N), H % G == 0;
    D (H, P); initial_state (B, H, P, N). ``block``: channels per thread block (default 64).
    Returns out (B, H, L, P) and the last state (B, H, P, N), float32.
    """
    be = get_backend(backend)
    arrays, p = prepare_scan(u, delta, A, B, C, D, z, initial_state=initial_state, delta_bias=delta_bias,
                             delta_softplus=delta_softplus, discretization=discretization, block=block)
    u32 = arrays[0]
    b, H, L, P = u32.shape
    N = arrays[2].shape[2]
    if min(b, H, L, P) == 0 or N == 0:  # nothing to launch (zero-size buffers are invalid OpenCL arguments)
        last = np.zeros((b, H, P, N), np.float32) if initial_state is None else arrays[7].copy()
        y = np.zeros(u32.shape, np.float32)
        if D is not None:
            y = arrays[5][None, :, None, :] * u32
        return y if z is None else y * silu(arrays[6]), last
    out = np.full(u32.shape, np.nan, dtype=np.float32)
    last = np.full((b, H, P, N), np.nan, dtype=np.float32)
    out, last = be.selective_scan(arrays, out, last, p)
    # |x_t| <= max|x0| + t max(delta |u|) max|B| (decays <= 1); |y| <= N max|C| |x| + max|D u|, times |z|
    u_, dl_, A_, B_, C_, D_, z_, x0_ = arrays
    xb = _amax(x0_) + L * _amax(dl_ * u_) * _amax(B_)
    yb = (N * _amax(C_) * xb + _amax(D_) * _amax(u_)) * max(1.0, _amax(z_))
    _check_outputs("u, delta, B, C, D, z, initial_state", _log2(max(xb, yb, N * _amax(C_) * xb)), out=out, last_state=last)
    return out, last


# ---------------------------------------------------------------------------
# chunked gated linear attention


@dataclasses.dataclass(frozen=True)
class GLALaunch:
    chunk: int
    block_v: int
    k_max: int
    threads: int
    scale: float

    @property
    def shared_bytes(self) -> int:
        return gla_shared_bytes(self.chunk, self.block_v, self.k_max)


def gla_shared_bytes(chunk: int, block_v: int, k_max: int) -> int:
    """Static shared memory of ``gla_forward``: Q, K, G (BT x KMAX), V (BT x BV), Att (BT x BT), S (KMAX x BV)."""
    return 4 * (3 * chunk * k_max + chunk * block_v + chunk * chunk + k_max * block_v)


def prepare_gla(q, k, v, g=None, *, scale=None, initial_state=None, chunk_size=None, block_v=None, threads=None,
                shared_bytes=None):
    """Validated float32 (q, k, v, g (B, H, L, 1 or K), S_init) and the GLALaunch; ``shared_bytes``
    (chunk, block_v, k_max) -> bytes is the kernel's budget (default: ``gla_shared_bytes``)."""
    q = _f32(q, "q", 4)
    B, H, L, K = q.shape
    k = _f32(k, "k", 4)
    if k.shape != q.shape:
        raise ValueError(f"k: expected (B, H, L, K) of q {q.shape}, got {k.shape}")
    v = _f32(v, "v", 4)
    V.leading_shape(v, "v", (B, H, L), "(B, H, L) of q")
    Vd = v.shape[3]
    if g is None:
        g32 = np.zeros((B, H, L, 1), np.float32)
    else:
        garr = V.as_float_array(g, "g")
        if garr.shape == (B, H, L):
            garr = garr[..., None]
        elif garr.shape != (B, H, L, K):
            raise ValueError(f"g: expected shape (B, H, L) = {(B, H, L)} or (B, H, L, K) = {(B, H, L, K)}, got {garr.shape}")
        if (garr > 0).any():
            raise ValueError(f"g: expected log-space gates <= 0 (a decay, never a growth), got max {float(garr.max())!r}")
        # gates below -800 are the spec's floor (refimpl.mixers.gated.G_FLOOR); clip before the cast
        g32 = np.ascontiguousarray(np.maximum(garr, -800.0), dtype=np.float32)
    s0 = np.zeros((B, H, K, Vd), np.float32) if initial_state is None else _f32(initial_state, "initial_state", 4)
    if s0.shape != (B, H, K, Vd):
        raise ValueError(f"initial_state: expected (B, H, K, V) = {(B, H, K, Vd)}, got {s0.shape}")
    if B * H > 65535:
        raise unsupported("q", "B * H <= 65535 (the grid's y dimension)", f"B * H = {B * H}")
    scale_ = float(np.float32(K ** -0.5)) if scale is None else _positive_float32(scale, "scale")
    p = GLALaunch(_tile(chunk_size, "chunk_size", DEFAULT_CHUNK), _tile(block_v, "block_v", DEFAULT_BLOCK_V),
                  _variant(max(K, 1), KEY_DIM_VARIANTS, "K"), _tile(threads, "threads", DEFAULT_GLA_THREADS), scale_)
    if p.threads > MAX_THREADS_PER_BLOCK:
        raise ValueError(f"threads: expected at most {MAX_THREADS_PER_BLOCK} per block, got {p.threads}")
    shared = (shared_bytes or gla_shared_bytes)(p.chunk, p.block_v, p.k_max)
    if shared > MAX_STATIC_SHARED_BYTES:
        raise ValueError(f"chunk_size, block_v: expected at most {MAX_STATIC_SHARED_BYTES} B of shared memory, got "
                         f"{shared} B for chunk_size={p.chunk}, block_v={p.block_v} with K <= {p.k_max}; use a "
                         f"smaller chunk_size or block_v")
    return (q, k, v, g32, s0), p


def gated_linear_attention(q, k, v, g=None, *, backend, scale=None, initial_state=None, chunk_size=None,
                           block_v=None, threads=None):
    """Chunked gated linear attention forward on a GPU backend; the semantics of
    ``refimpl.mixers.gated.gated_linear_attention``.

    q, k (B, H, L, K), K <= 128; v (B, H, L, V); g None, (B, H, L) or (B, H, L, K) log-gates <= 0;
    initial_state (B, H, K, V). ``chunk_size`` (default 16) is the kernel's chunk BT,
    ``block_v`` (16) the value columns per block, ``threads`` (128) the block size.
    Returns o (B, H, L, V) and the final state (B, H, K, V), float32.
    """
    be = get_backend(backend)
    arrays, p = prepare_gla(q, k, v, g, scale=scale, initial_state=initial_state, chunk_size=chunk_size,
                            block_v=block_v, threads=threads)
    q32, _, v32, _, s0 = arrays
    B, H, L, K = q32.shape
    Vd = v32.shape[3]
    if min(B, H, L, Vd) == 0 or K == 0:  # nothing to launch (zero-size buffers are invalid OpenCL arguments)
        return np.zeros((B, H, L, Vd), np.float32), s0.copy()
    o = np.full((B, H, L, Vd), np.nan, dtype=np.float32)
    sT = np.full((B, H, K, Vd), np.nan, dtype=np.float32)
    o, sT = be.gla(arrays, o, sT, p)
    # |S| <= max|S0| + L max|k| max|v| (decays <= 1); |o| <= scale K max|q| |S|; the intra-chunk
    # scores scale K max|q| max|k|
    qa, ka, va = _amax(q32), _amax(arrays[1]), _amax(v32)
    sb = _amax(s0) + L * ka * va
    _check_outputs("q, k, v, scale, initial_state", _log2(max(sb, p.scale * K * qa * max(sb, ka, K * ka * va))),
                   o=o, final_state=sT)
    return o, sT


# ---------------------------------------------------------------------------
# chunked (gated) delta rule


def delta_shared_bytes(chunk: int, block_v: int, k_max: int) -> int:
    """Static shared memory of ``delta_forward``: Q, K (BT x KMAX), U (BT x BV), KK, QK (BT x BT),
    S (KMAX x BV), gam and beta (BT)."""
    return 4 * (2 * chunk * k_max + chunk * block_v + 2 * chunk * chunk + k_max * block_v + 2 * chunk)


def prepare_delta(q, k, v, beta, g=None, *, scale=None, initial_state=None, chunk_size=None, block_v=None,
                  threads=None):
    """Validated float32 (q, k, v, beta (B, H, L), g (B, H, L), S_init) and the launch."""
    (q32, k32, v32, _, s0), p = prepare_gla(q, k, v, None, scale=scale, initial_state=initial_state,
                                            chunk_size=chunk_size, block_v=block_v, threads=threads,
                                            shared_bytes=delta_shared_bytes)
    B, H, L, K = q32.shape
    barr = V.as_float_array(beta, "beta")
    if barr.shape == (B, H, L, v32.shape[3]) and barr.ndim == 4:
        raise unsupported("beta", f"shape (B, H, L) = {(B, H, L)} (the delta-rule kernel solves one UT system per "
                          f"head and chunk; use refimpl for a per-value-channel beta)", f"shape {barr.shape}")
    if barr.shape != (B, H, L):
        raise ValueError(f"beta: expected (B, H, L) = {(B, H, L)}, got {barr.shape}")
    beta32 = _f32(barr, "beta", 3)
    if g is None:
        g32 = np.zeros((B, H, L), np.float32)
    else:
        garr = V.as_float_array(g, "g")
        if garr.shape != (B, H, L) or (garr > 0).any():
            raise ValueError(f"g: expected (B, H, L) = {(B, H, L)} log-gates <= 0, got shape {garr.shape}")
        g32 = np.ascontiguousarray(np.maximum(garr, -800.0), dtype=np.float32)  # the spec's floor, before the cast
    return (q32, k32, v32, beta32, g32, s0), p


def delta_rule(q, k, v, beta, g=None, *, backend, scale=None, initial_state=None, chunk_size=None, block_v=None,
               threads=None):
    """Chunked (gated) delta rule (UT form) on a GPU backend; the semantics of
    ``refimpl.mixers.delta_rule.delta_rule``.

    q, k (B, H, L, K), K <= 128 (keys L2-normalised by the caller, as the spec); v (B, H, L, V);
    beta (B, H, L); g None or (B, H, L) log-gates <= 0; initial_state (B, H, K, V).
    ``chunk_size`` (default 16), ``block_v`` (16), ``threads`` (128) as for
    ``gated_linear_attention``. Returns o (B, H, L, V) and the final state (B, H, K, V), float32.
    """
    be = get_backend(backend)
    arrays, p = prepare_delta(q, k, v, beta, g, scale=scale, initial_state=initial_state, chunk_size=chunk_size,
                              block_v=block_v, threads=threads)
    q32, _, v32, _, _, s0 = arrays
    B, H, L, K = q32.shape
    Vd = v32.shape[3]
    if min(B, H, L, Vd) == 0 or K == 0:  # nothing to launch (zero-size buffers are invalid OpenCL arguments)
        return np.zeros((B, H, L, Vd), np.float32), s0.copy()
    o = np.full((B, H, L, Vd), np.nan, dtype=np.float32)
    sT = np.full((B, H, K, Vd), np.nan, dtype=np.float32)
    o, sT = be.delta(arrays, o, sT, p)
    # each step multiplies S by I - beta k k^T (norm <= rho = max(1, |beta |k|^2 - 1|)) and adds
    # beta k v^T: |S| <= rho^L (max|S0| + L max|beta k| max|v|) (in log2: rho^L may overflow)
    k32, beta32 = arrays[1], arrays[3]
    k2 = np.sum(k32.astype(np.float64) ** 2, axis=-1)
    rho = max(1.0, _amax(beta32.astype(np.float64) * k2 - 1.0))
    log2_s = L * _log2(rho) + _log2(_amax(s0) + L * _amax(beta32) * np.sqrt(_amax(k2)) * _amax(v32) + 1e-300)
    log2_o = log2_s + _log2(p.scale * K * _amax(q32) * max(1.0, _amax(k32)) ** 2 * L + 1e-300)
    _check_outputs("q, k, v, beta, scale, initial_state", max(log2_s, log2_o), o=o, final_state=sT)
    return o, sT
