"""The embedding cache and the pipeline around it: hits, keys, crash safety, concurrency, equal scores."""

import io
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clipeval.data.images import decode_image, read_many_bytes
from clipeval.data.sources import read_pairs
from clipeval.embed import engine
from clipeval.embed.cache import EmbeddingCache
from clipeval.embed.engine import Embedder, model_key
from clipeval.embed.options import EmbedOptions
from clipeval.layout import RunFolderMismatch
from clipeval.models.registry import load_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def encoder(tiny_specs):
    return load_encoder(tiny_specs["open_clip"], device="cpu")


def _photos(folder, n=5, size=(48, 40)):
    rng = np.random.default_rng(1)
    refs = []
    for i in range(n):
        path = folder / f"photo{i}.png"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        refs.append(str(path))
    return refs


def test_a_warm_run_reads_identical_vectors_and_encodes_nothing(encoder, tmp_path):
    raws = read_many_bytes(_photos(tmp_path))
    texts = ["a red cube", "two dogs", "a red cube"]
    options = EmbedOptions(batch_size=2, embedding_cache_dir=tmp_path / "cache")
    with Embedder(encoder, options) as cold:
        images, captions = cold.images(raws), cold.texts(texts)
        assert cold.cache_counts() == {"image_hits": 0, "image_misses": 5, "text_hits": 0, "text_misses": 2}
    calls = []
    original = encoder.encode_images
    encoder.encode_images = lambda pixels: calls.append(len(pixels)) or original(pixels)
    try:
        with Embedder(encoder, options) as warm:
            again_images, again_captions = warm.images(raws), warm.texts(texts)
            assert warm.cache_counts() == {"image_hits": 5, "image_misses": 0, "text_hits": 2, "text_misses": 0}
    finally:
        del encoder.encode_images
    assert calls == []
    assert torch.equal(images.vectors, again_images.vectors) and torch.equal(captions.vectors, again_captions.vectors)
    assert captions.rows.tolist() == [0, 1, 0]


def test_the_model_key_changes_with_spec_weights_preprocessing_precision_and_decoding(tiny_specs):
    encoder = load_encoder(tiny_specs["open_clip"], device="cpu")
    key, description = model_key(encoder)
    assert model_key(encoder)[0] == key  # stable
    assert description["weights_sha256"] == encoder.weights_digest()
    assert model_key(encoder, "fast")[0] != key
    assert model_key(encoder, "torchvision")[0] not in (key, model_key(encoder, "fast")[0])
    other = load_encoder(tiny_specs["hf-clip"], device="cpu")
    assert model_key(other)[0] != key
    encoder.precision = "bf16"
    assert model_key(encoder)[0] != key
    encoder.precision = "fp32"
    with torch.no_grad():
        next(encoder.model.parameters()).view(-1)[0] += 1e-3
    assert model_key(encoder)[0] != key
    with torch.no_grad():
        next(encoder.model.parameters()).view(-1)[0] -= 1e-3
    resized = encoder.transform.transforms[0]
    resized.size = resized.size + 1 if isinstance(resized.size, int) else (resized.size[0] + 1,)
    assert model_key(encoder)[0] != key


_WRITER = textwrap.dedent("""
    import sys, numpy as np
    from clipeval.embed.cache import EmbeddingCache
    cache = EmbeddingCache(sys.argv[1])
    start = int(sys.argv[2])
    for batch in range(int(sys.argv[3])):
        vectors = {f"k{start + batch * 50 + i}": np.full(256, start + batch * 50 + i, np.float32) for i in range(50)}
        cache.put("model", "image", vectors)
        print(batch, flush=True)
""")


