"""Text in figures never overlaps: every figure the plotting functions make, rendered on fixture
data with the longest captions the generators produce, is checked with the renderer's extents.

A figure fails when two drawn texts overlap, when a text overlaps an image drawn in an axes
(``imshow`` images and image thumbnails), or when a text covers data: a filled bar, or a
plotted line (unless the text sits on an opaque box drawn above the line).
"""

import inspect
import itertools
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib import pyplot as plt
from matplotlib.image import AxesImage
from matplotlib.offsetbox import AnnotationBbox
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from clipeval.data.challenge import build_challenge_set
from clipeval.data.scenes import generate_scenes
from clipeval.data.sources import read_pairs
from clipeval.data.summary import caption_lengths, describe_images
from clipeval.metrics.compare import spearman_matrix
from clipeval.plots import benchmarks, curation, data, finder, labels, retrieval, scenes, scores, sharded

PLOT_MODULES = (data, scores, retrieval, scenes, labels, curation, sharded, finder, benchmarks)
matplotlib.rcParams["figure.max_open_warning"] = 60  # every plot function renders at once
TOLERANCE_PX = 1.0  # extents may touch (a label set on a bar's top) but not overlap by more than a pixel
CHECKPOINTS = ("dual:outputs/offline/models/dual", "baseline:bert-resnet50-random")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """Challenge images and scenes, with the longest captions either generator writes."""
    root = tmp_path_factory.mktemp("figures")
    challenge = read_pairs(build_challenge_set(root / "challenge"))
    scenes_dir = generate_scenes(root / "scenes", n_train=4, n_val=8, n_test=300, image_size=64, seed=0)
    scene_pairs = pd.read_csv(scenes_dir / "pairs_test.csv", keep_default_na=False)
    captions = pd.concat([challenge["caption"], scene_pairs["caption"]]).drop_duplicates()
    longest = captions[captions.str.len().sort_values(ascending=False, kind="stable").index].tolist()
    images = challenge.drop_duplicates("image").reset_index(drop=True)
    pairs = pd.DataFrame({"image": images["image"], "caption": longest[:len(images)],
                          "match": np.arange(len(images)) % 3 != 2})
    pairs.attrs = challenge.attrs
    return {"pairs": pairs, "longest": longest, "scenes_dir": scenes_dir, "scene_pairs": scene_pairs}


def score_table(n_pairs=600, seed=0):
    """A long score table shaped like the offline run's: a trained model and a random-init one."""
    rng = np.random.default_rng(seed)
    match = np.arange(n_pairs) % 3 != 0
    trained = np.where(match, rng.normal(0.9, 0.04, n_pairs), rng.uniform(-0.08, 0.96, n_pairs))
    random_init = rng.normal(0.042, 0.007, n_pairs)  # a narrow peak at the left of the shared bins
    rows = [pd.DataFrame({"row_id": np.arange(n_pairs), "checkpoint": spec, "cosine": cosine, "match": match,
                          "status": "ok"}) for spec, cosine in zip(CHECKPOINTS, (trained, random_init))]
    return pd.concat(rows, ignore_index=True)


def retrieval_tables(n_queries=40, n_items=30):
    rng = np.random.default_rng(0)
    metrics, per_query = [], []
    for spec, direction in itertools.product(CHECKPOINTS, ("text_to_image", "image_to_text")):
        for k in (1, 5, 10):
            row = {"checkpoint": spec, "dataset": "scenes-test", "direction": direction, "k": k}
            for column in ("hit_rate", "recall", "mrr"):
                value = rng.uniform(0.1, 0.9)
                row |= {column: value, f"{column}_ci_low": value - 0.05, f"{column}_ci_high": value + 0.05,
                        f"{column}_chance": value / 5}
            metrics.append(row)
        per_query.append(pd.DataFrame({"checkpoint": spec, "direction": direction, "query": range(n_queries),
                                       "n_items": n_items, "n_relevant": rng.integers(1, 4, n_queries),
                                       "first_rank": rng.integers(1, n_items, n_queries).astype(float)}))
    return pd.DataFrame(metrics), pd.concat(per_query, ignore_index=True)


