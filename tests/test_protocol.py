"""The adapter protocol is strict and the runners report what a user can act on.

Load-time errors (misspelled capability, missing method, unknown option), no
fallback to refimpl, declines honoured, unsupported pairs skipped with a reason,
Unsupported mid-run a failure in both runners, the xfail file (strict), JSON
reports and reproduction snippets, and the generated protocol document.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings

import refimpl
from properties import attention as A
from properties import attention_cases as C
from properties import docs, registry
from properties import flash as F
from properties import moe as MP
from properties.__main__ import main
from properties.core import (
    ProtocolError, ProtocolViolation, Unsupported, check_adapter, declared, load_user_implementations, run_property,
    strategy_for, unsupported_reason,
)
from properties.pytest_plugin import conformance_params
from properties.report import XfailError, xfail_entries

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _attention(**kw):
    return A.attention_impls.AttentionAdapter(
        name=kw.pop("name", "user.attention"), forward=lambda q, k, v, **o: refimpl.attention(q, k, v, **o),
        capabilities=frozenset(kw.pop("capabilities", {"lse", "causal"})), **kw)


def test_misspelled_capability_is_a_load_error_listing_valid_names(monkeypatch):
    monkeypatch.setenv("REFIMPL_IMPLS", "properties.demo:misspelled")
    with pytest.raises(ProtocolError) as e:
        load_user_implementations()
    msg = str(e.value)
    assert "unknown capabilities ['masks']" in msg and "mask_array" in msg and "mask_predicate" in msg


def test_python_m_properties_reports_the_misspelling(monkeypatch, capsys):
    monkeypatch.setenv("REFIMPL_IMPLS", "properties.demo:misspelled")
    assert main(["--impl", "demo.misspelled"]) == 2
    assert "unknown capabilities ['masks']" in capsys.readouterr().err


@pytest.mark.parametrize("adapter, fragment", [
    (_attention(capabilities={"lse", "backward"}), "capability 'backward' declared but its method 'backward'"),
    (_attention(declines={"mask_rank": {4}}), "declines unknown option 'mask_rank'"),
    (_attention(declines={"mask_ndim": {3}}), "declines values [3] of option 'mask_ndim'"),
    (_attention(precision="fp8"), "precision 'fp8'"),
    (_attention(tiles=(0,)), "tiles must be"),
    (MP.MoEAdapter(name="user.router", route=refimpl.moe.route, capabilities=frozenset({"route", "losses"})),
     "capability 'losses' declared but its method 'balance_loss' is not supplied"),
    (F.FlashAdapter(name="user.flash", forward=refimpl.flash_attention, capabilities=frozenset({"lse"})),
     "declares none of ['fa1', 'fa2']"),
    (dataclasses.replace(_attention(), kind="atention"), "unknown kind 'atention'"),
])
def test_protocol_violations_are_load_errors(adapter, fragment):
    with pytest.raises(ProtocolError) as e:
        check_adapter(adapter)
    assert fragment in str(e.value)


def test_moe_adapter_has_no_refimpl_fallback():
    a = MP.MoEAdapter(name="user.router", route=refimpl.moe.route, capabilities=frozenset({"route"}))
    check_adapter(a)
    assert a.balance_loss is None and a.moe_forward is None and a.capabilities == {"route"}
    runs = {p.name for p in MP.PROPERTIES if unsupported_reason(a, p) is None}
    assert "moe_route_matches_reference" in runs and "moe_balance_loss_formula" not in runs


def test_flash_adapter_lacking_a_variant_is_unsupported_not_a_hypothesis_error():
    a = F.FlashAdapter(name="user.flash", forward=refimpl.flash_attention, capabilities=frozenset({"lse"}))
    reason = unsupported_reason(a, F.PROPERTIES[0])
    assert reason and "neither 'fa1' nor 'fa2'" in reason
    with pytest.raises(Unsupported):
        run_property(F.PROPERTIES[0], a)


def test_every_bundled_and_wrong_adapter_follows_its_protocol():
    for impl in registry.all_bundled() + list(registry.all_wrong().values()):
        check_adapter(impl)


@settings(max_examples=60, deadline=None)
@given(case=C.attention_case(declared(_attention(capabilities=set(C.ALL_CAPS) - {"backward"},
                                                 declines={"mask_ndim": {4}, "window_side": {"unbounded"},
                                                           "softcap": {30.0}}))))
def test_declined_attention_values_are_never_drawn(case):
    mask = case.kwargs.get("mask")
    assert not (isinstance(mask, np.ndarray) and mask.ndim == 4)
    assert None not in case.kwargs.get("window", (0, 0))
    assert case.kwargs.get("softcap") != 30.0


def test_declined_moe_values_are_never_drawn():
    a = dataclasses.replace(MP.REFIMPL, name="user.moe", declines={"drop_order": {"random", "priority"},
                                                                   "normalize": {"none"}})
    seen = []

    @settings(max_examples=80, deadline=None)
    @given(case=strategy_for(next(p for p in MP.PROPERTIES if p.name == "moe_route_structure"), a))
    def draw(case):
        seen.append((case.options["drop_order"], case.options["normalize"]))

    draw()
    assert seen and not {d for d, _ in seen} & {"random", "priority"} and "none" not in {n for _, n in seen}


def test_declining_every_needed_value_makes_the_pair_unsupported():
    a = _attention(capabilities={"lse", "dropout"}, declines={"dropout_p": {0.1, 0.5}})
    prop = next(p for p in A.PROPERTIES if p.name == "dropout_keep_mask")
    assert "declines every value of 'dropout_p'" in unsupported_reason(a, prop)


def test_unsupported_pairs_are_pytest_skips_with_the_reason():
    a = _attention(capabilities={"lse"})
    params = conformance_params(A.PROPERTIES, [a])
    skipped = {p.id: p.marks[0].kwargs["reason"] for p in params if p.marks}
    assert "causal_ignores_future-user.attention" in skipped
    assert "does not declare ['causal']" in skipped["causal_ignores_future-user.attention"]
    assert any(not p.marks for p in params)  # the supported ones run


def test_unsupported_raised_mid_run_is_a_failure():
    def fwd(q, k, v, **kw):
        if kw.get("causal"):
            raise Unsupported("no causal here")
        return refimpl.attention(q, k, v, **kw)

    a = A.attention_impls.AttentionAdapter("user.liar", fwd, frozenset({"lse", "causal"}))
    with pytest.raises(ProtocolViolation, match="declaration covers"):
        run_property(A.PROPERTIES[0], a, max_examples=50)


def _xfail_file(tmp_path, monkeypatch, entries):
    path = tmp_path / "xfail.json"
    path.write_text(json.dumps({"entries": entries}))
    monkeypatch.setenv("REFIMPL_XFAIL", str(path))


def test_xfail_entries_are_validated(tmp_path, monkeypatch):
    _xfail_file(tmp_path, monkeypatch, [{"property": "no_such_property", "implementation": "refimpl.attention",
                                         "reason": "x"}])
    with pytest.raises(XfailError, match="unknown property"):
        xfail_entries()
    _xfail_file(tmp_path, monkeypatch, [{"property": "matches_reference", "implementation": "nobody", "reason": "x"}])
    with pytest.raises(XfailError, match="unknown implementation"):
        xfail_entries()
    _xfail_file(tmp_path, monkeypatch, [{"property": "matches_reference", "implementation": "demo.wrong_attention",
                                         "reason": "documented", "adapter": "properties.demo:wrong_attention"}])
    assert xfail_entries() == {("matches_reference", "demo.wrong_attention"): "documented"}


def test_main_runner_reports_xfail_xpass_and_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REFIMPL_IMPLS", "properties.demo:wrong_attention")
    _xfail_file(tmp_path, monkeypatch, [
        {"property": "matches_reference", "implementation": "demo.wrong_attention", "reason": "known: top-left"},
        {"property": "gqa_equals_repeated_mha", "implementation": "demo.wrong_attention", "reason": "stale entry"},
    ])
    out_json = tmp_path / "r.json"
    rc = main(["--impl", "demo.wrong_attention", "--only", "e", "--examples", "10", "--json", str(out_json)])
    text = capsys.readouterr().out
    assert rc == 1  # the XPASS and the other failures fail the run
    rows = {r["property"]: r for r in json.loads(out_json.read_text())["results"]}
    assert rows["matches_reference"]["status"] == "xfail"
    assert rows["gqa_equals_repeated_mha"]["status"] == "xpass"
    assert rows["key_permutation_invariance"]["status"] == "unsupported"
    fail = rows["causal_ignores_future"]
    assert fail["status"] == "fail" and fail["examples"] >= 1 and "seed=" in fail["case"]
    assert "Reproduce with:" in text
    # the snippet rebuilds the shrunk case and raises the same failure
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", fail["snippet"]], capture_output=True, text=True, env=env, cwd=ROOT)
    assert res.returncode != 0 and "AssertionError" in res.stderr and "max |out - ref_out|" in res.stdout


def test_pytest_json_report(tmp_path):
    out_json = tmp_path / "p.json"
    env = {**os.environ, "REFIMPL_PROFILE": "dev", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--json", str(out_json),
                          "tests/test_conformance.py", "-k", "test_property and (merge or logsumexp)"],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-2000:]
    doc = json.loads(out_json.read_text())
    assert doc["runner"] == "pytest" and doc["summary"] == {"pass": 2}
    assert all(r["examples"] > 0 for r in doc["results"])


def test_protocol_document_is_generated_from_kinds():
    text = (ROOT / "docs" / "conformance.md").read_text()
    assert docs.protocol_section() in text, "docs/conformance.md is stale: run python -m properties.docs"
    for kind in registry.all_kinds().values():
        for cap in kind.capabilities:
            assert f"`{cap}`" in text


@pytest.mark.parametrize("module, prop_name, bug", [
    ("properties.moe", "moe_z_loss_matches_reference", "zloss_halved_consistent"),
    ("properties.flash", "flash_matches_attention", "no_rescale"),
])
def test_failure_snippet_reproduces_in_a_fresh_process(module, prop_name, bug):
    import importlib

    mod = importlib.import_module(module)
    prop = next(p for p in mod.PROPERTIES if p.name == prop_name)
    with pytest.raises(AssertionError) as e:
        run_property(prop, mod.WRONG[bug], max_examples=100, derandomize=True, database=None)
    snip = str(e.value).split("Reproduce with:\n", 1)[1]
    assert "pickle" not in snip  # rebuilt from literals / a recipe, readable
    res = subprocess.run([sys.executable, "-c", snip], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert res.returncode != 0 and "AssertionError" in res.stderr, res.stderr[-1500:]
