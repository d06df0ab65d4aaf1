"""Backend objects behind the facade: where the kernels run, and with which source.

A backend has ``name``, ``flash_attention(q, k, v, out, lse, launch) -> (out, lse)``
and ``route(logits, token_mask, outs, launch) -> outs`` working on host NumPy
arrays (the output arrays arrive filled with NaN / a sentinel). The default
backends use the kernels in this package; the meta-tests build backends whose
kernel modules or sources were deliberately broken (``gpu.mutants``).
"""

from __future__ import annotations

import os
import types

from .constants import INSTALL_HINT
from .errors import BackendUnavailable



class Backend:
    name = "abstract"

    def flash_attention(self, q, k, v, out, lse, launch):  # pragma: no cover - interface
        raise NotImplementedError

    def flash_attention_backward(self, q, k, v, out, lse, dout, dq, dk, dv, launch):  # pragma: no cover
        raise NotImplementedError

    def split_kv_attention(self, q, k, v, edges, out, lse, launch):  # pragma: no cover - interface
        raise NotImplementedError

    def paged_attention(self, q, k_pool, v_pool, block_table, seq_lens, out, lse, launch):  # pragma: no cover
        raise NotImplementedError

    def norm(self, kind, x, w, b, y, launch):  # pragma: no cover - interface
        raise NotImplementedError

    def rope(self, x, cos, sin, launch):  # pragma: no cover - interface
        raise NotImplementedError

    def moe_permute(self, x, indices, position, kept, xp, row_of, row_token, offsets, counts, launch):  # pragma: no cover
        raise NotImplementedError

    def moe_gemm(self, xp, w, w2, bias, offsets, out, act, launch):  # pragma: no cover - interface
        raise NotImplementedError

    def moe_combine(self, rows, row_of, gates, y, launch):  # pragma: no cover - interface
        raise NotImplementedError

    def route(self, logits, token_mask, outs, launch):  # pragma: no cover - interface
        raise NotImplementedError

    def __repr__(self):
        return f"<gpu backend {self.name}>"


# ---------------------------------------------------------------------------
# Numba CUDA (GPU, or the CUDA simulator)


def numba_simulator_enabled() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


class NumbaBackend(Backend):
    """Numba CUDA kernels; ``attention`` and ``routing`` are the kernel modules
    (gpu.attention_numba and gpu.routing_numba unless a mutant is given)."""

    name = "numba"

    def __init__(self, attention: types.ModuleType | None = None, routing: types.ModuleType | None = None,
                 label: str = "numba", **modules: types.ModuleType):
        self._attention, self._routing, self.name = attention, routing, label
        self._modules = modules  # other kernels by name (e.g. attention_backward=...), mutants included

    def _module(self, which: str):
        try:
            from numba import cuda
        except ImportError as e:
            raise BackendUnavailable(f"backend 'numba': numba / numba-cuda is not installed ({e}); {INSTALL_HINT}") from e
        if not cuda.is_available():
            raise BackendUnavailable(
                "backend 'numba': no CUDA GPU and driver found. To run the kernels on the CPU, set "
                "NUMBA_ENABLE_CUDASIM=1 before numba is first imported (the Numba CUDA simulator)")
        if which not in ("attention", "routing"):
            if which not in self._modules:
                import importlib

                self._modules[which] = importlib.import_module(f"gpu.{which}_numba")
            return self._modules[which]
        if which == "attention":
            if self._attention is None:
                from . import attention_numba

                self._attention = attention_numba
            return self._attention
        if self._routing is None:
            from . import routing_numba

            self._routing = routing_numba
        return self._routing

    def flash_attention(self, q, k, v, out, lse, launch):
        self._module("attention").launch(q, k, v, out, lse, launch)
        return out, lse

    def flash_attention_backward(self, q, k, v, out, lse, dout, dq, dk, dv, launch):
        self._module("attention_backward").launch(q, k, v, out, lse, dout, dq, dk, dv, launch)
        return dq, dk, dv

    def split_kv_attention(self, q, k, v, edges, out, lse, launch):
        self._module("split_kv").launch(q, k, v, edges, out, lse, launch)
        return out, lse

    def paged_attention(self, q, k_pool, v_pool, block_table, seq_lens, out, lse, launch):
        self._module("paged").launch(q, k_pool, v_pool, block_table, seq_lens, out, lse, launch)
        return out, lse

    def norm(self, kind, x, w, b, y, launch):
        self._module("norm").launch(kind, x, w, b, y, launch)
        return y

    def rope(self, x, cos, sin, launch):
        self._module("rope").launch(x, cos, sin, launch)
        return x

    def moe_permute(self, x, indices, position, kept, xp, row_of, row_token, offsets, counts, launch):
        self._module("moe").launch_permute(x, indices, position, kept, xp, row_of, row_token, offsets, counts, launch)

    def moe_gemm(self, xp, w, w2, bias, offsets, out, act, launch):
        self._module("moe").launch_gemm(xp, w, w2, bias, offsets, out, act, launch)

    def moe_combine(self, rows, row_of, gates, y, launch):
        self._module("moe").launch_combine(rows, row_of, gates, y, launch)

    def route(self, logits, token_mask, outs, launch):
        self._module("routing").launch(logits, token_mask, outs, launch)
        return outs


