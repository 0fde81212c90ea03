import subprocess
import sys

import pytest

from clipeval.models.registry import CHECKPOINT_FAMILIES, CheckpointError, load_encoder, parse_spec


@pytest.mark.parametrize("spec, prefix, target", [
    ("hf:openai/clip-vit-base-patch32", "hf", "openai/clip-vit-base-patch32"),
    ("hf:/path/to/saved_dir", "hf", "/path/to/saved_dir"),
    ("open_clip:ViT-B-16-SigLIP@webli", "open_clip", "ViT-B-16-SigLIP@webli"),
    ("open_clip:hf-hub:timm/ViT-B-16-SigLIP", "open_clip", "hf-hub:timm/ViT-B-16-SigLIP"),
    ("open_clip:ViT-B-32@/path/to/weights.pt", "open_clip", "ViT-B-32@/path/to/weights.pt"),
    ("baseline:bert-resnet50", "baseline", "bert-resnet50"),
    ("dual:outputs/offline/models/dual", "dual", "outputs/offline/models/dual"),
])
def test_parse_spec_splits_on_first_colon(spec, prefix, target):
    parsed = parse_spec(spec)
    assert (parsed.prefix, parsed.target) == (prefix, target)
    assert str(parsed) == spec
    assert parsed.prefix in CHECKPOINT_FAMILIES


@pytest.mark.parametrize("spec", ["clip-vit", "hf:", "nosuch:model", ":x"])
def test_parse_spec_rejects_bad_specs(spec):
    with pytest.raises(CheckpointError) as error:
        parse_spec(spec)
    assert "\n" not in str(error.value)


def test_missing_local_directory_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such directory"):
        load_encoder(f"hf:{tmp_path / 'absent'}", device="cpu")


def test_unknown_open_clip_architecture():
    with pytest.raises(CheckpointError, match="unknown open_clip architecture"):
        load_encoder("open_clip:NoSuchArch@openai", device="cpu")


OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "PATH": ""}


@pytest.mark.parametrize("spec", ["hf:openai/clip-vit-base-patch32", "open_clip:ViT-B-32@openai",
                                  "open_clip:hf-hub:timm/ViT-B-16-SigLIP"])
def test_hub_name_offline_raises_one_line_naming_the_spec(spec):
    code = ("from clipeval.models.registry import load_encoder, CheckpointError\n"
            f"try:\n    load_encoder({spec!r}, device='cpu')\n"
            "except CheckpointError as e:\n    print('ERROR-LINE', e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=OFFLINE_ENV,
                            timeout=120)
    lines = [line for line in result.stdout.splitlines() if line.startswith("ERROR-LINE")]
    assert len(lines) == 1, result.stdout + result.stderr
    assert spec in lines[0] and "offline" in lines[0]


def test_cli_offline_error_is_one_line_and_exit_2(challenge_csv, tmp_path):
    result = subprocess.run([sys.executable, "-m", "clipeval", "score", "--pairs", str(challenge_csv),
                             "--checkpoint", "hf:openai/clip-vit-base-patch32", "--out", str(tmp_path / "run"),
                             "--no-progress"], capture_output=True, text=True, env=OFFLINE_ENV, timeout=120)
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "hf:openai/clip-vit-base-patch32" in error_lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "results.csv").exists()
