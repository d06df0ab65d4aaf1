"""The runner a person follows (python -m properties) and the pytest plugin from a directory
outside the repository: usage errors, --list, progress, the final table, reports, the trimmed
failure with its snippet."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from properties.__main__ import main

ROOT = pathlib.Path(__file__).resolve().parents[1]

README = (ROOT / "README.md").read_text()
#: the README's user adapter (a float32 NumPy kernel and its top-left-causal variant), run as written
ADAPTERS = README.split("# my_pkg/adapters.py\n", 1)[1].split("```", 1)[0]


USAGE = "python -m properties: error: "


@pytest.mark.parametrize("argv, message", [
    (["--examples", "0"], "--examples: expected a whole number >= 1, got 0"),
    (["--maxfail", "x"], "--maxfail: expected a whole number >= 1, got 'x'"),
    (["--seed", "-1"], "--seed: expected an integer >= 0, got -1"),
    (["--profile", "fast"], "--profile: expected one of 'dev', 'ci', 'thorough', got 'fast'"),
    (["--only"], "--only: expected one value, got none"),
    (["--bogus"], "arguments: expected the options that python -m properties --help lists, got --bogus"),
    (["extra"], "arguments: expected the options that python -m properties --help lists, got extra"),
    (["--ex", "3"], "--ex: expected one option, got an abbreviation of --examples, --exitfirst"),
    (["--list=3"], "--list: expected no value, got '3'"),
])
def test_bad_option_values_are_usage_errors(argv, message, capsys):
    """argparse's own errors in the one wording ``<option>: expected ..., got ...``, exit status 2."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == USAGE + message


