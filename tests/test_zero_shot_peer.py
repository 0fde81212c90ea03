"""Zero-shot classification against the peer itself: CLIP_benchmark's own ``zeroshot_classification`` functions
(clip-benchmark 1.6.2, imported, not re-implemented) on a tiny open_clip model and an image-folder DataLoader,
with CLIP_benchmark's CIFAR-10 templates from its package, against ``clipeval``'s ``zero_shot_classify`` with its
packaged ``cifar10`` templates, on the same weights and images."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import numpy as np
import open_clip
import pytest
from clip_benchmark.metrics import zeroshot_classification
from PIL import Image
from sklearn.metrics import balanced_accuracy_score
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from clipeval.data.classification_sets import read_image_folder_classes
from clipeval.data.zero_shot_prompts import packaged_prompts
from clipeval.embed.options import EmbedOptions
from clipeval.eval.zero_shot_classification import zero_shot_classify

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IMAGES_PER_CLASS = 4


def _their_templates(dataset: str) -> list[str]:
    """CLIP_benchmark's English templates for ``dataset``, read from its installed package."""
    path = files("clip_benchmark") / "datasets" / "en_zeroshot_classification_templates.json"
    return json.loads(path.read_text())[dataset]


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory):
    """CIFAR-10's classes as folders (ImageNet's val layout), four JPEGs each around a random colour."""
    root = tmp_path_factory.mktemp("cifar-like")
    rng = np.random.default_rng(3)
    for name in packaged_prompts("cifar10").classnames:
        (root / name).mkdir()
        for index in range(IMAGES_PER_CLASS):
            pixels = rng.integers(0, 256, 3) + rng.normal(0, 60, (40, 48, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / name / f"{index}.jpg", quality=90)
    return root


def test_top1_and_top5_of_every_image_equal_clip_benchmarks_own_functions(tiny_specs, cifar_folder):
    spec = tiny_specs["open_clip"]
    model_name = f"local-dir:{spec.removeprefix('open_clip:')}"
    model, _, transform = open_clip.create_model_and_transforms(model_name)  # as CLIP_benchmark's CLI loads it
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    images = ImageFolder(str(cifar_folder), transform=transform)
    loader = DataLoader(images, batch_size=7, shuffle=False, num_workers=0)
    classnames, templates = list(images.classes), _their_templates("cifar10")
    # fp32 on both sides: CLIP_benchmark's amp on the CPU autocasts to bfloat16, clipeval's CPU runs fp32
    classifier = zeroshot_classification.zero_shot_classifier(model, tokenizer, classnames, templates, "cpu",
                                                               amp=False)
    logits, target = zeroshot_classification.run_classification(model, classifier, loader, "cpu", amp=False)
    # evaluate()'s own ranking and metrics; evaluate() itself cannot run here: its accuracy() calls float() on a
    # one-element array, which numpy 2 refuses
    theirs = logits.topk(5, 1, True, True)[1].numpy()
    hits = theirs == target.numpy()[:, None]
    metrics = {"acc1": hits[:, :1].any(axis=1).mean(), "acc5": hits.any(axis=1).mean(),
               "mean_per_class_recall": balanced_accuracy_score(target, logits.argmax(axis=1))}

    dataset = read_image_folder_classes(cifar_folder)
    assert list(dataset.classnames) == classnames  # the same label order as ImageFolder's
    report = zero_shot_classify(spec, dataset, packaged_prompts("cifar10").templates,
                                EmbedOptions(device="cpu", progress=False, embedding_cache=False), n_resamples=50)
    ours = report.predictions.set_index("image")
    their_images = [Path(path).relative_to(cifar_folder).as_posix() for path, _ in images.samples]
    assert ours.loc[their_images, "label"].tolist() == target.tolist()
    top5 = np.stack(ours.loc[their_images, "top_classes"].to_list())
    assert top5.tolist() == theirs.tolist()  # every image, every rank
    assert len(set(top5[:, 0])) >= 3  # not one constant answer: the comparison can tell predictions apart

    ours_metrics = report.metrics.set_index("metric")["estimate"]
    assert ours_metrics["top1_accuracy"] == pytest.approx(metrics["acc1"], abs=1e-12)
    assert ours_metrics["top5_accuracy"] == pytest.approx(metrics["acc5"], abs=1e-12)
    assert ours_metrics["mean_per_class_recall"] == pytest.approx(metrics["mean_per_class_recall"], abs=1e-12)
