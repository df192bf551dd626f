"""pytest plugin: under CI (``CI=true``, as ``.ci/run`` sets it) a skipped test fails the run.

Every test must run on a fresh machine: data comes from tests/data/, models are packaged or
built tiny, and device-dependent code is tested by simulating the device (see test_gpu_slots).
A skip in CI therefore means something is missing, which must not pass as green. Expected
failures (xfail) are not skips and are left alone. Run ``pytest -rs`` to see the reasons.
"""

from __future__ import annotations

import os

import pytest


def strict() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if not strict() or reporter is None:
        return
    skipped = [r for r in reporter.stats.get("skipped", []) if not hasattr(r, "wasxfail")]
    if skipped:
        reporter.write_line(
            f"CI: {len(skipped)} test(s) skipped; every test must run in CI (reasons: pytest -rs)", red=True
        )
        for report in skipped:
            reporter.write_line(f"  skipped: {report.nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
