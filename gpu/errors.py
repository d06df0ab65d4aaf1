"""Errors raised by the gpu facade."""


class BackendUnavailable(RuntimeError):
    """The backend's runtime (package, driver, device or OpenCL platform) is missing.

    The message says what is missing and how to get it.
    """


class UnsupportedOption(NotImplementedError):
    """A valid ``refimpl`` option that the GPU kernel does not implement.

    Raised instead of silently ignoring the option: the caller should use
    ``refimpl`` (the oracle) for it.
    """


def unsupported(names: str, expected: str, got) -> UnsupportedOption:
    """An UnsupportedOption in the contract's wording, ``<names>: expected <what the kernels
    implement>, got <what was given>`` (raise it: ``raise unsupported(...)``)."""
    return UnsupportedOption(f"{names}: expected {expected}, got {got}")