# ---------------------------------------------------------------------------
# the neutral-dialect C sources, through OpenCL or CuPy


class CSourceBackend(Backend):
    """Runs ``gpu.attention_c`` / ``gpu.routing_c`` (or mutated sources) on a
    runtime that builds C text and launches kernels: ``gpu.runtime_opencl`` or
    ``gpu.runtime_cupy``."""

    def __init__(self, runtime_name: str, attention_source: str | None = None,
                 routing_source: str | None = None, label: str | None = None, **sources: str):
        self.runtime_name = runtime_name
        self.name = label or runtime_name
        self._sources = (attention_source, routing_source)
        self._more_sources = sources  # other kernels' C text by name (e.g. attention_backward=...)
        self._runtime = None

    def runtime(self):
        if self._runtime is None:
            if self.runtime_name == "opencl":
                from .runtime_opencl import OpenCLRuntime as R
            else:
                from .runtime_cupy import CupyRuntime as R
            self._runtime = R()  # raises BackendUnavailable with the reason
        return self._runtime

    def flash_attention(self, q, k, v, out, lse, launch):
        from . import attention_c

        src = self._sources[0] or attention_c.SOURCE
        return attention_c.run(self.runtime(), src, q, k, v, out, lse, launch)

    def _source(self, which: str):
        """(module gpu.<which>_c, the C text to build: a mutant's if given, else the module's)."""
        import importlib

        mod = importlib.import_module(f"gpu.{which}_c")
        return mod, self._more_sources.get(which) or mod.SOURCE

    def flash_attention_backward(self, q, k, v, out, lse, dout, dq, dk, dv, launch):
        mod, src = self._source("attention_backward")
        return mod.run(self.runtime(), src, q, k, v, out, lse, dout, dq, dk, dv, launch)

    def split_kv_attention(self, q, k, v, edges, out, lse, launch):
        mod, src = self._source("split_kv")
        return mod.run(self.runtime(), src, q, k, v, edges, out, lse, launch)

    def paged_attention(self, q, k_pool, v_pool, block_table, seq_lens, out, lse, launch):
        mod, src = self._source("paged")
        return mod.run(self.runtime(), src, q, k_pool, v_pool, block_table, seq_lens, out, lse, launch)

    def norm(self, kind, x, w, b, y, launch):
        mod, src = self._source("norm")
        return mod.run(self.runtime(), src, kind, x, w, b, y, launch)

    def rope(self, x, cos, sin, launch):
        mod, src = self._source("rope")
        return mod.run(self.runtime(), src, x, cos, sin, launch)

    def moe_permute(self, x, indices, position, kept, xp, row_of, row_token, offsets, counts, launch):
        mod, src = self._source("moe")
        mod.run_permute(self.runtime(), src, x, indices, position, kept, xp, row_of, row_token, offsets, counts, launch)

    def moe_gemm(self, xp, w, w2, bias, offsets, out, act, launch):
        mod, src = self._source("moe")
        mod.run_gemm(self.runtime(), src, xp, w, w2, bias, offsets, out, act, launch)

    def moe_combine(self, rows, row_of, gates, y, launch):
        mod, src = self._source("moe")
        mod.run_combine(self.runtime(), src, rows, row_of, gates, y, launch)

    def route(self, logits, token_mask, outs, launch):
        from . import routing_c

        src = self._sources[1] or routing_c.SOURCE
        return routing_c.run(self.runtime(), src, logits, token_mask, outs, launch)


_DEFAULT: dict = {}


def get_backend(backend) -> Backend:
    """The backend object for a name in ``gpu.BACKENDS``, or ``backend`` itself."""
    if isinstance(backend, Backend):
        return backend
    if backend not in ("numba", "cupy", "opencl"):
        raise ValueError(f"backend: expected one of ('numba', 'cupy', 'opencl') or a gpu.backends.Backend, got {backend!r}")
    if backend not in _DEFAULT:
        _DEFAULT[backend] = NumbaBackend() if backend == "numba" else CSourceBackend(backend)
    return _DEFAULT[backend]
