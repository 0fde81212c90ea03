"""A checkpoint family written outside the package, as a user would: one module, registered with one line.

``toy:<folder>`` is a few-hundred-parameter dual encoder (an 8 x 8 pixel linear image tower, a byte
embedding-bag text tower) saved as ``toy_config.json`` + ``toy_model.safetensors``; ``toy:<org/name>`` reads
the same files from the Hugging Face hub cache (offline: the rehearsal mirror).
"""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision import transforms

from clipeval.atomic import atomic_folder
from clipeval.models.encoder import Encoder
from clipeval.models.family import CheckpointFamily
from clipeval.models.registry import is_local_path
from clipeval.models.tiny import mark_tiny

REPO = "clipeval-tests/toy-encoder"
SIDE, DIM = 8, 8


class ToyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.image_tower = nn.Linear(3 * SIDE * SIDE, DIM)
        self.text_tower = nn.EmbeddingBag(256, DIM)
        self.logit_scale = nn.Parameter(torch.tensor(2.659))  # log(1/0.07), as CLIP: fine-tuning trains it


class ToyEncoder(Encoder):
    def __init__(self, spec, model, device, precision):
        super().__init__(spec, device, precision, context_length=32)
        self.model = model.to(device).eval()
        self.transform = transforms.Compose([transforms.Resize(SIDE), transforms.CenterCrop(SIDE),
                                             transforms.ToTensor()])

    def preprocess(self, image):
        return self.transform(image)

    def _image_features(self, pixels):
        return self.model.image_tower(pixels.flatten(1))

    def _text_features(self, texts):
        data = [torch.tensor(list(text.encode()[:self.context_length]) or [0]) for text in texts]
        offsets = torch.tensor([0] + [len(item) for item in data[:-1]]).cumsum(0)
        return self.model.text_tower(torch.cat(data).to(self.device), offsets.to(self.device))


def _folder(target: str) -> Path:
    if is_local_path(target):
        return Path(target).expanduser()
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(target))


def load(spec, device, precision):
    model = ToyModel()
    model.load_state_dict(load_file(_folder(spec.target) / "toy_model.safetensors"))
    return ToyEncoder(str(spec), model, device, precision)


def _write(model: ToyModel, folder: Path) -> None:
    with atomic_folder(folder) as staging:
        (staging / "toy_config.json").write_text(json.dumps({"side": SIDE, "dim": DIM}))
        save_file({name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()},
                  staging / "toy_model.safetensors")


def save(encoder, folder):
    _write(encoder.model, folder)
    return f"toy:{folder}"


def build_tiny(folder, seed):
    torch.manual_seed(seed)
    _write(ToyModel(), folder)
    mark_tiny(folder, "toy encoder", seed)
    return f"toy:{folder}"


def mirror_repo(folder):
    torch.manual_seed(0)
    _write(ToyModel(), folder)


FAMILY = CheckpointFamily(prefix="toy", description="toy encoder (tests)", load=load, save=save,
                          image_tower=("image_tower",), build_tiny=build_tiny,
                          hub_repos=lambda target: [] if is_local_path(target) else [target],
                          mirror_builders=lambda: {REPO: mirror_repo})
