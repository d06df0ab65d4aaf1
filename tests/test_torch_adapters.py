"""The layer properties run against torch 2.13's CPU implementations through adapters (float64
tensors; float32 values for the casts): evidence that the properties encode what a real
library does, with each torch convention declared as a capability. Skipped, with the reason,
when torch is not installed."""

import dataclasses

import numpy as np
import pytest
from hypothesis import settings

from properties import formats, losses, norms
from properties.core import run_property, supports

torch = pytest.importorskip("torch", reason="torch not installed: the torch adapters need it")
F_ = torch.nn.functional


def _t(a):
    return None if a is None else torch.tensor(np.asarray(a, dtype=np.float64))


def _np(t):
    return t.detach().numpy()


def _ln(x, w, b, eps):
    return _np(F_.layer_norm(_t(x), (np.shape(x)[-1],), _t(w), _t(b), eps))


def _rms(x, w, eps):
    return _np(F_.rms_norm(_t(x), (np.shape(x)[-1],), _t(w), eps))


def _grads(fn, x, dy, *params):
    ts = [torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True) if a is not None else None
          for a in (x, *params)]
    fn(*ts).backward(_t(dy))
    return tuple(None if t is None else _np(t.grad) for t in ts)


def _ln_bwd(x, dy, w, b, eps):
    return _grads(lambda x, w, b: F_.layer_norm(x, (x.shape[-1],), w, b, eps), x, dy, w, b)


def _rms_bwd(x, dy, w, eps):
    return _grads(lambda x, w: F_.rms_norm(x, (x.shape[-1],), w, eps), x, dy, w)


def _bn(x, w, b, eps):
    return _np(F_.batch_norm(_t(x), None, None, _t(w), _t(b), training=True, eps=eps))


def _gn(x, G, w, b, eps):
    return _np(F_.group_norm(_t(x), G, _t(w), _t(b), eps))


TORCH_NORM = norms.NormAdapter("torch.nn.functional (layer_norm, rms_norm, batch_norm, group_norm)", _ln, _rms,
                               _ln_bwd, _rms_bwd, _bn, _gn, frozenset({"backward", "channel_norms"}))


def _ce(z, t, ii):
    return float(F_.cross_entropy(_t(z), torch.tensor(t), ignore_index=int(ii)).item()) if (t != ii).any() else 0.0


def _ce_grad(z, t, ii):
    zt = torch.tensor(z, requires_grad=True)
    if not (t != ii).any():
        return np.zeros_like(z)
    F_.cross_entropy(zt, torch.tensor(t), ignore_index=int(ii)).backward()
    return _np(zt.grad)


def _lm(z, tok):  # the notes' snippet (docs/notes.md#lm-loss)
    V = z.shape[-1]
    t = torch.tensor(tok)[:, 1:].reshape(-1)
    return _ce(z[:, :-1].reshape(-1, V), t.numpy(), -100)


def _sft(z, tok, m):
    return _lm(z, np.where(m, tok, -100))


TORCH_LOSS = losses.LossAdapter("torch.nn.functional.cross_entropy", _ce, _ce_grad, _lm, _sft)

_TORCH_DT = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float8_e4m3fn": torch.float8_e4m3fn,
             "float8_e5m2": torch.float8_e5m2}


def _cast(x, fmt):
    return torch.tensor(np.asarray(x, dtype=np.float32)).to(_TORCH_DT[fmt]).double().numpy()


TORCH_CASTS = [
    # torch 2.13 saturates e4m3fn casts (inf too) and follows the format's rule for the others
    formats.CastAdapter("torch Tensor.to(float8_e4m3fn)", _cast, frozenset({"float8_e4m3fn", "saturate"})),
    formats.CastAdapter("torch Tensor.to(bfloat16 | float16 | float8_e5m2)", _cast,
                        frozenset({"bfloat16", "float16", "float8_e5m2"})),
]

PAIRS = [(p, a) for mod, adapters in ((norms, [TORCH_NORM]), (losses, [TORCH_LOSS]), (formats, TORCH_CASTS))
         for p in mod.PROPERTIES for a in adapters if supports(a, p)]


# a cross-check of the library, not the suite's main run: 30 examples under dev/ci, all under thorough
_N = settings.default.max_examples if settings.default.max_examples > 100 else min(30, settings.default.max_examples)


@pytest.mark.parametrize("prop, impl", PAIRS, ids=[f"{p.name}-{a.name}" for p, a in PAIRS])
def test_torch_conforms(prop, impl):
    run_property(prop, impl, max_examples=_N)


def test_torch_e4m3fn_is_not_the_format_rule():
    """Declared as the format's rule (no "saturate"), torch's e4m3fn cast fails the overflow property."""
    wrong = dataclasses.replace(TORCH_CASTS[0], capabilities=frozenset({"float8_e4m3fn"}))
    prop = next(p for p in formats.PROPERTIES if p.name == "cast_overflow_convention")
    with pytest.raises(AssertionError, match="declared overflow"):
        run_property(prop, wrong, max_examples=50)
