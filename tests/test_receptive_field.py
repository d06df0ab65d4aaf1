"""Receptive field of stacked windowed layers: the closed form [max(0, i - L w), i] against boolean powers."""

import pytest

from refimpl import masks as M
from refimpl import receptive_field as RF


@pytest.mark.parametrize("w", [0, 1, 2, 4])
@pytest.mark.parametrize("layers", [1, 2, 3, 5])
def test_closed_form_equals_boolean_product(w, layers):
    n = 24
    mask = M.SlidingWindow(*M.window_from_seed_mw(w)) & M.Causal()
    R = RF.receptive_field(mask, n, layers)
    for i in range(n):
        lo, hi = RF.window_receptive_interval(i, w, layers)
        assert R[i].nonzero()[0].tolist() == list(range(lo, hi + 1))


def test_non_causal_and_bad_input():
    R = RF.receptive_field(M.SlidingWindow(1, 1), 6, 2)
    assert R[0].nonzero()[0].tolist() == [0, 1, 2]
    with pytest.raises(TypeError, match="mask"):
        RF.receptive_field(None, 4, 1)
    with pytest.raises(ValueError, match="layers"):
        RF.receptive_field(M.Causal(), 4, 0)