def render_all(fixtures):
    """Every figure of every plotting function, as the notebooks make them (name -> figure)."""
    pairs, longest, scenes_dir = fixtures["pairs"], fixtures["longest"], fixtures["scenes_dir"]
    table = score_table()
    metrics, per_query = retrieval_tables()
    images = pairs[["image"]]
    queries = pd.DataFrame({"text": longest[:3]})
    rows = pd.DataFrame({"query": [0, 1, 2], "top_items": [[0, 1, 2, 3, 4]] * 3, "first_rank": [1.0, 4.0, 9.0],
                         "top_scores": [[0.9, 0.8, 0.7, 0.6, 0.5]] * 3})
    scene_files = [scenes_dir / name for name in fixtures["scene_pairs"]["image"].unique()[:8]]
    relevance = np.eye(8, dtype=bool)
    history = {"epochs": [{"epoch": e, "train_loss": 4 / e, "val_hit_rate@1": 0.1 * e, "val_hit_rate@5": 0.15 * e,
                           "val_hit_rate@10": 0.18 * e, "val_mrr": 0.12 * e} for e in range(1, 6)],
               "config": {"batch_size": 64}, "n_train_scenes": 5000, "train_seconds": 573.0, "device": "cpu"}
    subsets = pd.DataFrame({"hit_rate@1": [0.47, 0.46, 0.49], "hit_rate@5": [0.87, 0.86, 0.88],
                            "hit_rate@10": [0.96, 0.96, 0.96], "mrr": [0.64, 0.63, 0.65],
                            "n_queries": [2091, 1123, 968]}, index=pd.Index(["all", "seen", "unseen"], name="queries"))
    negatives = pd.DataFrame([{"negative_kind": kind, "subset": subset, "accuracy": accuracy}
                              for kind, accuracy in (("all", 0.82), ("colour", 0.80), ("count", 0.99),
                                                     ("relation", 0.47))
                              for subset in ("all", "seen", "unseen")])
    rng = np.random.default_rng(0)
    sources = ("zero-shot dual encoder", "scene classifier (timm)")
    thresholds = dict(zip(sources, (0.5, 0.85)))
    confidences = pd.DataFrame({"source": np.repeat(sources, 200), "confidence": rng.uniform(0, 1, 400)})
    sweep = pd.DataFrame([{"source": source, "threshold": t, "precision": t, "recall": 1 - t, "coverage": 1 - t / 2}
                          for source in sources for t in np.arange(0, 1, 0.05)])
    examples = pd.DataFrame([{"image": ref, "source": source, "labels": "; ".join(longest[i:i + 3]),
                              "truth": "; ".join(longest[i + 1:i + 4])}
                             for i, ref in enumerate(pairs["image"][:8]) for source in sources])
    label_metrics = pd.DataFrame([{"source": source, "checkpoint": spec, "direction": direction, "k": 5, "set": kind,
                                   "hit_rate": rng.uniform()}
                                  for source in sources for spec in CHECKPOINTS
                                  for direction in ("text_to_image", "image_to_text") for kind in ("pseudo", "true")])
    specs = list(CHECKPOINTS)
    curve = pd.DataFrame([{"checkpoint": spec, "threshold": t, "kept_fraction": 1 - t} for spec in specs
                          for t in np.linspace(0, 1, 21)])
    scored = pd.DataFrame({"image": pairs["image"], "caption": longest[:len(pairs)],
                           "score": rng.uniform(0, 1, len(pairs))})
    groups = {f"decile {d}": scored.iloc[d:d + 4] for d in range(1, 4)}
    pr = pd.DataFrame([{"checkpoint": spec, "fraction": f, "precision": 1 - f / 2, "recall": f} for spec in specs
                       for f in np.linspace(0.05, 1, 20)])
    marks = pd.DataFrame([{"checkpoint": spec, "name": name, "precision": 0.8, "recall": share}
                          for spec in specs for name, share in (("laion400m", 0.2), ("laion2b", 0.3))])
    dropped = pd.DataFrame({"reason": ["status:missing", "basic filter: caption > 2 words and > 5 characters, "
                                       "image short side >= 200 px, aspect ratio <= 3"] * 3})
    shards = pd.DataFrame([{"executor": executor, "name": f"shard-{i:05d}", "rows_per_s": rng.uniform(50, 300)}
                           for executor in ("local", "ray") for i in range(8)])
    hits = {query: [SimpleNamespace(id=path.stem, score=0.9 - 0.1 * rank, caption=longest[rank],
                                    thumbnail=str(path.relative_to(scenes_dir)))
                    for rank, path in enumerate(scene_files[:5])]
            for query in (longest[0], "a red circle left of a blue square")}
    accuracies = pd.DataFrame([{"checkpoint": spec, "negative_kind": kind, "accuracy": value,
                                "ci_low": max(0.0, value - 0.2), "ci_high": min(1.0, value + 0.2), "chance": 0.5}
                               for spec, shift in zip(specs, (0.0, 0.3))
                               for kind, value in (("all", 0.45 + shift), ("colour", 0.2 + shift),
                                                   ("count", 0.5), ("relation", 0.48 + shift / 2))])
    return {
        "plot_accuracy_by_category": benchmarks.plot_accuracy_by_category(
            accuracies, "negative_kind", "accuracy", "Hard negatives: does the true caption beat the changed one?",
            "accuracy (true caption scores higher)"),
        "plot_hits": finder.plot_hits(hits, scenes_dir, "dual: text queries"),
        "plot_shard_throughput": sharded.plot_shard_throughput(shards),
        "plot_kept_fraction": curation.plot_kept_fraction(curve),
        "plot_curation_examples": curation.plot_curation_examples(groups, "score", pairs.attrs["base_dir"]),
        "plot_drop_reasons": curation.plot_drop_reasons(dropped),
        "plot_kept_overlap": curation.plot_kept_overlap(pd.DataFrame(np.eye(2), index=specs, columns=specs)),
        "plot_precision_recall": curation.plot_precision_recall(pr, marks),
        "plot_confidence_histograms": labels.plot_confidence_histograms(confidences, thresholds),
        "plot_threshold_tradeoff": labels.plot_threshold_tradeoff(sweep, thresholds),
        "plot_labelled_examples": labels.plot_labelled_examples(examples, pairs.attrs["base_dir"]),
        "plot_pseudo_vs_true": labels.plot_pseudo_vs_true(label_metrics),
        "plot_image_sizes": data.plot_image_sizes(describe_images(pairs)),
        "plot_caption_lengths": data.plot_caption_lengths(caption_lengths(pairs)),
        "plot_sample_grid": data.plot_sample_grid(pairs, n=12),
        "plot_score_histograms": scores.plot_score_histograms(table, "cosine"),
        "plot_spearman_heatmap": scores.plot_spearman_heatmap(spearman_matrix(table), 600),
        "plot_metrics_with_ci": retrieval.plot_metrics_with_ci(metrics, k=5),
        "plot_hit_rate_curve": retrieval.plot_hit_rate_curve(per_query, max_k=30),
        "plot_query_results": retrieval.plot_query_results(rows, queries, images, np.array([[0, 0], [1, 3]]),
                                                           pairs.attrs["base_dir"], "best queries",
                                                           captions=pd.Series(longest[:len(images)])),
        "plot_scene_samples": scenes.plot_scene_samples(scenes_dir, "test", n=8),
        "plot_training_history": scenes.plot_training_history(history),
        "plot_similarity_heatmap": scenes.plot_similarity_heatmap(np.eye(8) * 0.5, longest[:8], scene_files,
                                                                  relevance),
        "plot_retrieval_subsets": scenes.plot_retrieval_subsets(subsets),
        "plot_match_histogram": scenes.plot_match_histogram(np.eye(8) * 0.5 + 0.1, relevance),
        "plot_hard_negative_accuracy": scenes.plot_hard_negative_accuracy(negatives),
    }


