"""Constants shared by the gpu facade, the backends and the kernels (a leaf: imports nothing of gpu)."""

import numpy as np

INSTALL_HINT = "pip install 'transformer-refimpl[gpu]'"
"""How to get the gpu extras, quoted by every BackendUnavailable about a missing package."""

INT_UNWRITTEN = np.iinfo(np.int32).min
"""What int32 outputs are filled with before a kernel runs: an entry still holding it was never written."""
