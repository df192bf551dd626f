"""The suite's own rules: under CI no test may skip (tests/strict_skips.py, run here on a throwaway
test file), and only slow tests run Snakemake (conftest.run_snakemake)."""

from __future__ import annotations

import pytest
from conftest import run_snakemake

SUITE = """
import pytest

def test_runs():
    assert True

def test_needs_data():
    pytest.skip("data not found")

@pytest.mark.xfail(reason="known bug", strict=True)
def test_known_bug():
    assert False
"""


@pytest.fixture
def suite(pytester):
    pytester.makepyfile(test_suite=SUITE)
    return pytester


def test_a_skip_fails_the_run_under_ci(suite, monkeypatch):
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest_inprocess("-p", "strict_skips", "-rs")
    result.assert_outcomes(passed=1, skipped=1, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*CI: 1 test(s) skipped; every test must run in CI*", "*skipped: test_suite.py::test_needs_data"]
    )


def test_a_module_skipped_at_import_fails_the_run_under_ci(pytester, monkeypatch):
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(
        test_missing='import pytest\npytest.importorskip("no_such_module_here")\n\ndef test_x():\n    pass\n'
    )
    result = pytester.runpytest_inprocess("-p", "strict_skips")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*skipped: test_missing.py"])


def test_outside_ci_a_skip_is_reported_not_failed(suite, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    result = suite.runpytest_inprocess("-p", "strict_skips")
    result.assert_outcomes(passed=1, skipped=1, xfailed=1)
    assert result.ret == pytest.ExitCode.OK


def test_the_fast_tier_never_runs_snakemake(tmp_path):
    with pytest.raises(AssertionError, match="run_snakemake in a test not marked slow"):
        run_snakemake(tmp_path, "--version")