def drawn_texts(figure) -> list[Text]:
    """The texts the renderer actually draws (visible, non-empty, in view), recorded while drawing."""
    drawn = []
    original = Text.draw

    def record(self, renderer):
        original(self, renderer)
        if self.get_visible() and self.get_text().strip():
            drawn.append(self)

    Text.draw = record
    try:
        figure.canvas.draw()
    finally:
        Text.draw = original
    return drawn


def extent(text: Text, renderer):
    """A text's extent, including its box when it has one."""
    box = text.get_bbox_patch()
    return box.get_window_extent(renderer) if box is not None else text.get_window_extent(renderer)


def hides(text: Text, line_zorder: float) -> bool:
    """A text on a fully opaque box drawn above a line hides it, so the line does not cross the letters."""
    box = text.get_bbox_patch()
    return (box is not None and box.get_fill() and box.get_facecolor()[3] == 1.0
            and text.get_zorder() > line_zorder)


def overlap(a, b) -> bool:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width > TOLERANCE_PX and height > TOLERANCE_PX


def densify(points: np.ndarray, step: float = 2.0) -> np.ndarray:
    """Points along a polyline at most ``step`` pixels apart (its segments, not only its vertices)."""
    points = points[np.isfinite(points).all(axis=1)]
    pieces = [np.linspace(a, b, int(np.ceil(np.hypot(*(b - a)) / step)) + 1) for a, b in itertools.pairwise(points)]
    return np.concatenate(pieces) if pieces else points


