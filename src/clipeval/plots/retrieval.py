"""Figures for retrieval: metric dot plots with CIs, HitRate@k curves, query result grids, and the
measured-vs-published table of the standard benchmarks (flagged deviations in red)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from clipeval.data.benchmarks import BENCHMARKS
from clipeval.data.images import read_image
from clipeval.metrics.retrieval import hit_rate_curve
from clipeval.models.catalogue import label_checkpoint
from clipeval.plots.save import save_figure
from clipeval.plots.text import plain

DIRECTION_LABELS = {"text_to_image": "text → image", "image_to_text": "image → text"}


def plot_metrics_with_ci(metrics: pd.DataFrame, k: int = 5, path: str | Path | None = None) -> plt.Figure:
    """Dot plot of HitRate@k, Recall@k and MRR per checkpoint and direction, with 95% CI bars.

    Each dot has its chance level beside it (a grey bar: the metric's value under a random
    ranking, the ``<metric>_chance`` columns of ``metrics.csv``).
    """
    rows = metrics[metrics["k"] == k]
    names = [("hit_rate", f"HitRate@{k}"), ("recall", f"Recall@{k}"), ("mrr", "MRR")]
    figure, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 0.6 * rows["checkpoint"].nunique() + 2.2),
                                sharey=True, squeeze=False)
    labels = rows["checkpoint"].map(label_checkpoint)
    order = list(dict.fromkeys(labels))
    for ax, (column, title) in zip(axes[0], names):
        for offset, (direction, group) in zip((-0.12, 0.12), rows.groupby("direction", sort=False)):
            y = np.array([order.index(label) for label in group["checkpoint"].map(label_checkpoint)]) + offset
            error = np.vstack([group[column] - group[f"{column}_ci_low"], group[f"{column}_ci_high"] - group[column]])
            ax.errorbar(group[column], y, xerr=error, fmt="o", capsize=3, label=DIRECTION_LABELS[direction])
            ax.scatter(group[f"{column}_chance"], y, marker="|", s=160, linewidths=2, color="grey", zorder=3,
                       label="chance (random ranking)" if offset < 0 else None)
        ax.set(title=title, xlabel=f"{title} (95% bootstrap CI)", xlim=(-0.02, 1.02))
        ax.set_yticks(range(len(order)), [plain(textwrap.fill(label, 40)) for label in order], fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].legend(title="direction", fontsize=8)
    figure.suptitle(plain(f"Retrieval on {', '.join(map(str, rows['dataset'].unique()))}"))
    figure.tight_layout()
    return save_figure(figure, path)


def plot_hit_rate_curve(per_query: pd.DataFrame, max_k: int = 50, path: str | Path | None = None) -> plt.Figure:
    """HitRate@k as a function of k, one line per checkpoint, one panel per direction.

    A dashed grey line is HitRate@k under a random ranking (when ``per_query`` has ``n_items``).
    """
    curve = hit_rate_curve(per_query, max_k)
    curve = curve.assign(checkpoint=curve["checkpoint"].map(lambda spec: plain(label_checkpoint(spec))),
                         direction=curve["direction"].map(DIRECTION_LABELS))
    grid = sns.relplot(curve, x="k", y="hit_rate", hue="checkpoint", col="direction",
                       kind="line", height=3.5, aspect=1.3)
    for direction, ax in grid.axes_dict.items():
        # one dashed line per distinct chance curve (checkpoints share it unless their unreadable images differ)
        chance = curve[curve["direction"] == direction].drop_duplicates(["k", "chance"]).dropna(subset="chance")
        lines = [ax.plot(line["k"], line["chance"], linestyle="--", color="grey")[0]
                 for _, line in chance.groupby("checkpoint", sort=False)]
        if lines:
            ax.legend(lines[:1], ["chance (random ranking)"], loc="lower right", fontsize=8)
    grid.set_axis_labels("k (top-k cut-off)", "HitRate@k (any relevant item in top k)")
    grid.set(ylim=(0, 1.02), xscale="log")
    grid.set_titles("{col_name}")
    grid.figure.suptitle("HitRate@k as a function of k", y=1.03)
    return save_figure(grid.figure, path)


def plot_query_results(rows: pd.DataFrame, queries: pd.DataFrame, images: pd.DataFrame, relevant: np.ndarray,
                       base_dir: str | None, title: str, top: int = 5, captions: pd.Series | None = None,
                       path: str | Path | None = None) -> plt.Figure:
    """One row per query: its text, then its top images with scores; relevant ones framed green.

    Args:
        rows: per-query rows (``query``, ``top_items``, ``top_scores``, optionally ``first_rank``).
        relevant: (P, 2) relevant (query, image) pairs, or an empty array when unknown.
        captions: optional caption per image position, shown under each image.
    """
    relevant_set = {tuple(pair) for pair in np.asarray(relevant).reshape(-1, 2).tolist()}
    shown = {item for items in rows["top_items"] for item in items[:top]}
    wrapped = {item: textwrap.fill(str(captions.iloc[item]), 28) for item in shown} if captions is not None else {}
    # rows grow with the longest caption shown, so captions never overlap the next row
    caption_lines = max((text.count("\n") + 1 for text in wrapped.values()), default=0)
    figure, axes = plt.subplots(len(rows), top, figsize=(2.6 * top, (2.6 + 0.22 * caption_lines) * len(rows)),
                                squeeze=False)
    for axes_row, (_, row) in zip(axes, rows.iterrows()):
        rank = row.get("first_rank")
        heading = plain(textwrap.fill(f"“{queries['text'].iloc[row['query']]}”", 60))
        if rank is not None and not pd.isna(rank):
            heading += f"\nfirst relevant image at rank {int(rank)}"
        axes_row[0].set_title(heading, loc="left", fontsize=9, x=0)
        for ax, item, score in zip(axes_row, row["top_items"][:top], row["top_scores"][:top]):
            loaded = read_image(images["image"].iloc[item], base_dir)
            if loaded.image is not None:
                ax.imshow(loaded.image)
            hit = (row["query"], item) in relevant_set
            label = f"{score:.3f}" + (" ✓ relevant" if hit else "")
            if wrapped:
                label += "\n" + wrapped[item]
            ax.set_xlabel(plain(label), fontsize=7, color="darkgreen" if hit else "black")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set(edgecolor="green" if hit else "lightgrey", linewidth=3 if hit else 1)
    figure.suptitle(plain(title), fontsize=11)
    figure.tight_layout()
    return save_figure(figure, path)


FLAG_STYLE = "background-color: #f8d0d0; color: #a00000; font-weight: bold"


def published_side_by_side(comparison: pd.DataFrame) -> pd.DataFrame:
    """Measured vs published HitRate@k (from :func:`clipeval.metrics.published.compare_with_published`), one row
    per benchmark x checkpoint x direction: for each k ``R@k measured``, ``R@k 95% CI``, ``R@k published``
    (percent) and ``R@k flagged``, then ``status`` (the deviating ks, ``ok`` or ``no published number``)."""
    if comparison.empty:
        return pd.DataFrame()
    table = comparison.assign(
        benchmark=comparison["dataset"].map(lambda name: BENCHMARKS[name].title if name in BENCHMARKS else name),
        checkpoint=comparison["checkpoint"].map(label_checkpoint),
        direction=comparison["direction"].map(DIRECTION_LABELS),
        ci=[f"[{low:.1f}, {high:.1f}]" for low, high in zip(comparison["ci_low"], comparison["ci_high"])])
    index = ["benchmark", "checkpoint", "direction"]
    wide = table.pivot_table(index=index, columns="k", values=["measured", "ci", "published", "flagged"],
                             aggfunc="first", sort=False, dropna=False)
    columns = {}
    for k in sorted(table["k"].unique()):
        columns[f"R@{k} measured"] = wide[("measured", k)].astype(float)
        columns[f"R@{k} 95% CI"] = wide[("ci", k)]
        columns[f"R@{k} published"] = wide[("published", k)].astype(float)
        columns[f"R@{k} flagged"] = wide[("flagged", k)].astype(bool)
    side = pd.DataFrame(columns, index=wide.index)
    flagged = {k: side[f"R@{k} flagged"] for k in sorted(table["k"].unique())}
    has_number = table.groupby(index, sort=False)["published"].apply(lambda values: values.notna().any())
    side["status"] = [", ".join(f"DEVIATES at R@{k}" for k, flags in flagged.items() if flags.iloc[row])
                      or ("ok" if has_number.loc[key] else "no published number")
                      for row, key in enumerate(side.index)]
    return side


def style_published(comparison: pd.DataFrame):
    """:func:`published_side_by_side` as a pandas Styler: flagged deviations in red, one decimal.

    The ``R@k flagged`` columns are hidden; a flagged k colours its measured and published cells.
    """
    side = published_side_by_side(comparison)
    if side.empty:
        return _escaped(side.style)
    flag_columns = [column for column in side.columns if column.endswith(" flagged")]

    def colour(frame: pd.DataFrame) -> pd.DataFrame:
        styles = pd.DataFrame("", index=frame.index, columns=frame.columns)
        for flag in flag_columns:
            prefix = flag.removesuffix(" flagged")
            for column in (f"{prefix} measured", f"{prefix} published"):
                styles.loc[side[flag].to_numpy(), column] = FLAG_STYLE
        styles.loc[side["status"].str.startswith("DEVIATES").to_numpy(), "status"] = FLAG_STYLE
        return styles

    numbers = [column for column in side.columns if column.endswith((" measured", " published"))]
    return (_escaped(side.style).apply(colour, axis=None)
            .format("{:.1f}", subset=numbers, na_rep="—", escape="html").hide(flag_columns, axis="columns"))


def _escaped(styler):
    """A Styler that escapes every cell and every index and column label (checkpoint and dataset
    names are untrusted text; a Styler writes them into its HTML as they are unless told to escape)."""
    return styler.format(escape="html").format_index(escape="html", axis=0).format_index(escape="html", axis=1)
