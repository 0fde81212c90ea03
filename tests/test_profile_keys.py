"""Profile keys: every one documented, and a hand-written profile checked before any notebook runs."""

import re

import pytest
import yaml

from clipeval.paths import PROJECT_ROOT
from clipeval.profiles import check_profile, load_profile, profile_keys
from clipeval.runs.cli import main


def test_every_profile_key_is_documented_and_every_documented_key_exists():
    section = (PROJECT_ROOT / "docs" / "notebooks.md").read_text().split("## Profile keys", 1)[1]
    documented = re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE)
    assert sorted(documented) == sorted(profile_keys())


@pytest.mark.parametrize("profile", ["offline", "paper", "rehearsal"])
def test_the_shipped_profiles_pass_the_check(profile):
    check_profile(load_profile(profile))


def test_unknown_keys_wrong_kinds_and_missing_keys_are_named_in_one_message():
    with pytest.raises(ValueError) as raised:
        check_profile({"run_dir": "outputs/x", "notebooks": ["02_score_pair"], "checkpoint": ["hf:x"],
                       "batch_size": "32", "ks": [1, "5"], "benchmark_tolerance": 2}, name="my.yaml")
    message = str(raised.value)
    assert message.startswith("my.yaml: ")
    assert "unknown key 'checkpoint' (did you mean 'checkpoints'?)" in message
    assert "'batch_size' must be a whole number (as in notebook 02_score_pairs: 32), got text: '32'" in message
    assert "'ks' must be a list of whole numbers" in message
    assert "no notebook '02_score_pair' (did you mean '02_score_pairs'?)" in message
    assert "benchmark_tolerance" not in message  # a whole number is a number
    with pytest.raises(ValueError, match=r"'checkpoints' must be a list of text .* got text: 'hf:x'"):
        check_profile({"run_dir": "x", "notebooks": [], "checkpoints": "hf:x"})
    with pytest.raises(ValueError, match=r"missing required key 'run_dir' .*missing required key 'notebooks'"):
        check_profile({"checkpoints": ["hf:x"]})


def test_run_notebooks_refuses_a_bad_profile_before_running_anything(tmp_path, capsys):
    profile = tmp_path / "mine.yaml"
    profile.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "notebooks": ["02_score_pairs"],
                                       "pairs_pth": "pairs.csv"}))
    assert main(["run-notebooks", "--profile", str(profile)]) == 2
    assert "unknown key 'pairs_pth' (did you mean 'pairs_path'?)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
