"""What the GPU benchmarks read from the device, shared by ``gpu.bench`` and ``gpu.mixers_bench`` (a
leaf: the benchmark modules import it and not each other): whether a GPU is usable, its peak FP32
throughput and memory bandwidth, and CUDA-event timings of a CuPy or a torch call."""

from __future__ import annotations

FP32_LANES_PER_SM = {(7, 0): 64, (7, 5): 64, (8, 0): 64, (8, 6): 128, (8, 7): 128, (8, 9): 128, (9, 0): 128,
                     (10, 0): 128, (12, 0): 128}


def gpu_or_reason():
    """(cupy, None) when a CUDA GPU is usable, else (None, reason)."""
    try:
        import cupy
    except ImportError as e:
        return None, f"cupy is not installed ({e})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001 - no driver
        return None, f"no usable CUDA driver/GPU ({e})"
    if n < 1:
        return None, "no CUDA GPU found"
    return cupy, None


def device_peak(cupy) -> dict:
    rt = cupy.cuda.runtime
    dev = cupy.cuda.Device().id
    attr = lambda a: rt.deviceGetAttribute(a, dev)  # noqa: E731
    # cudaDeviceAttr: 16 MultiProcessorCount, 13 ClockRate (kHz), 36 MemoryClockRate (kHz),
    # 37 GlobalMemoryBusWidth (bits), 75/76 ComputeCapabilityMajor/Minor
    sms, clock_khz, mem_khz, bus_bits = attr(16), attr(13), attr(36), attr(37)
    cc = (attr(75), attr(76))
    lanes = FP32_LANES_PER_SM.get(cc, 128)
    props = rt.getDeviceProperties(dev)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return {"name": name, "cc": cc, "tflops": 2 * sms * lanes * clock_khz * 1e3 / 1e12,
            "gbs": 2 * mem_khz * 1e3 * bus_bits / 8 / 1e9}


def cuda_time(cupy, fn, repeat=10) -> float:
    fn()  # warm-up (build, cuBLAS handles)
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(repeat):
        fn()
    stop.record()
    stop.synchronize()
    return cupy.cuda.get_elapsed_time(start, stop) / 1e3 / repeat


def torch_time(torch, fn, repeat=10) -> float:
    fn()
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) / 1e3 / repeat
