"""Encode processes: forked CPU workers that decode and encode whole batches give the vectors, statuses and
truncation flags this process gives, and refuse the layouts they cannot run."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clipeval.data.images import read_many_bytes
from clipeval.data.retrieval_sets import RetrievalSet
from clipeval.data.sources import read_pairs
from clipeval.embed.engine import Embedder, embed_set, resolve_encode_processes
from clipeval.embed.options import EmbedOptions
from clipeval.models.registry import load_encoder
from clipeval.pipeline.options import ExecutionOptions

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def encoder(tiny_specs):
    return load_encoder(tiny_specs["hf-clip"], device="cpu")


def _files(folder, n: int) -> list[str]:
    rng = np.random.default_rng(3)
    paths = []
    for number in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"{number}.png")
        paths.append(str(folder / f"{number}.png"))
    return paths


class Picky:
    """An encoder whose transform rejects 7-pixel-wide images (the rejection must come back from a worker)."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def preprocess(self, image):
        if image.width == 7:
            raise ValueError("width 7 is not supported")
        return self.inner.preprocess(image)


def test_encode_processes_give_the_vectors_statuses_and_flags_of_this_process(encoder, tmp_path):
    files = _files(tmp_path, 5)
    Image.new("RGB", (7, 30)).save(tmp_path / "thin.png")
    (tmp_path / "text.png").write_text("not an image")
    refs = [files[0], files[1], str(tmp_path / "thin.png"), files[0], str(tmp_path / "text.png"), *files[2:]]
    raws = read_many_bytes(refs)
    texts = ["a cat", "a dog " * 40, None, "a cat", "two birds", "a red cube", "a blue ball"]
    embedded = {}
    for processes in (0, 2):
        options = EmbedOptions(batch_size=2, embedding_cache=False, progress=False, encode_processes=processes)
        with Embedder(Picky(encoder), options) as embedder:
            embedded[processes] = embedder.images(raws), embedder.texts(texts)
            assert embedder.encode_processes == processes and embedder.decode_processes == 0
    (inline_images, inline_texts), (worker_images, worker_texts) = embedded[0], embedded[2]
    assert worker_images.rows.tolist() == inline_images.rows.tolist() == [0, 1, -1, 0, -1, 2, 3, 4]
    assert worker_images.errors[2][0] == "preprocess_error" and "width 7" in worker_images.errors[2][1]
    assert worker_images.errors[4] == inline_images.errors[4] and worker_images.errors[4][0] == "decode_error"
    torch.testing.assert_close(worker_images.vectors, inline_images.vectors, rtol=0, atol=1e-5)
    assert worker_texts.rows.tolist() == inline_texts.rows.tolist()
    torch.testing.assert_close(worker_texts.vectors, inline_texts.vectors, rtol=0, atol=1e-5)
    assert worker_texts.truncated.tolist() == inline_texts.truncated.tolist()
    assert worker_texts.truncated[1] and not worker_texts.truncated[0]


def test_a_scoring_run_with_encode_processes_scores_like_one_without(tiny_specs, challenge_csv, score_table):
    pairs = read_pairs(challenge_csv).iloc[:10]
    specs = [tiny_specs["open_clip"], tiny_specs["hf-clip"]]
    inline = score_table(pairs, specs, batch_size=4, chunk_size=6, embedding_cache=False)
    workers = score_table(pairs, specs, batch_size=4, chunk_size=6, embedding_cache=False, encode_processes=2)
    np.testing.assert_allclose(workers.scores["cosine"], inline.scores["cosine"], rtol=0, atol=1e-5)
    assert workers.scores["status"].tolist() == inline.scores["status"].tolist()
    assert workers.scores["caption_truncated"].tolist() == inline.scores["caption_truncated"].tolist()
    for spec in specs:
        entry = workers.stats["checkpoints"][spec]
        assert entry["encode_processes"] == 2 and entry["decode_processes"] == 0
        assert "image_decode" not in entry["stages"] and entry["stages"]["image_encode"]["items"] > 0


def test_retrieval_embeds_the_same_set_with_encode_processes(encoder, tmp_path):
    files = _files(tmp_path, 4)
    dataset = RetrievalSet("t", pd.DataFrame({"text": ["red", "blue", "a long caption " * 30]}),
                           pd.DataFrame({"image": [*files, "absent.png"]}), np.array([[0, 0], [1, 1], [2, 2]]),
                           str(tmp_path))
    inline = embed_set(encoder, dataset, EmbedOptions(progress=False, embedding_cache=False, batch_size=2))
    workers = embed_set(encoder, dataset, EmbedOptions(progress=False, embedding_cache=False, batch_size=2,
                                                       encode_processes=2))
    assert workers.image_status == inline.image_status == ["ok"] * 4 + ["missing"]
    torch.testing.assert_close(workers.images, inline.images, rtol=0, atol=1e-5)
    torch.testing.assert_close(workers.texts, inline.texts, rtol=0, atol=1e-5)
    assert workers.queries_truncated == inline.queries_truncated == 1


def test_encode_processes_refuse_what_they_cannot_run():
    with pytest.raises(ValueError, match="choose --encode-processes or --decode-processes"):
        EmbedOptions(encode_processes=2, decode_processes=1)
    with pytest.raises(ValueError, match="--encode-processes are for pillow"):
        EmbedOptions(encode_processes=2, decoder="torchvision")
    with pytest.raises(ValueError, match="0 or more"):
        EmbedOptions(encode_processes=-1)
    with pytest.raises(ValueError, match="on cuda use --decode-processes"):
        resolve_encode_processes(2, torch.device("cuda"))
    assert resolve_encode_processes(2, torch.device("cpu")) == 2


def test_ray_actors_keep_encode_processes_and_size_decode_processes_to_their_cpus():
    four = ExecutionOptions(cpus_per_actor=4)
    assert four.actor_embed(EmbedOptions()).decode_processes == 3
    encoding = four.actor_embed(EmbedOptions(encode_processes=4))
    assert (encoding.encode_processes, encoding.decode_processes) == (4, None)
    assert four.actor_embed(EmbedOptions(decoder="torchvision")).decode_processes is None


def test_the_flag_reaches_the_options():
    from clipeval.jobs.flags import options_from
    from clipeval.runs.cli import build_parser

    args = build_parser().parse_args(["score", "--pairs", "p.csv", "--checkpoint", "hf:x", "--out", "o",
                                      "--encode-processes", "2"])
    assert options_from(args, EmbedOptions).encode_processes == 2