def _writer(folder, start, batches):
    return subprocess.Popen([sys.executable, "-c", _WRITER, str(folder), str(start), str(batches)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_killed_writer_leaves_only_whole_entries(tmp_path):
    process = _writer(tmp_path, 0, 100_000)
    assert process.stdout.readline().strip() == "0"
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    connection = sqlite3.connect(tmp_path / "embeddings.sqlite")
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = connection.execute("SELECT key, vector FROM vectors").fetchall()
    assert len(rows) % 50 == 0 and len(rows) >= 50  # whole transactions only
    for key, blob in rows:
        vector = np.frombuffer(blob, np.float32)
        assert vector.shape == (256,) and (vector == float(key[1:])).all()


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    first, second = _writer(tmp_path, 0, 40), _writer(tmp_path, 1000, 40)  # keys 1000..1999 overlap
    assert first.wait(timeout=120) == 0 and second.wait(timeout=120) == 0
    cache = EmbeddingCache(tmp_path)
    assert cache.size() == 3000
    keys = [f"k{i}" for i in range(3000)]
    found = cache.get("model", "image", keys)
    assert len(found) == 3000 and all((found[key] == float(key[1:])).all() for key in keys)


def _per_row_cosines(encoder, pairs, base_dir):
    cosines = []
    for ref, caption in zip(pairs["image"], pairs["caption"]):
        loaded = decode_image(read_many_bytes([ref], base_dir)[0].data)
        image = encoder.encode_images(encoder.preprocess(loaded.image)[None])
        cosines.append(float(image[0] @ encoder.encode_texts([caption])[0]))
    return np.array(cosines)


def test_deduplicated_cached_and_worker_encoding_score_like_each_row_alone(tiny_specs, challenge_csv, tmp_path,
                                                                          score_table):
    pairs = read_pairs(challenge_csv).iloc[:12]
    spec = tiny_specs["open_clip"]
    options = dict(batch_size=4, chunk_size=6, embedding_cache_dir=tmp_path / "c")
    cold = score_table(pairs, [spec], **options)
    warm = score_table(pairs, [spec], **options)
    workers = score_table(pairs, [spec], **options, embedding_cache=False, decode_processes=1)
    assert warm.stats["checkpoints"][spec]["cache"]["image_misses"] == 0
    assert cold.stats["checkpoints"][spec]["model_loaded"] and not warm.stats["checkpoints"][spec]["model_loaded"]
    assert cold.stats["checkpoints"][spec]["cache"]["image_misses"] == pairs["image"].nunique()
    each = _per_row_cosines(load_encoder(spec, device="cpu"), pairs, pairs.attrs["base_dir"])
    np.testing.assert_allclose(cold.results["similarity"], each, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(warm.results["similarity"], cold.results["similarity"])
    np.testing.assert_allclose(workers.results["similarity"], each, rtol=0, atol=1e-5)


def test_fast_decode_reads_large_jpegs_at_reduced_scale():
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (60, 80, 3)), np.ones((20, 20, 1))).astype(np.uint8)  # 1200x1600
    buffer = io.BytesIO()
    Image.fromarray(smooth).save(buffer, "JPEG", quality=95)
    exact, fast = decode_image(buffer.getvalue()), decode_image(buffer.getvalue(), min_side=224)
    assert exact.image.size == (1600, 1200) and fast.status == "ok"
    assert min(fast.image.size) >= 224 and fast.image.size[0] <= 400  # 1/4 scale: 400x300
    png = io.BytesIO()
    Image.fromarray(smooth).save(png, "PNG")
    assert decode_image(png.getvalue(), min_side=224).image.size == (1600, 1200)  # not a JPEG: exact


def _interrupt_after_first_chunk(monkeypatch):
    from clipeval.eval import scoring

    original, calls = scoring.ChunkScorer.score_chunk, []

    def flaky(self, chunk):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return original(self, chunk)

    monkeypatch.setattr(scoring.ChunkScorer, "score_chunk", flaky)


def test_resuming_says_so_and_a_different_run_is_refused(tiny_specs, challenge_csv, tmp_path, monkeypatch, capsys,
                                                         score_table):
    pairs = read_pairs(challenge_csv).iloc[:12]
    hf, run_dir = [tiny_specs["hf-clip"]], tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_after_first_chunk(patch)
        with pytest.raises(KeyboardInterrupt):
            score_table(pairs, hf, chunk_size=4, run_dir=run_dir, batch_size=4)
    with pytest.raises(RunFolderMismatch, match=r"different checkpoints.*--overwrite"):
        score_table(pairs, [tiny_specs["open_clip"]], chunk_size=4, run_dir=run_dir, batch_size=4)
    run = score_table(pairs, hf, chunk_size=4, run_dir=run_dir, batch_size=4)
    assert "pairs: 1 of 3 chunks reused" in capsys.readouterr().err and run.stats["chunks_resumed"] == 1
    changed = pd.concat([pairs.iloc[:11], pairs.iloc[:1]], ignore_index=True)
    changed.attrs = pairs.attrs
    with pytest.raises(RunFolderMismatch, match="different tables"):
        score_table(changed, hf, chunk_size=4, run_dir=run_dir, batch_size=4)
    with pytest.raises(RunFolderMismatch, match=r"chunk_size \(4 then, 5 now\)"):
        score_table(pairs, hf, chunk_size=5, run_dir=run_dir, batch_size=4)
    rerun = score_table(changed, hf, chunk_size=4, run_dir=run_dir, batch_size=4, overwrite=True)
    assert rerun.stats["chunks_resumed"] == 0 and len(rerun.results) == 12


def test_the_cache_is_per_process_safe_across_fork(tmp_path):
    """A connection opened before a fork is never reused in the child (SQLite forbids it)."""
    cache = EmbeddingCache(tmp_path)
    cache.put("m", "text", {"a": np.ones(3, np.float32)})
    inherited = cache._connection

    def child_writes():
        cache.put("m", "text", {"b": np.zeros(3, np.float32)})
        os._exit(0 if cache._connection is not inherited and cache._pid == os.getpid() else 1)

    child = multiprocessing.get_context("fork").Process(target=child_writes)
    child.start()
    child.join(60)
    assert child.exitcode == 0, "the child wrote through the connection it inherited"
    assert set(cache.get("m", "text", ["a", "b"])) == {"a", "b"}


def test_the_cache_works_from_another_thread_than_the_one_that_opened_it(tmp_path):
    """A Ray actor is built in one thread and called in another; SQLite refuses a connection across threads."""
    import threading

    cache = EmbeddingCache(tmp_path)
    cache.put("m", "text", {"a": np.ones(3, np.float32)})
    found = {}
    worker = threading.Thread(target=lambda: found.update(cache.get("m", "text", ["a"])))
    worker.start()
    worker.join(60)
    assert set(found) == {"a"} and (found["a"] == 1).all()
    assert set(cache.get("m", "text", ["a"])) == {"a"}


def test_a_changed_checkpoint_file_is_loaded_again_under_a_new_key(tmp_path, challenge_csv, score_table):
    import shutil

    from clipeval.models.tiny import build_open_clip

    folder, _ = build_open_clip(tmp_path / "ckpt")
    spec = f"open_clip:{folder}"
    pairs = read_pairs(challenge_csv).iloc[:4]
    options = {"embedding_cache_dir": tmp_path / "cache"}
    first = score_table(pairs, [spec], **options)
    assert not score_table(pairs, [spec], **options).stats["checkpoints"][spec]["model_loaded"]
    retrained = tmp_path / "other"
    build_open_clip(retrained, seed=1)
    shutil.copy(retrained / "open_clip" / "open_clip_model.safetensors", folder / "open_clip_model.safetensors")
    again = score_table(pairs, [spec], **options)
    entry = again.stats["checkpoints"][spec]
    assert entry["model_loaded"] and entry["cache"]["image_misses"] == pairs["image"].nunique()
    assert not np.allclose(again.results["similarity"], first.results["similarity"])


def test_a_warm_run_keeps_failures_without_loading_the_model(tiny_specs, tmp_path, score_table):
    refs = _photos(tmp_path, n=2)
    (tmp_path / "text.jpg").write_text("not an image")
    pairs = pd.DataFrame({"image": [*refs, str(tmp_path / "text.jpg")], "caption": ["a", "b", "c"]})
    options = {"embedding_cache_dir": tmp_path / "cache"}
    spec = tiny_specs["open_clip"]
    cold, warm = score_table(pairs, [spec], **options), score_table(pairs, [spec], **options)
    assert cold.results["status"].tolist() == warm.results["status"].tolist() == ["ok", "ok", "decode_error"]
    assert warm.results["error"].tolist() == cold.results["error"].tolist()
    assert not warm.stats["checkpoints"][spec]["model_loaded"]


def test_decode_processes_give_the_encoder_its_threads_back(tiny_specs, challenge_csv, score_table, monkeypatch):
    """With 2 cores (as the engine counts them, on any runner) a decode process takes one from the encoder
    for the run, and the encoder has both again after it."""
    monkeypatch.setattr(engine, "cpu_cores", lambda: 2)
    encoding_threads = []
    encode_pixels = Embedder._encode_pixels

    def counted(self, pixels, images):
        encoding_threads.append(torch.get_num_threads())
        return encode_pixels(self, pixels, images)

    monkeypatch.setattr(Embedder, "_encode_pixels", counted)
    pairs = read_pairs(challenge_csv).iloc[:4]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run = score_table(pairs, [tiny_specs["open_clip"], tiny_specs["hf-clip"]], decode_processes=1,
                          embedding_cache=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert encoding_threads and set(encoding_threads) == {1}
    assert run.stats["checkpoints"][tiny_specs["hf-clip"]]["decode_processes"] == 1
