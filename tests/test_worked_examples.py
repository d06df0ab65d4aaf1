"""Every worked example of the notes (docs/notes.md), computed by refimpl, against the notes' printed figure."""

import math

import pytest

from properties.examples import all_examples

EXAMPLES = all_examples()


def _close(got, expected, rel_tol):
    if isinstance(expected, tuple):
        return isinstance(got, tuple) and len(got) == len(expected) and all(
            _close(g, e, rel_tol) for g, e in zip(got, expected)
        )
    if rel_tol == 0:
        return got == expected
    return math.isclose(got, expected, rel_tol=rel_tol, abs_tol=0.0)


@pytest.mark.parametrize("ex", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_worked_example(ex):
    got = ex.compute()
    assert _close(got, ex.expected, ex.rel_tol), (
        f"{ex.source}: the notes print {ex.seed_figure}; spec computes {got!r}, "
        f"expected {ex.expected!r} within rel_tol {ex.rel_tol}. {ex.note}"
    )


def test_there_are_worked_examples():
    assert len(EXAMPLES) >= 18
