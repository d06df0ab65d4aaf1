"""The README's main job runs and reports success (a few examples per property to stay quick)."""

from properties.__main__ import main


def test_main_job_runs(capsys):
    rc = main(["--examples", "3", "--no-meta"])
    out = capsys.readouterr().out
    assert "Worked examples" in out and "Conformance properties" in out
    assert rc == 0, out[-3000:]
