"""The library's own objects passed back in (MoE routings, experts) and ``capacity_factor``, checked
here without importing upward: the modules that define the classes register them."""

from __future__ import annotations

from .scalars import _type, instance, real_number


def capacity_factor(x, rule) -> float:
    """``capacity_factor`` (``refimpl.moe.route``): a finite real >= 0 that replaces the factor of the
    capacity rule in force, ``rule`` (one with ``with_factor``; a rule whose ``fixed_capacity`` names a
    factorless expression, as fairseq's, refuses it). The one check of this argument."""
    f = real_number(x, "capacity_factor", minimum=0.0)
    if not hasattr(rule, "with_factor"):
        raise ValueError(f"capacity_factor: expected None with the capacity rule {rule!r} (it has no factor to "
                         f"replace), got {f!r}")
    fixed = getattr(rule, "fixed_capacity", None)
    if fixed:
        raise ValueError(f"capacity_factor: expected none for {fixed} (it has no factor), got {f!r}")
    return f



_CLASSES: dict = {}  # name -> (class, description), registered by the modules that define them


def register_class(name: str, cls: type, what: str) -> None:
    """Make ``cls`` checkable by ``name`` here without this module importing upward (it is a leaf)."""
    _CLASSES[name] = (cls, what)


def routing(x, name: str = "routing"):
    """A ``refimpl.moe.Routing`` (the result of ``route``; registered by ``refimpl.moe.options``)."""
    cls, what = _CLASSES["Routing"]
    return instance(x, name, cls, what)


def experts(x, name: str, E: int, D: int) -> list:
    """A sequence of E experts: callables mapping (N, D) rows to (N, D) with ``d_model`` == D."""
    if isinstance(x, (str, bytes)) or not hasattr(x, "__len__") or not hasattr(x, "__getitem__"):
        raise TypeError(f"{name}: expected a sequence of {E} experts, got {_type(x)}")
    if len(x) != E:
        raise ValueError(f"{name}: expected {E} experts (one per router column), got {len(x)}")
    for i, ex in enumerate(x):
        if not callable(ex):
            raise TypeError(f"{name}[{i}]: expected a callable expert (FFNExpert, SwiGLUExpert), got {_type(ex)}")
        if getattr(ex, "d_model", D) != D:
            raise ValueError(f"{name}[{i}]: expected d_model equal to x's D = {D}, got {ex.d_model}")
    return list(x)
