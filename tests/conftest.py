"""Shared fixtures: tiny random checkpoints and the challenge set, built once per session in tmp.

Tests never touch the network, so the hub libraries are put offline (``HF_HUB_OFFLINE=1``) for
every run, except a run that selects the ``network`` tests (``make test-network``): those need the
real hub, and fail, never skip, when it cannot be reached.
"""

from __future__ import annotations

import os
import urllib.request

import matplotlib
import pytest
from _pytest.mark.expression import Expression

matplotlib.use("Agg")

HUB_PROBE_TIMEOUT_S = 10


def selects_network_tests(markexpr: str) -> bool:
    """Whether a ``-m`` expression selects the tests marked ``network`` alone (``network``, ``not slow``...)."""
    return bool(markexpr) and Expression.compile(markexpr).evaluate(lambda name, **_: name == "network")


def pytest_configure(config):
    if not selects_network_tests(config.getoption("markexpr")):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before any test module imports huggingface_hub
    config.addinivalue_line("markers", "may_skip_in_ci(reason): a skip of this test does not fail a CI run")


# --- no silent skips in CI ------------------------------------------------------------------------------

_skipped: list[str] = []  # this run's skipped tests that are not marked may_skip_in_ci


def in_ci() -> bool:
    """Whether this run is CI's (``CI`` set to true, as CI services and ``.ci/run`` do)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _record_skip(report) -> None:
    allowed = hasattr(report, "wasxfail") or "may_skip_in_ci" in getattr(report, "keywords", {})
    if report.skipped and not allowed:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append(f"{report.nodeid}: {reason}")


def pytest_runtest_logreport(report):
    _record_skip(report)


def pytest_collectreport(report):
    _record_skip(report)


def pytest_sessionfinish(session):
    """In CI a skipped test fails the run: there a skip is a check that silently did not run."""
    if in_ci() and _skipped and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _skipped:
        verdict = "they fail the run (CI is set)" if in_ci() else "with CI=true they would fail the run"
        terminalreporter.section(f"{len(_skipped)} skipped test(s): {verdict}", red=in_ci())
        for line in _skipped:
            terminalreporter.line(line)
    elif in_ci():
        terminalreporter.line("CI: no skips in this run (any skip fails it)")


@pytest.fixture(scope="session")
def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be used from here, or None when it answers."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return "HF_HUB_OFFLINE is set in the environment"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        with urllib.request.urlopen(f"{endpoint}/api/models/openai/clip-vit-base-patch32",
                                    timeout=HUB_PROBE_TIMEOUT_S):
            return None
    except OSError as error:
        return f"{endpoint} did not answer ({type(error).__name__}: {error})"


@pytest.fixture(autouse=True)
def network_tests_need_the_hub(request):
    """A ``network`` test fails at once, saying why, when the hub cannot be used: it never skips."""
    if request.node.get_closest_marker("network") is not None:
        reason = request.getfixturevalue("hub_unreachable")
        if reason is not None:
            pytest.fail(f"network test needs the Hugging Face hub: {reason}", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def embedding_cache_in_tmp(tmp_path_factory):
    """Session and module fixtures cache embeddings in a session folder, never in the user's cache folder."""
    previous = os.environ.get("CLIPEVAL_EMBEDDING_CACHE")
    os.environ["CLIPEVAL_EMBEDDING_CACHE"] = str(tmp_path_factory.mktemp("embedding-cache"))
    yield
    if previous is None:
        os.environ.pop("CLIPEVAL_EMBEDDING_CACHE")
    else:
        os.environ["CLIPEVAL_EMBEDDING_CACHE"] = previous


@pytest.fixture(autouse=True)
def fresh_embedding_cache(tmp_path_factory, monkeypatch):
    """Each test starts with an empty embedding cache of its own: no test reads vectors an earlier test
    encoded, so a comparison of two runs compares two encodings and results do not depend on test order."""
    monkeypatch.setenv("CLIPEVAL_EMBEDDING_CACHE", str(tmp_path_factory.mktemp("embedding-cache")))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module: on a shared 2-core machine extra OpenMP threads only contend."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_specs(tmp_path_factory) -> dict[str, str]:
    """Specs of tiny random checkpoints saved in the real formats (hf-clip, hf-siglip, open_clip...)."""
    import open_clip

    from clipeval.models.tiny import build_tiny_checkpoints

    root = tmp_path_factory.mktemp("tiny-random")
    specs = build_tiny_checkpoints(root)
    open_clip.add_model_config(root / "open_clip_arch")  # makes the tiny arch name known
    return specs


@pytest.fixture(scope="session")
def challenge_csv(tmp_path_factory):
    """The embedded challenge set written to a temporary folder."""
    from clipeval.data.challenge import build_challenge_set

    return build_challenge_set(tmp_path_factory.mktemp("challenge"))


@pytest.fixture
def score_table(tmp_path):
    """Score a pairs table as ``score --pairs`` does (a one-shard run), each call into a new run folder.

    ``score_table(pairs, specs, chunk_size=..., run_dir=..., overwrite=..., **embed_options)`` returns
    the :class:`~clipeval.pipeline.run.ScoringRun`; the embedding options default to the CPU, no bars.
    """
    import itertools

    from clipeval.embed.options import EmbedOptions
    from clipeval.pipeline.options import ShardOptions
    from clipeval.pipeline.run import score_pairs_table

    numbers = itertools.count()

    def score(pairs, checkpoints, chunk_size=256, run_dir=None, overwrite=False, **embed):
        embed = {"progress": False, "device": "cpu", **embed}
        return score_pairs_table(run_dir or tmp_path / f"run{next(numbers)}", pairs, list(checkpoints),
                                 ShardOptions(chunk_size=chunk_size), EmbedOptions(**embed), overwrite)

    return score
