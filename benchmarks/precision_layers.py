"""Measured worst error / bound of correct float32 and bfloat16 implementations under the
precision rule (properties/precision.py), per layer kind and property.

    python benchmarks/precision_layers.py [--examples 300] [--kinds norm,loss,ffn,block,rope]

Runs each property of the kind against the real-library adapters of ``properties.demo_layers``
(torch 2.13 CPU, transformers) on derandomised Hypothesis draws and records, for every
comparison made through ``compare_close`` (the forward and backward comparisons and the
invariants of norms, blocks and RoPE), max |error| / bound. Prints one line per (property,
adapter): examples, worst ratio, and the error and bound of that worst comparison. A ratio
above 1 would be a failure (none is expected). Needs torch and transformers.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from hypothesis import HealthCheck, given, settings

from properties import block, demo_layers as D, ffn, losses, norms, precision, rope
from properties.core import declared, strategy_for, supports

KINDS = {
    "norm": (norms, [D.torch_norms]),
    "loss": (losses, [D.torch_losses, D.hf_causal_lm_loss]),
    "ffn": (ffn, [D.torch_ffn]),
    "block": (block, [D.torch_block]),
    "rope": (rope, [D.hf_llama_rope]),
}

_worst: dict = {}


def _recording(original):
    def compare_close(name, got, ref, atol, context):
        got_, ref_ = np.asarray(got, np.float64), np.asarray(ref, np.float64)
        if got_.size and got_.shape == ref_.shape and np.isfinite(got_).all():
            err = float(np.max(np.abs(got_ - ref_)))
            ratio = err / atol if atol > 0 else (0.0 if err == 0 else np.inf)
            if ratio >= _worst.get("ratio", -1.0):
                _worst.update(ratio=ratio, err=err, bound=atol, what=name)
        return original(name, got, ref, atol, context)
    return compare_close


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=300)
    ap.add_argument("--kinds", default=",".join(KINDS))
    args = ap.parse_args(argv)
    for mod in (precision, norms, block, rope):
        mod.compare_close = _recording(mod.compare_close)
    print(f"{'kind':6} {'property':44} {'adapter':34} {'n':>5} {'worst err/bound':>15} {'err':>10} {'bound':>10}")
    bad = 0
    for kind in args.kinds.split(","):
        mod, factories = KINDS[kind]
        for factory in factories:
            for p in ("float32", "bfloat16"):
                impl = factory(p)
                for prop in mod.PROPERTIES:
                    if not supports(impl, prop):
                        continue
                    worst = {"ratio": 0.0, "err": 0.0, "bound": 0.0, "what": ""}
                    count = [0]

                    @settings(max_examples=args.examples, derandomize=True, database=None, deadline=None,
                              suppress_health_check=list(HealthCheck))
                    @given(case=strategy_for(prop, impl))
                    def run(case):
                        _worst.clear()
                        count[0] += 1
                        try:
                            prop.check(impl, case)
                        except AssertionError:
                            pass
                        if _worst.get("ratio", 0.0) > worst["ratio"]:
                            worst.update(_worst)

                    t0 = time.perf_counter()
                    run()
                    bad += worst["ratio"] > 1
                    print(f"{kind:6} {prop.name:44} {impl.name:34} {count[0]:5d} {worst['ratio']:15.3g} "
                          f"{worst['err']:10.3g} {worst['bound']:10.3g}  ({worst['what']}; {time.perf_counter() - t0:.0f} s)",
                          flush=True)
    print(f"{bad} (property, adapter) pairs above their bound")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
