"""Measured worst error / bound of correct float32 and bfloat16 implementations, attention family.

    PYTHONPATH=. python benchmarks/precision_headroom.py [--examples N] [--precisions float32,bfloat16]

For every kind of the attention family (attention forward and backward, flash backward, decode,
mla, softmax, merge, context parallel) a correct low-precision implementation bundled with the
suite runs every property of its kind on N random examples (Hypothesis, no database), and the
closest any comparison came to its bound is printed (``RunRecord.worst``: error / bound; 1 - that
is the headroom). With ``REFIMPL_LIBRARY_SOURCES`` pointing at flash-attn's sources
(tests/test_flash_attn_reference.py) flash-attn's ``attention_ref`` (upcast=False) runs too.
Measured, not asserted: the meta-tests assert that the bounds separate correct from wrong.
"""

from __future__ import annotations

import argparse
import sys
import time

from properties import attention as A
from properties import decode as D
from properties import distributed as DP
from properties import mla as M
from properties import profiles
from properties import softmax as S
from properties import tiled
from properties.core import run_property, supports


def _flash(precision):
    from tests.test_precision_attention import _lowp_flash

    return _lowp_flash(precision)


def _attention_ref(precision):
    import pytest

    from tests import test_flash_attn_reference as T

    if precision not in T.DTYPES:
        return None
    try:
        return T.adapter(precision)
    except pytest.skip.Exception:
        return None


ROWS = [  # (label, properties, adapter factory)
    ("attention forward", [p for p in A.PROPERTIES if "backward" not in p.name], tiled.lowp_backward_adapter),
    ("attention backward", [p for p in A.PROPERTIES if "backward" in p.name], tiled.lowp_backward_adapter),
    ("flash backward", [p for p in __import__("properties.flash").flash.PROPERTIES if "backward" in p.name], _flash),
    ("decode", D.PROPERTIES, D.lowp_decoder),
    ("mla", M.PROPERTIES, M.lowp_mla_adapter),
    ("softmax", [p for p in S.PROPERTIES if p.kind == "softmax"], S.lowp_softmax_adapter),
    ("merge", [p for p in S.PROPERTIES if p.kind == "merge"], S.lowp_merge_adapter),
    ("context parallel ring", [p for p in DP.PROPERTIES if p.name in ("cp_ring_forward_matches_attention",
                                                                       "cp_ring_extreme_scores")], DP.lowp_ring_adapter),
    ("flash-attn attention_ref", [p for p in A.PROPERTIES if p.name in ("matches_reference", "extreme_scores",
                                                                        "backward_matches_reference")], _attention_ref),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--precisions", default="float32,bfloat16")
    args = ap.parse_args(argv)
    profiles.load("dev")
    print(f"{'kind':26s} {'precision':9s} {'property':40s} worst error/bound (quantity, error, bound)")
    for label, props, factory in ROWS:
        for precision in args.precisions.split(","):
            impl = factory(precision)
            if impl is None:
                print(f"{label:26s} {precision:9s} (skipped: no such adapter, or its source not found)")
                continue
            for prop in props:
                if not supports(impl, prop):
                    continue
                t0 = time.perf_counter()
                rec = run_property(prop, impl, max_examples=args.examples, database=None)
                w = rec.worst
                shown = "exact or elementwise" if w is None else \
                    f"{w['ratio']:.3f} ({w['quantity']}, {w['error']:.3g}, {w['bound']:.3g})"
                print(f"{label:26s} {precision:9s} {prop.name:40s} {shown}  [{time.perf_counter() - t0:.0f} s]",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
