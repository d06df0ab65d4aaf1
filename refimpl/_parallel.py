"""Independent blocks of work on CPU threads, with results that do not depend on them.

The tiled algorithms have units that never share an output: FA2's query tiles
(one GPU thread block each), the dense path's chunks of query rows, the
backward's (batch, kv head) pairs. ``map_blocks(fn, items)`` runs ``fn`` on
each item, on a pool of threads when the work is large enough, and returns
the results in the order of ``items``. Each call of ``fn`` computes exactly
what it would compute alone, so the results are bit for bit the same for any
number of threads and any scheduling (tests/test_parallel.py checks this);
reductions across items are done by the caller, in item order.

Threads. NumPy's elementwise ufuncs run on one core and release the GIL, so
blocks on threads use every core for the passes over the score tiles. While
blocks run, NumPy's BLAS is limited to one thread (threadpoolctl; restored
afterwards), so the pool does not oversubscribe the cores with BLAS's own
threads. The number of threads is ``REFIMPL_NUM_THREADS`` if set, else the
number BLAS is configured with (``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS``
/ the core count): one setting pins both. 1 runs everything in the calling
thread. Calls below ``MIN_PARALLEL_WORK`` multiply-adds run in the calling
thread too (starting threads would cost more than it saves), and so does a
``map_blocks`` nested inside a block.

OpenBLAS's worker threads, once a product has used them, spin for about 0.1 s
(its THREAD_TIMEOUT, 2^28 cycles) before they sleep, and limiting the thread
count does not stop them: a multi-threaded product just before ``map_blocks``
leaves a spinning thread beside the blocks' threads. ``one_blas_thread()``
runs such a small product on one BLAS thread.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Callable, Iterable

from ._validate.conventions import thread_count

MIN_PARALLEL_WORK = 1 << 22  # multiply-adds (a fraction of a millisecond of BLAS): below this, one thread

_state = threading.local()
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_controller = None


def _blas_controller():
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller


def num_threads() -> int:
    """Threads a large tiled call uses: ``REFIMPL_NUM_THREADS``, else BLAS's thread count."""
    env = os.environ.get("REFIMPL_NUM_THREADS")
    if env:
        return thread_count(env)
    counts = [lib["num_threads"] for lib in _blas_controller().info() if lib["user_api"] == "blas"]
    return max(1, max(counts, default=os.cpu_count() or 1))


def _get_pool(n: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != n:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(n, thread_name_prefix="refimpl"), n
        return _pool


def _forget_pool_after_fork():  # a forked child has none of the parent's threads
    global _pool, _pool_size, _lock, _limit_depth, _limiter
    _pool, _pool_size, _lock = None, 0, threading.Lock()
    if _limiter is not None:  # forked while blocks ran: the child's BLAS is not the parent's to limit
        _limiter.restore_original_limits()
    _limit_depth, _limiter = 0, None


os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _run_marked(fn: Callable, item):
    _state.inside = True
    try:
        return fn(item)
    finally:
        _state.inside = False


def map_blocks(fn: Callable, items: Iterable, work: float) -> list:
    """[fn(item) for item in items], on threads when ``work`` (multiply-adds of the
    whole call) is at least MIN_PARALLEL_WORK, there are two or more items and
    more than one thread; results in the order of ``items``. Exceptions propagate."""
    items = list(items)
    threads = num_threads() if work >= MIN_PARALLEL_WORK and len(items) > 1 else 1
    if threads <= 1 or getattr(_state, "inside", False):
        return [fn(item) for item in items]
    pool = _get_pool(threads)
    _limit_blas()
    try:
        futures = [pool.submit(_run_marked, fn, item) for item in items]
        wait(futures)  # every block has finished before BLAS gets its threads back
    finally:
        _unlimit_blas()
    return [f.result() for f in futures]


@contextlib.contextmanager
def one_blas_thread():
    """BLAS at one thread inside the ``with`` block (restored afterwards; nests with ``map_blocks``)."""
    _limit_blas()
    try:
        yield
    finally:
        _unlimit_blas()


# BLAS at one thread while any call's blocks run: the first call to start sets the limit,
# the last to finish restores the original count (calls from several user threads overlap).
_limit_depth = 0
_limiter = None


def _limit_blas() -> None:
    global _limit_depth, _limiter
    with _lock:
        if _limit_depth == 0:
            _limiter = _blas_controller().limit(limits=1, user_api="blas")
        _limit_depth += 1


def _unlimit_blas() -> None:
    global _limit_depth, _limiter
    with _lock:
        _limit_depth -= 1
        if _limit_depth == 0:
            _limiter.restore_original_limits()
            _limiter = None
