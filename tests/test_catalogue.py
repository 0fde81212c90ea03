"""The checkpoint catalogue: every profile's checkpoints are described; random-init comes from data."""

import pytest

from clipeval.models.catalogue import CATALOGUE, describe_checkpoint, is_random_init, label_checkpoint
from clipeval.profiles import load_profile
from clipeval.runs.cli import main


@pytest.mark.parametrize("profile", ["offline", "paper"])
def test_every_profile_checkpoint_is_in_the_catalogue(profile):
    missing = [spec for spec in load_profile(profile)["checkpoints"] if spec not in CATALOGUE]
    assert not missing


def test_entries_are_complete():
    for spec, info in CATALOGUE.items():
        assert info.spec == spec and info.family and info.description and info.source, spec
        if info.matched_cosine is not None:
            low, high = info.matched_cosine
            assert -1 <= low < high <= 1 and info.matched_cosine_source, spec


def test_random_init_is_read_from_the_catalogue_not_the_spec_text():
    assert is_random_init("baseline:bert-resnet50-random")
    assert not is_random_init("baseline:bert-resnet50")
    assert not is_random_init("hf:someone/randomness-is-not-a-flag")  # the word alone no longer decides
    assert label_checkpoint("baseline:bert-resnet50-random").endswith("[RANDOM INIT]")
    assert label_checkpoint("hf:openai/clip-vit-base-patch32") == "hf:openai/clip-vit-base-patch32"


def test_tiny_checkpoints_say_they_are_random_wherever_they_are_saved(tiny_specs):
    for spec in tiny_specs.values():
        info = describe_checkpoint(spec)
        assert info.random_init and not info.in_catalogue and "tiny" in info.description, spec
        assert label_checkpoint(spec).endswith("[RANDOM INIT]")


def test_hub_names_never_read_an_info_file_from_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clipeval_checkpoint.json").write_text('{"random_init": true}')
    assert not is_random_init("open_clip:ViT-L-14@laion2b_s32b_b82k") and not is_random_init("hf:someone/model")


def test_unknown_specs_still_describe_from_their_prefix():
    info = describe_checkpoint("open_clip:ViT-L-14@laion2b_s32b_b82k")
    assert info.family == "open_clip" and not info.random_init and not info.in_catalogue


def test_cli_prints_the_catalogue(capsys, tiny_specs):
    assert main(["checkpoints"]) == 0
    printed = capsys.readouterr().out
    assert all(spec in printed for spec in CATALOGUE)
    assert "[RANDOM INIT]" in printed and "matched cos" in printed
    assert main(["checkpoints", tiny_specs["hf-clip"]]) == 0
    assert "not in the catalogue" in capsys.readouterr().out
