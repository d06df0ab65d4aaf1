"""What a run of a property records (moved from ``properties/core.py``, which re-exports these
names): ``RunRecord`` is one (property, implementation) pair's outcome for the reports (status,
examples, times inside and outside the adapter, the comparison closest to its bound, the sizes
drawn, the cases not drawn); ``SizeCoverage`` collects the array shapes a run drew and, for
declared ``tiles``, how the drawn lengths sit against each tile.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class RunRecord:
    """What one run of a property against an implementation did (for the reports).

    ``worst``: the comparison (``properties.tolerance.compare_close``) that came closest to its
    bound over every example run: ``{"quantity", "error", "bound", "ratio"}`` (ratio = error /
    bound; 1 - ratio is the headroom), None when the property compares nothing that way
    (exact or structural checks). ``sizes``: the array shapes drawn (``size_coverage``).
    ``not_drawn``: the kind's cases the adapter's declaration leaves out (:func:`not_drawn`): a
    pass is for the declared cases only.
    ``seed``: the Hypothesis seed (None: derandomised, the seed derived from the test).
    """

    property: str
    kind: str
    implementation: str
    status: str = "pass"  # pass | fail | unsupported | xfail | xpass
    examples: int = 0
    reason: str = ""
    case: str | None = None
    snippet: str | None = None
    seconds: float = 0.0
    adapter_seconds: float = 0.0  # of ``seconds``, the time spent inside the adapter's protocol methods
    cpu_seconds: float = 0.0  # the CPU time of ``seconds`` (this process, all its threads)
    adapter_cpu_seconds: float = 0.0  # of ``cpu_seconds``, inside the adapter's protocol methods
    worst: dict | None = None
    sizes: dict | None = None
    seed: int | None = None
    not_drawn: list = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def note_comparisons(self, log) -> None:
        """Fold one example's ``(quantity, error, bound)`` comparisons into ``worst``."""
        for name, err, bound in log:
            ratio = err / bound if bound > 0 else (0.0 if err == 0 else float("inf"))
            if self.worst is None or ratio > self.worst["ratio"]:
                self.worst = {"quantity": name, "error": err, "bound": bound, "ratio": ratio}


def _arrays(case) -> dict:
    """name -> ndarray of the case's array fields (dataclass fields or attributes)."""
    import numpy as np

    if dataclasses.is_dataclass(case) and not isinstance(case, type):
        items = ((f.name, getattr(case, f.name, None)) for f in dataclasses.fields(case))
    else:
        items = getattr(case, "__dict__", {}).items()
    return {k: v for k, v in items if isinstance(v, np.ndarray) and v.ndim > 0}


class SizeCoverage:
    """Which array shapes a run drew: per field, the range of each axis and the distinct shapes;
    with declared ``tiles``, how the drawn lengths (axis -2 of q and k, else of the first
    array) sit against each tile: below one tile, an exact multiple, or crossing into a partial tile."""

    def __init__(self, tiles=()):
        self.tiles = tuple(tiles or ())
        self.fields: dict = {}
        self.tile_hits = {t: {"below": 0, "multiple": 0, "partial": 0} for t in self.tiles}

    def add(self, case) -> None:
        arrays = _arrays(case)
        for name, a in arrays.items():
            f = self.fields.setdefault(name, {"min": list(a.shape), "max": list(a.shape), "shapes": set()})
            if len(f["min"]) == a.ndim:
                f["min"] = [min(x, y) for x, y in zip(f["min"], a.shape)]
                f["max"] = [max(x, y) for x, y in zip(f["max"], a.shape)]
            f["shapes"].add(tuple(a.shape))
        lengths = [arrays[n].shape[-2] for n in ("q", "k") if n in arrays and arrays[n].ndim >= 2]
        if not lengths:
            lengths = [a.shape[-2] for a in list(arrays.values())[:1] if a.ndim >= 2]
        for t in self.tiles:
            for L in lengths:
                key = "below" if L < t else ("multiple" if L % t == 0 else "partial")
                self.tile_hits[t][key] += 1

    def as_dict(self) -> dict:
        out = {n: {"min": f["min"], "max": f["max"], "distinct_shapes": len(f["shapes"])}
               for n, f in self.fields.items()}
        if self.tiles:
            out["tiles"] = {str(t): h for t, h in self.tile_hits.items()}
        return out