def line_points(figure) -> list[tuple[str, float, np.ndarray]]:
    """Name, zorder and points (display coordinates, inside the axes) along every data line."""
    found = []
    for ax in figure.axes:
        for line in ax.lines if ax.get_visible() else []:
            points = densify(line.get_transform().transform(np.asarray(line.get_xydata(), float).reshape(-1, 2)))
            box = ax.bbox
            inside = (points[:, 0] >= box.x0) & (points[:, 0] <= box.x1) & (points[:, 1] >= box.y0) & (
                points[:, 1] <= box.y1)
            found.append((f"line {line.get_label()[:20]!r}", line.get_zorder(), points[inside]))
    return found


def crosses(box, points: np.ndarray) -> bool:
    return bool(((points[:, 0] > box.x0 + TOLERANCE_PX) & (points[:, 0] < box.x1 - TOLERANCE_PX)
                 & (points[:, 1] > box.y0 + TOLERANCE_PX) & (points[:, 1] < box.y1 - TOLERANCE_PX)).any())


def obstacles(figure, renderer) -> list[tuple[str, object]]:
    """Images (imshow and thumbnails) and filled bars of every visible axes, clipped to the axes."""
    found = []
    for ax in figure.axes:
        if not ax.get_visible():
            continue
        for artist in [*ax.images, *ax.artists, *ax.patches]:
            if isinstance(artist, AxesImage | AnnotationBbox):
                found.append((f"image in axes '{ax.get_title()[:30]}'", artist.get_window_extent(renderer)))
            elif isinstance(artist, Rectangle) and artist.get_fill() and artist.get_visible():
                bbox = artist.get_window_extent(renderer)
                if bbox.width > 0 and bbox.height > 0:
                    clipped = bbox.intersection(bbox, ax.bbox) if ax.bbox.overlaps(bbox) else None
                    if clipped is not None:
                        found.append(("bar", clipped))
    return found


def overlaps(figure) -> list[str]:
    """Every pair of overlapping drawn texts, and every text over an image or a bar."""
    texts = drawn_texts(figure)
    renderer = figure.canvas.get_renderer()
    boxes = [(text, extent(text, renderer)) for text in texts]
    found = [f"text {a.get_text()[:40]!r} overlaps text {b.get_text()[:40]!r}"
             for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if overlap(box_a, box_b)]
    found += [f"text {text.get_text()[:40]!r} overlaps {what}"
              for text, box in boxes for what, other in obstacles(figure, renderer) if overlap(box, other)]
    found += [f"text {text.get_text()[:40]!r} covers {what}"
              for text, box in boxes for what, zorder, points in line_points(figure)
              if not hides(text, zorder) and crosses(box, points)]
    return found


def test_every_plot_function_is_rendered(fixtures):
    names = {name for module in PLOT_MODULES for name, function in inspect.getmembers(module, inspect.isfunction)
             if name.startswith("plot_") and function.__module__ == module.__name__}
    assert names == set(render_all(fixtures))


def test_no_text_overlaps_text_images_or_bars(fixtures):
    problems = {name: found for name, figure in render_all(fixtures).items() if (found := overlaps(figure))}
    assert not problems, "\n".join(f"{name}: {found[:5]} ({len(found)} in all)" for name, found in problems.items())


