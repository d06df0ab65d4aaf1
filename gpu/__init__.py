"""GPU kernels (Numba CUDA, CuPy raw kernels / OpenCL) for the hot paths of refimpl."""
