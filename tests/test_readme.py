"""The README's oracle example runs as written, and its preset table matches the code."""

import pathlib
import re

import numpy as np

from refimpl.conventions import PRESETS

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_oracle_example_runs_as_written():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})


def _table(header_start):
    lines = README.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_preset_table_matches_code():
    rows = _table("| preset | align |")
    assert {r[0] for r in rows} == set(PRESETS)
    lse_names = {np.inf: "+inf", -np.inf: "-inf", None: "none", "finite": "finite"}
    for name, align, _window, out, lse in rows:
        p = PRESETS[name]
        assert p.align == align, name
        assert p.fully_masked == out, name
        assert lse_names[p.masked_lse] == lse, name


def test_moe_preset_table_matches_code():
    from refimpl.moe import presets as P

    rows = _table("| preset | library (file: function) |")
    names = {n.strip("` ") for r in rows for n in r[0].split(",")}
    assert names == set(P.ALL), names ^ set(P.ALL)
    for row in rows:
        uniform = row[-1].rsplit("(", 1)[1].rstrip(")")
        for n in (n.strip("` ") for n in row[0].split(",")):
            value = P.ALL[n].uniform_balance_loss(3, 8)  # k = 3, E = 8
            assert value == {"1": 1.0, "k": 3.0}[uniform], (n, value, uniform)


def test_mixer_preset_table_matches_code():
    from refimpl.mixers import presets as MP

    rows = _table("| preset | library (file: function, version checked) |")
    assert {r[0].strip("` ") for r in rows} == set(MP.PRESETS)

def test_readme_misspelled_capability_command(monkeypatch, capsys):
    """The README's misspelled-capability command gives the error it shows."""
    from properties.__main__ import main

    line = next(l for l in README.splitlines() if "properties.demo:misspelled python -m properties" in l)
    env, _, cmd = line.strip().partition(" python -m properties ")
    monkeypatch.setenv(*env.split("=", 1))
    assert main(cmd.split()) == 2
    shown = README.split(line, 1)[1].splitlines()[1].strip()
    got = capsys.readouterr().err.strip()
    assert got.startswith(shown.split("...")[0].rstrip(", ")), (got, shown)


def test_readme_links_the_conformance_document():
    assert "docs/conformance.md" in README


def test_readme_low_precision_backward_commands(monkeypatch):
    """The README's float32 / bfloat16 attention-backward commands: the correct adapters pass,
    the ones without the rowsum(dO * O) term fail (run here on 2 examples of backward_matches_reference:
    the finite-difference property costs more and runs in tests/test_precision_attention.py)."""
    import shlex

    from properties.__main__ import main

    for target, status in (("properties.tiled:LOWP_BACKWARD ", 0), ("properties.tiled:LOWP_BACKWARD_WRONG ", 1)):
        line = next(l.strip() for l in README.splitlines() if l.strip().startswith(f"REFIMPL_IMPLS={target}"))
        env, _, cmd = line.partition(" python -m properties ")
        monkeypatch.setenv(*env.split("=", 1))
        assert main(shlex.split(cmd) + ["--examples", "2", "--only", "backward_matches"]) == status, line


def _demo_layer_commands():
    return [l.strip() for l in README.splitlines() if l.strip().startswith("REFIMPL_IMPLS=properties.demo_layers:")]


def test_readme_precision_commands_pass_and_fail_as_shown(monkeypatch, capsys):
    """The README's float32 / bfloat16 layer adapters: correct ones exit 0, the buggy ones 1,
    every named adapter reported (pass, or FAIL for the buggy ones)."""
    import shlex

    import pytest

    pytest.importorskip("torch", reason="torch not installed: the README's precision examples need it")
    pytest.importorskip("transformers", reason="transformers not installed: the README's precision examples need it")
    from properties import demo_layers as D
    from properties.__main__ import main

    wrong = {a.name for f in D.WRONG_FACTORIES for p in ("float32", "bfloat16") for a in [f(p)]}
    lines = _demo_layer_commands()
    assert len(lines) == 6, lines
    for line in lines:
        env, _, cmd = line.partition(" python -m properties ")
        monkeypatch.setenv(*env.split("=", 1))
        args = shlex.split(cmd)
        names = [args[i + 1] for i, a in enumerate(args) if a == "--impl"]
        expected = 1 if set(names) <= wrong else 0
        assert expected == 0 or not set(names) - wrong, line
        assert main(args) == expected, line
        out = capsys.readouterr().out
        for name in names:
            assert f"{name}: {'FAIL' if expected else 'pass'}" in out, (line, out[-2000:])


def _readme_commands(prefix):
    """(command, the lines shown after it) for each README command starting with ``prefix``
    (backslash continuations joined)."""
    lines, out = README.splitlines(), []
    for i, line in enumerate(lines):
        if line.strip().startswith(prefix):
            cmd, j = line.strip(), i
            while cmd.endswith("\\"):
                j += 1
                cmd = cmd[:-1].rstrip() + " " + lines[j].strip()
            shown = []
            for later in lines[j + 1:]:
                if not later.startswith("    ") or later.strip().startswith("REFIMPL_IMPLS="):
                    break
                shown.append(later.strip())
            out.append((cmd, shown))
    return out


def test_readme_low_precision_moe_and_mixer_commands(monkeypatch, capsys):
    """The README's float32/bfloat16 router and scan commands: the correct adapters pass, the wrong
    ones fail with the messages shown (run here with 3 examples, the failing ones with the default count
    and only the properties shown, so the figures may differ)."""
    import shlex

    from properties.__main__ import main

    cmds = _readme_commands("REFIMPL_IMPLS=properties.lowp_")
    assert len(cmds) == 4, cmds
    for cmd, shown in cmds:
        env, _, rest = cmd.partition(" python -m properties ")
        monkeypatch.setenv(*env.split("=", 1))
        passing = shown[0].startswith("ALL PASSED")
        args = shlex.split(rest)
        shown_property = {"moe": "moe_r", "ssm_scan": "scan_matches_sequential"}  # moe_route_*, moe_renormalised_*
        only = [] if passing else ["--only", shown_property[args[args.index("--kind") + 1]]]
        status = main(args + (["--examples", "3"] if passing else only))
        got = capsys.readouterr().out
        if passing:
            assert status == 0 and "ALL PASSED" in got, got[-2000:]
        else:
            assert status != 0
            for line in shown:  # each " ... "-separated fragment, any figures in it free (fewer examples)
                for fragment in filter(None, (f.strip() for f in line.split("..."))):
                    parts = re.split(r"(\d[\d.e+-]*)", fragment)
                    pattern = "".join(r"[-\d.e+]+" if i % 2 else re.escape(x) for i, x in enumerate(parts))
                    assert re.search(pattern, got), (fragment, got[-3000:])