def test_the_check_sees_an_overlap():
    figure, ax = plt.subplots()
    ax.imshow(np.zeros((4, 4)))
    ax.text(1.5, 1.5, "on the image")
    ax.text(1.5, 1.6, "on the text")
    ax.plot([0, 3], [0.5, 0.5])
    ax.text(0.2, 0.5, "on the line", va="center")
    found = overlaps(figure)
    assert any("overlaps text" in line for line in found) and any("overlaps image" in line for line in found)
    assert any("'on the line' covers line" in line for line in found)


# what each figure must show, from the fixture inputs: its panels (axes, a colour bar included) and texts it
# must carry (titles, axis labels, legends, tick labels); "RANDOM INIT" wherever the random-init checkpoint is drawn
SHOWN = {
    "plot_accuracy_by_category": (1, ["Hard negatives", "chance", "colour", "relation", "RANDOM INIT"]),
    "plot_hits": (10, ["dual: text queries", "a red circle left of a blue square", "0.900 · test-00000"]),
    "plot_shard_throughput": (1, ["rows per second", "local", "ray"]),
    "plot_kept_fraction": (1, ["cosine threshold (keep >=)", "share of pairs kept"]),
    "plot_curation_examples": (12, ["decile 1", "decile 3"]),
    "plot_drop_reasons": (1, ["rows dropped", "status:missing"]),
    "plot_kept_overlap": (2, ["Jaccard"]),
    "plot_precision_recall": (1, ["recall of matched pairs", "laion400m", "laion2b"]),
    "plot_confidence_histograms": (2, ["zero-shot dual encoder", "scene classifier (timm)", "label confidence"]),
    "plot_threshold_tradeoff": (2, ["zero-shot dual encoder", "scene classifier (timm)", "confidence threshold"]),
    "plot_labelled_examples": (8, ["truth:"]),
    "plot_pseudo_vs_true": (2, ["text → image", "image → text", "hit rate@5"]),
    "plot_image_sizes": (2, ["Image sizes (pixels)", "Image modes", "width (px)"]),
    "plot_caption_lengths": (2, ["Caption length (words)", "Caption length (characters)"]),
    "plot_sample_grid": (12, ["Sample pairs", "[match]", "[mismatch]"]),
    "plot_score_histograms": (2, ["Matched vs mismatched", "dual:outputs/offline/models/dual", "RANDOM INIT"]),
    "plot_spearman_heatmap": (2, ["Spearman", "RANDOM INIT"]),
    "plot_metrics_with_ci": (3, ["Retrieval on scenes-test", "HitRate@5", "Recall@5", "MRR", "RANDOM INIT"]),
    "plot_hit_rate_curve": (2, ["HitRate@k as a function of k", "text → image", "image → text"]),
    "plot_query_results": (15, ["best queries", "✓ relevant"]),
    "plot_scene_samples": (8, ["Captioned scenes (test split)", "✓", "✗ (colour)"]),
    "plot_training_history": (2, ["Training loss", "Validation text→image retrieval", "epoch"]),
    "plot_similarity_heatmap": (2, ["Caption x image cosine similarity", "cosine similarity"]),
    "plot_retrieval_subsets": (1, ["seen", "unseen"]),
    "plot_match_histogram": (1, ["every caption against every"]),
    "plot_hard_negative_accuracy": (1, ["Hard negatives", "chance (0.5)", "what the negative changes"]),
}


def shown_texts(figure) -> str:
    """Every text the figure draws, joined, its line breaks as spaces: titles, labels, tick labels, legends."""
    figure.canvas.draw()
    return "\n".join(" ".join(text.get_text().split()) for text in drawn_texts(figure))


def test_every_figure_shows_its_panels_and_says_what_it_shows(fixtures):
    figures = render_all(fixtures)
    assert set(SHOWN) == set(figures)  # a new plot function gets its expectations
    problems = []
    for name, figure in figures.items():
        panels, texts = SHOWN[name]
        visible = [ax for ax in figure.axes if ax.get_visible()]
        if len(visible) != panels:
            problems.append(f"{name}: {len(visible)} panels, expected {panels}")
        drawn = shown_texts(figure)
        problems += [f"{name}: no {text!r}" for text in texts if text not in drawn]
    assert not problems, "\n".join(problems)