@pytest.mark.parametrize("argv, env, start", [
    (["--kind", "atention"], None, "--kind: expected one of attention, "),
    (["--impl", "refimpl.atention"], None, "--impl: expected the name of an implementation "),
    (["--impl", "x"], "nope:x", "REFIMPL_IMPLS: expected module:object with a module that imports, got 'nope:x'"),
    (["--impl", "x"], "properties.demo", "REFIMPL_IMPLS: expected 'module:object' "),
    (["--impl", "x"], "properties.demo:nope", "REFIMPL_IMPLS: expected module:object naming an object of its module"),
    (["--list", "--no-kernels"], "properties.demo:nope", "REFIMPL_IMPLS: expected module:object naming an object"),
])
def test_unknown_names_are_usage_errors_in_the_one_wording(argv, env, start, monkeypatch, capsys):
    if env:
        monkeypatch.setenv("REFIMPL_IMPLS", env)
    else:
        monkeypatch.delenv("REFIMPL_IMPLS", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(USAGE + start) and ", got " in err, err


def test_bad_refimpl_jobs_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setenv("REFIMPL_JOBS", "0")
    assert main(["--kind", "softmax", "--no-kernels"]) == 2  # before any work
    assert capsys.readouterr().err.strip() == USAGE + "REFIMPL_JOBS: expected a whole number >= 1, got 0"


def test_usage_wording_rewrites_every_argparse_message_shape():
    """Each argparse message shape (3.11 and later spellings) maps to ``<name>: expected ..., got ...``."""
    from properties.__main__ import usage_wording

    for message in ["argument --profile: invalid choice: 'x' (choose from 'dev', 'ci')",
                    "argument --profile: invalid choice: 'x' (choose from dev, ci)",
                    "argument --only: expected one argument", "unrecognized arguments: a b",
                    "ambiguous option: --ex could match --examples, --exitfirst",
                    "argument --list: ignored explicit argument '3'", "argument --x: not allowed with argument --y",
                    "the following arguments are required: --z"]:
        got = usage_wording(message)
        assert re.match(r"^[^:]+: expected .*, got", got), (message, got)


def test_unknown_names_give_one_line_with_the_closest(monkeypatch, capsys):
    assert main(["--impl", "refimpl.atention"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean ['refimpl.attention'" in err, err
    assert main(["--kind", "atention"]) == 2
    assert "did you mean ['attention'" in capsys.readouterr().err
    monkeypatch.setenv("REFIMPL_IMPLS", "properties.dem:wrong_attention")
    assert main(["--impl", "demo.wrong_attention"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'properties.demo'" in err and "Traceback" not in err, err
    monkeypatch.setenv("REFIMPL_IMPLS", "properties.demo:wrong_atention")
    assert main(["--impl", "demo.wrong_attention"]) == 2
    assert "has no object 'wrong_atention'; did you mean 'wrong_attention'" in capsys.readouterr().err


def test_list_separates_bundled_and_wrong(capsys):
    assert main(["--list", "--no-kernels"]) == 0
    out = capsys.readouterr().out
    assert "attention  (" in out and "    bundled:" in out and "    wrong (" in out
    assert max(len(line) for line in out.splitlines()) <= 110  # wrapped, not 250 names on one line


def test_help_has_examples_and_the_impls_format(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "REFIMPL_IMPLS: a comma-separated list of module:object" in out
    assert "``" not in out and "--no-meta" in out and "skip the meta-tests" in out


def test_failure_progress_table_reports_and_maxfail(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("REFIMPL_IMPLS", "properties.demo:wrong_attention")
    report, picture = tmp_path / "r.json", tmp_path / "h.svg"
    rc = main(["--impl", "demo.wrong_attention", "--impl", "refimpl.attention", "--examples", "5", "--maxfail", "1",
               "--json", str(report), "--headroom", str(picture)])
    out = capsys.readouterr().out
    assert rc == 1
    assert "demo.wrong_attention: FAIL: out: max |error|" in out and "Reproduce with:" in out
    assert "[2/28, elapsed" in out and "ETA" in out  # plain progress (not a terminal)
    assert "stopped after 1 failure(s) (--maxfail 1)" in out
    assert "kind       implementation" in out and "attention  demo.wrong_attention     0     1" in out
    doc = json.loads(report.read_text())
    assert doc["environment"]["libraries"]["numpy"] and doc["environment"]["refimpl"]["version"]
    assert doc["settings"] == {"max_examples": 5, "derandomize": True}
    ok = next(r for r in doc["results"] if r["implementation"] == "refimpl.attention")
    assert ok["status"] == "pass" and ok["worst"]["quantity"] in ("out", "lse") and ok["worst"]["ratio"] < 1
    assert ok["sizes"]["q"]["distinct_shapes"] >= 1
    bad = next(r for r in doc["results"] if r["status"] == "fail")
    assert bad["worst"]["ratio"] > 1 and "np.float64" not in bad["reason"]
    assert picture.read_text().startswith("<svg") and "matches_reference | refimpl.attention" in picture.read_text()


def test_seed_runs_are_repeatable(monkeypatch, capsys):
    from properties.core import RECORDS

    runs = []
    for _ in range(2):
        assert main(["--impl", "refimpl.attention", "--only", "matches_reference", "--examples", "4",
                     "--seed", "7"]) == 0
        runs.append(RECORDS[("matches_reference", "refimpl.attention")].sizes)
    assert runs[0] == runs[1]
    capsys.readouterr()


def _pytest(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYPOTHESIS_STORAGE_DIRECTORY": str(tmp_path / "hyp")}
    env.pop("REFIMPL_IMPLS", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "properties.pytest_plugin", "-p", "no:cacheprovider",
                           "--refimpl-profile", "ci", "--refimpl-examples", "5", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)


def test_plugin_from_a_scratch_directory(tmp_path):
    """pytest --refimpl-impl in a directory outside the repository: the user's adapters only,
    the correct one passing, the wrong one failing with a trimmed report and its snippet."""
    (tmp_path / "my_pkg").mkdir()
    (tmp_path / "my_pkg" / "__init__.py").write_text("")
    (tmp_path / "my_pkg" / "adapters.py").write_text(ADAPTERS)
    run = _pytest(tmp_path, "--refimpl-impl", "my_pkg.adapters:my_kernel,my_pkg.adapters:my_wrong_kernel",
                  "--refimpl-kind", "attention", "--refimpl-json", "report.json")
    assert run.returncode == 1, run.stdout[-3000:]
    out = run.stdout
    assert "refimpl conformance: my_kernel (attention), my_wrong_kernel (attention)" in out
    doc = json.loads((tmp_path / "report.json").read_text())
    status = {(r["property"], r["implementation"]): r["status"] for r in doc["results"]}
    assert {i for _, i in status} == {"my_kernel", "my_wrong_kernel"}  # not the bundled ones
    assert {s for (_, i), s in status.items() if i == "my_kernel"} == {"pass", "unsupported"}
    assert status[("matches_reference", "my_wrong_kernel")] == "fail"
    assert "matches_reference [attention] failed for my_wrong_kernel" in out
    assert "exceeds bound" in out and "Reproduce with:" in out and "find_adapter('my_wrong_kernel')" in out
    failure = out.split("= FAILURES =")[1].split("_ test_property[")[1]
    assert len(failure.splitlines()) < 30 and "def run_property" not in failure, failure
    typo = _pytest(tmp_path, "--refimpl-impl", "my_pkg.adapters:my_kernl")
    assert typo.returncode == 4 and "has no object 'my_kernl'; did you mean 'my_kernel'" in typo.stderr, typo.stderr


def _verdicts(records):
    return [(r.property, r.implementation, r.status, r.examples, r.worst and r.worst["error"], r.sizes)
            for r in records]


def test_jobs_give_the_serial_report(capsys):
    """--jobs 2 (forked or spawned workers: under pytest, where torch may be loaded, spawned) prints
    the serial run's verdicts, examples, worst errors and sizes in the same order; the worked examples
    and meta-tests come out of the workers too."""
    from properties.__main__ import conformance

    runs = {}
    for jobs in (1, 2):
        failures, records, stopped, meta_bad = conformance(5, None, kernels=False, kinds=("softmax", "cast"),
                                                           jobs=jobs, with_examples=True, with_meta=True)
        out = capsys.readouterr().out
        assert failures == 0 and meta_bad == 0 and not stopped, out[-2000:]
        runs[jobs] = (_verdicts(records), [line for line in out.splitlines() if line.startswith("- ")])
        assert "Worked examples" in out and "Meta-tests" in out and "rejected" in out
    assert runs[1] == runs[2]



def test_pairs_are_grouped_by_implementation_most_first_and_cut_for_few_implementations():
    """--jobs tasks: an implementation's pairs in one task (it loads its runtime once), the gpu/
    kernels (one OpenCL context) together, the largest first; one implementation alone is cut into
    pieces of at most 1 / (2 jobs) of the pairs, so it still spreads over the workers."""
    from properties.runner import _pair_groups

    class Impl:
        def __init__(self, name):
            self.name = name

    a, b, k1, k2 = Impl("a"), Impl("b"), Impl("gpu-1"), Impl("gpu-2")
    pairs = [(p, a) for p in range(3)] + [(p, k1) for p in range(4)] + [(p, b) for p in range(2)] \
        + [(p, k2) for p in range(4)]
    groups = _pair_groups(pairs, {"gpu-1", "gpu-2"}, jobs=1)
    assert groups == [[3, 4, 5, 6, 9, 10, 11], [0, 1, 2], [7, 8], [12]]  # at most ceil(13 / 2) a piece
    alone = _pair_groups([(p, a) for p in range(14)], set(), jobs=2)
    assert [len(g) for g in alone] == [4, 4, 4, 2] and sorted(sum(alone, [])) == list(range(14))

def test_jobs_spawn_when_the_parent_has_used_torch(tmp_path):
    """A parent that has run torch (its OpenMP pool started) must not fork: a forked worker's first
    torch op hangs. The runner spawns then, and the run completes."""
    script = tmp_path / "run.py"
    script.write_text(
        "import torch\n"
        "(torch.randn(300, 300) @ torch.randn(300, 300)).sum()\n"
        "from properties.__main__ import _start_method, main\n"
        "if __name__ == '__main__':\n"
        "    assert _start_method() == 'spawn'\n"
        "    raise SystemExit(main(['--kind', 'softmax', '--examples', '3', '--jobs', '2', '--no-kernels']))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYPOTHESIS_STORAGE_DIRECTORY": str(tmp_path / "hyp")}
    run = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "ALL PASSED" in run.stdout and "worker processes failed" not in run.stdout


def test_the_table_splits_adapter_time_from_the_suite(capsys):
    """Seconds inside the adapter's protocol methods are counted apart from the suite's: an adapter
    that sleeps 20 ms a call shows at least that much adapter time, and the table prints both."""
    import dataclasses
    import time as clock

    from properties import attention_impls
    from properties.__main__ import table
    from properties.core import run_property
    from properties.registry import all_properties

    def slow(q, k, v, **kw):
        clock.sleep(0.02)
        return attention_impls.naive_attention(q, k, v, **kw)

    impl = dataclasses.replace(attention_impls.naive_adapter(), name="slow_naive", forward=slow)
    prop = next(p for p in all_properties() if p.kind == "attention" and p.name == "matches_reference")
    rec = run_property(prop, impl, max_examples=5, derandomize=True, database=None, deadline=None)
    assert rec.adapter_seconds >= 0.02 * rec.examples
    assert rec.adapter_seconds <= rec.seconds
    assert 0 < rec.adapter_cpu_seconds <= rec.cpu_seconds
    text = table([rec])
    assert "adapter s" in text and "inside the adapters' methods" in text and "s in the adapters" in text
