"""Without the shared data folder, the tests that read it skip with the reason, and the rest still
run: no collection error, no FileNotFoundError (tests/conftest.py: _SharedPath, _skip_without_shared_data)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def test_tests_skip_with_a_reason_when_the_shared_data_is_absent(tmp_path):
    env = {**os.environ, "HYBRID_SHARED": str(tmp_path / "no-shared-here")}
    # test_ingest lists the corpus at import time; test_formats reads it in most tests, not in all
    r = subprocess.run([sys.executable, "-m", "pytest", "tests/connectors/test_ingest.py",
                        "tests/connectors/test_formats.py", "-q", "-rs", "-p", "no:cacheprovider", "-m", "not slow"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]  # nothing failed or errored
    summary = out.strip().splitlines()[-1]
    assert "error" not in summary and "failed" not in summary and "passed" in summary, summary
    assert f"shared data not found: {tmp_path / 'no-shared-here'}/data/docs" in out  # the module skip
    assert "test_utf16_with_bom_decodes_to_the_same_text_as_its_utf8_twin reads it" in out  # a test skip
