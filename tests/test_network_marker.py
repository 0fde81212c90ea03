"""`make test-network` can pass: network tests see the real hub, and fail (never skip) when it cannot be used."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import selects_network_tests

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("markexpr", "selected"), [("network", True), ("not slow", True), ("network or slow", True),
                                                     ("not slow and not network", False), ("slow", False), ("", False)])
def test_only_a_run_selecting_network_tests_goes_online(markexpr, selected):
    assert selects_network_tests(markexpr) is selected


def _network_run(**env) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    return subprocess.run([sys.executable, "-m", "pytest", "-m", "network", "-p", "no:cacheprovider", "-q",
                           "tests/test_published_numbers.py"], cwd=ROOT, env={**environment, **env},
                          capture_output=True, text=True, timeout=600)


def test_network_tests_fail_loudly_when_the_hub_does_not_answer():
    run = _network_run(HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens there: an unreachable hub
    assert run.returncode == 1, run.stdout[-2000:]  # failed: not passed or skipped (0), not collected nothing (5)
    assert "2 errors" in run.stdout and "skipped" not in run.stdout  # each stops in its setup, with the reason
    assert "network test needs the Hugging Face hub: http://127.0.0.1:9 did not answer" in run.stdout


def test_network_tests_refuse_an_offline_environment():
    run = _network_run(HF_HUB_OFFLINE="1")
    assert run.returncode == 1, run.stdout[-2000:]
    assert "network test needs the Hugging Face hub: HF_HUB_OFFLINE is set in the environment" in run.stdout
