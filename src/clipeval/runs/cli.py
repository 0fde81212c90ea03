"""Command line: ``python -m clipeval <command> ...`` (also installed as ``clipeval``).

Every command calls the same package functions the notebooks use. Expected failures (a bad
checkpoint spec, a missing column, no network) print one ``error:`` line and exit with 2; Ctrl-C
prints one line saying whether a rerun resumes, and exits with 130. ``--help`` is taught by
:mod:`clipeval.runs.cli_help`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from clipeval.curate.options import EXACT_LIMIT
from clipeval.data.fetch import FetchOptions
from clipeval.data.options import RetrievalSource, SourceOptions
from clipeval.embed.options import EmbedOptions
from clipeval.eval.options import RetrievalOptions
from clipeval.finder.options import IndexOptions
from clipeval.jobs.flags import add_options, options_from
from clipeval.labels.registry import LabelOptions
from clipeval.layout import EvalsetLayout, RunLayout
from clipeval.models.hub_mirror import MIRROR_FILE
from clipeval.models.registry import quiet_model_loads
from clipeval.pipeline.options import ExecutionOptions, ShardOptions
from clipeval.runs.cli_help import HelpfulParser, add_epilogs, top_level_epilog
from clipeval.runs.errors import EXPECTED_ERRORS
from clipeval.train.options import ClassifierConfig, FinetuneConfig, FinetuneData, TrainConfig


def _embed(args: argparse.Namespace, **defaults) -> EmbedOptions:
    return options_from(args, EmbedOptions, **defaults)


def _score(args: argparse.Namespace) -> int:
    from clipeval.jobs import steps

    if bool(args.pairs) == bool(args.shards):
        raise ValueError("give --pairs (a pairs table: one shard) or --shards (shard files), not both")
    if args.pairs:
        execution = options_from(args, ExecutionOptions)
        if execution.executor != "local":
            raise ValueError("a pairs table is scored in this process; --executor ray scores shard files (--shards)")
        run = steps.score(args.out, args.pairs, args.checkpoint, options_from(args, SourceOptions), _embed(args),
                          options_from(args, ShardOptions).chunk_size, args.overwrite)
        ok = int((run.results["status"] == "ok").sum())
        print(f"scored {len(run.results)} pairs ({ok} ok) with {len(args.checkpoint)} checkpoint(s) -> {args.out}")
        summary = RunLayout(args.out).score_summary
        if not run.execution["shards_this_run"] and summary.exists():  # a finished run, run again: all is written
            print(f"nothing new to score: {summary} and the figures are this run's; "
                  "--overwrite scores it again from the start")
            return 0
        try:
            comparison = steps.compare(args.out, figures=True)
        except ValueError as error:  # a malformed `match` column: the scores are written, the summary is not
            print(f"warning: no score_summary.csv or figures: {error}", file=sys.stderr)
            return 0
        _print_score_outputs(comparison, args.checkpoint, Path(args.out))
        return 0
    # at scale every pair is new and its vectors would fill the disk: no embedding cache unless asked
    run = steps.score_shards(args.out, args.shards, args.checkpoint, options_from(args, ShardOptions),
                             _embed(args, embedding_cache=False), options_from(args, ExecutionOptions), args.overwrite)
    stats = run.execution
    rate = f", {stats['rows_per_s']:.1f} rows/s" if stats["rows_per_s"] else ""
    print(f"{stats['shards_done']} of {stats['shards']} shards done ({stats['shards_this_run']} scored now: "
          f"{stats['rows_this_run']} rows in {stats['wall_s']:.1f} s{rate}, executor {stats['executor']}) "
          f"-> {args.out}")
    for failed in run.failed.itertuples():
        print(f"shard {failed.shard}: {failed.state}: {failed.error}", file=sys.stderr)
    if len(run.failed):
        print(f"{len(run.failed)} shard(s) not done; run the same command again to retry them", file=sys.stderr)
        return 1
    return 0


def _print_score_outputs(comparison, checkpoints: list[str], out: Path) -> None:
    """What a one-table scoring run wrote: the tables, the per-checkpoint summary and the figures."""
    columns = [c for c in ("n_ok", "n_excluded", "all_mean", "all_std", "all_q05", "all_q95", "matched_mean",
                           "mismatched_mean", "auc", "gap")
               if c in comparison.summary.columns]
    print(comparison.summary[columns].round(3).to_string())
    print(f"  results.csv        every input row with the primary checkpoint's scores ({checkpoints[0]})\n"
          f"  scores.csv         one row per pair x checkpoint ({len(dict.fromkeys(checkpoints))} checkpoint(s))\n"
          "  score_summary.csv  the table above, with std and quantiles"
          + ("" if "auc" in comparison.summary.columns else " (no `match` column: every pair in one group)"))
    for path in comparison.figures:
        print(f"  figures/{path.name}")
    print(f"next: python -m clipeval report --run-dir {out}   (one page: tables and figures)")


def _score_shards(args: argparse.Namespace) -> int:
    print("warning: score-shards is deprecated and will be removed in the next release; use score --shards",
          file=sys.stderr)
    return _score(args)


def _retrieve(args: argparse.Namespace) -> None:
    from clipeval.jobs import steps

    source = options_from(args, RetrievalSource, name=Path(args.pairs or args.queries or "retrieval").stem)
    run = steps.retrieve(args.out, args.checkpoint, source, options_from(args, SourceOptions),
                         options_from(args, RetrievalOptions), _embed(args), worst=args.worst)
    columns = ["direction", "k", "hit_rate", "hit_rate_chance", "recall", "recall_chance", "mrr", "mrr_chance",
               "note"]
    for spec, rows in run.report.metrics.groupby("checkpoint", sort=False):
        rows = rows.assign(note=["trivial: k >= all " + str(n) if trivial else ""
                                 for n, trivial in zip(rows["n_candidates"], rows["trivial"])])
        print(f"checkpoint {spec}\n{rows[columns].round(4).to_string(index=False)}\n")
    for (spec, direction), rows in run.worst.groupby(["checkpoint", "direction"], sort=False):
        print(f"worst {len(rows)} {direction} queries of {spec} (rank of the relevant item among n_items):")
        for row in rows.itertuples():
            print(f"  rank {row.first_rank:.0f}/{row.n_items}  {_short(row.query_name)!r} -> relevant "
                  f"{_short(row.relevant_name)!r} ({row.relevant_score:.3f}); first {_short(row.top_names[0])!r} "
                  f"({row.top_scores[0]:.3f})")
        print()
    written = ", retrieval_worst.csv" if args.worst else ""
    print(f"{len(run.dataset.queries)} queries, {len(run.dataset.images)} images -> {args.out} "
          f"(metrics.csv, retrieval_ranks.csv{written}, retrieval_stats.json, retrieval_stats.log)")


def _short(text, width: int = 60) -> str:
    """``text`` cut to ``width`` characters, with an ellipsis when cut."""
    text = str(text)
    return text if len(text) <= width else text[:width - 1] + "…"


def _checkpoints(args: argparse.Namespace) -> None:
    from clipeval.models.catalogue import CATALOGUE, describe_checkpoint

    for spec in args.spec or list(CATALOGUE):
        info = describe_checkpoint(spec)
        cosine = (f"{info.matched_cosine[0]:.2f}-{info.matched_cosine[1]:.2f} ({info.matched_cosine_source})"
                  if info.matched_cosine else "not known")
        print(f"{spec}\n  family       {info.family}{'  [RANDOM INIT]' if info.random_init else ''}"
              f"{'' if info.in_catalogue else '  (not in the catalogue)'}\n"
              f"  description  {info.description or '-'}\n  source       {info.source or '-'}\n"
              f"  matched cos  {cosine}")
        for entry in info.published:  # published retrieval HitRate@1/5/10 (percent), with their source
            values = " / ".join(f"{value:.1f}" for value in entry.hit_rate)
            print(f"  published    {entry.benchmark} {entry.direction} R@1/5/10 {values}")
        if info.published:
            print(f"  published by {info.published[0].source}")
        if info.fine_tuned_from:
            print(f"  fine-tuned   from {info.fine_tuned_from}")


def _set(**options) -> dict:
    """The options that were given on the command line; unset ones keep the library's defaults."""
    return {name: value for name, value in options.items() if value is not None}


def _scenes(args: argparse.Namespace) -> None:
    from clipeval.data.scenes import generate_scenes

    print(generate_scenes(**_set(root=args.out, n_train=args.train, n_val=args.val, n_test=args.test,
                                 image_size=args.image_size, seed=args.seed)))


def _train(args: argparse.Namespace) -> None:
    from clipeval.train.dual import train_dual

    folder = train_dual(**_set(scenes_dir=args.scenes, output_dir=args.out), config=options_from(args, TrainConfig))
    print(f"saved dual encoder -> dual:{folder}")


def _finetune(args: argparse.Namespace) -> None:
    from clipeval.jobs.finetune_run import format_differences, load_finetune_data, run_finetune

    config = options_from(args, FinetuneConfig)
    pairs, held_out, forgetting = load_finetune_data(options_from(args, FinetuneData),
                                                     options_from(args, SourceOptions), config.seed)
    run = run_finetune(args.out, args.checkpoint, pairs, held_out, forgetting, config,
                       options_from(args, RetrievalOptions), resume=args.resume, overwrite=args.overwrite,
                       fetch=options_from(args, FetchOptions))
    history = run.result.history
    print(f"fine-tuned {args.checkpoint} ({config.mode}, {history['total_steps']} steps on "
          f"{history['n_train_images']} images, {history['trainable_parameters']:,} of "
          f"{history['total_parameters']:,} parameters trained) -> {run.result.spec}")
    print(f"after - before, paired bootstrap 95% CI:\n{format_differences(run.differences)}")
    print(f"-> {args.out} (gain_forgetting.csv, before_after_metrics.csv, finetune.json, train_pairs.csv)")


def _curate(args: argparse.Namespace) -> None:
    from clipeval.curate.engine import ORDER_NOTE
    from clipeval.jobs import steps

    result = steps.curate(args.scores, args.rule, args.out, args.exact_limit, args.write_filtered,
                          progress=not args.no_progress)
    print(result.summary[["step", "rule", "rows_in", "kept", "dropped"]].to_string(index=False))
    if len(args.rule) > 1:
        print("note: rules apply in the order given: each step judges only the rows the steps before it kept, so a "
              "top fraction or percentile in another place keeps other rows")
    for step, note in zip(result.summary["step"], result.summary["note"]):  # the order note said once, above
        note = note.removeprefix(ORDER_NOTE).removeprefix("; ") if note else ""
        if note:
            print(f"note: step {step}: {note}")
    print(f"kept {result.kept} of {result.rows} rows ({'exact' if result.exact else 'sketch'} cuts) -> {args.out}")


def _curate_shards(args: argparse.Namespace) -> None:
    print("warning: curate-shards is deprecated and will be removed in the next release; use curate",
          file=sys.stderr)
    _curate(args)


def _build_evalset(args: argparse.Namespace) -> None:
    from clipeval.jobs.evalset_build import build_evalset
    from clipeval.jobs.evalsets import retrieve_command

    vocabulary = [line.strip() for line in Path(args.vocabulary).read_text().splitlines() if line.strip()] \
        if args.vocabulary else []
    labelling = replace(options_from(args, LabelOptions), vocabulary=tuple(vocabulary))
    built = build_evalset(args.out, args.images, labelling, args.device, args.rebuild, progress=not args.no_progress)
    dataset = built.dataset
    print(f"{'reused' if built.reused else 'built'} {built.folder}: {len(dataset.queries)} queries, "
          f"{len(dataset.images)} images, {len(dataset.relevant)} relevant pairs, "
          f"{built.labels['image'].nunique()} images labelled")
    print(f"evaluate it: {retrieve_command(EvalsetLayout(built.folder))} --out DIR")


def _train_scene_classifier(args: argparse.Namespace) -> None:
    from clipeval.train.scene_classifier import train_scene_classifier

    folder = train_scene_classifier(**_set(scenes_dir=args.scenes, out_dir=args.out),
                                    config=options_from(args, ClassifierConfig),
                                    progress=not args.no_progress)
    print(f"saved scene classifier -> {folder}")


def _tiny_checkpoints(args: argparse.Namespace) -> None:
    from clipeval.models.tiny import build_tiny_checkpoints

    for name, spec in build_tiny_checkpoints(Path(args.out), args.seed).items():
        print(f"{name:<15} {spec}")


def _rehearsal_hub(args: argparse.Namespace) -> None:
    from clipeval.models.hub_mirror import mirror_env
    from clipeval.rehearsal.mirror import build_mirror

    out = build_mirror(args.out, only=args.only, progress=not args.no_progress)
    held = json.loads((out / "hf" / MIRROR_FILE).read_text())
    print(f"rehearsal hub mirror -> {out}: {len(held['models'])} models, {len(held['datasets'])} datasets, "
          f"{len(held['torch_files'])} torch weight file(s); random weights under real names")
    print("use it: " + " ".join(f"{name}={value}" for name, value in mirror_env(out).items()))


def _challenge_set(args: argparse.Namespace) -> None:
    from clipeval.data.challenge import build_challenge_set

    print(build_challenge_set(args.out))


def _run_notebooks(args: argparse.Namespace) -> None:
    from clipeval.runs.notebooks import run_notebooks

    for path in run_notebooks(args.profile, args.checkpoints.split() if args.checkpoints else None):
        print(f"executed {path}")


def _make_shards(args: argparse.Namespace) -> None:
    from clipeval.data.shards import write_shards
    from clipeval.data.sources import read_pairs

    pairs = read_pairs(args.pairs, args.image_column, args.caption_column)
    for path in write_shards(pairs, args.out, args.shards, args.format, args.image_column, args.caption_column):
        print(path)


def _report(args: argparse.Namespace) -> int:
    from clipeval.report.build import build_profile_report, build_run_report
    from clipeval.report.kinds import detect_kind

    # --run-dir of a command's folder (score, retrieve, curate): reported as that kind of run, not as a profile
    kind = detect_kind(args.run_dir) if args.run_dir is not None and Path(args.run_dir).is_dir() else None
    by_kind = args.run_dir is not None and Path(args.run_dir).is_dir() and (kind is None or not kind.is_profile)
    report = build_run_report(args.run_dir) if by_kind else build_profile_report(args.profile, args.run_dir)
    missing = [note for section in report.sections for note in section.missing]
    print(f"report -> {report.index}: {report.kind.describe()}; {len(report.figures)} figures, "
          f"{len(report.notebooks)} notebooks, {len(missing)} file(s) missing")
    for note in missing if by_kind else []:
        print(f"  {note}")
    for hint in report.kind.hints if by_kind else []:
        print(f"next: {hint}")
    for page in report.failed_notebooks:
        print(f"warning: {page.name} holds an error output: {'; '.join(page.errors)}", file=sys.stderr)
    return 1 if report.failed_notebooks else 0


class _NoLongerNeeded(argparse.Action):
    """A flag whose value the command now reads elsewhere: accepted for one release, with a warning."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is no longer needed (the scored run records its columns) and will be "
              "removed in the next release", file=sys.stderr)


def _index(args: argparse.Namespace) -> None:
    from clipeval.finder.index import build_index

    build = build_index(args.source, args.checkpoint, args.out, options_from(args, SourceOptions), _embed(args),
                        options_from(args, IndexOptions), args.overwrite)
    print(f"indexed {build.images} images from {build.rows} rows ({build.ok} images read) -> {args.out}")
    for spec, vectors in build.vectors.items():
        state = "built" if spec in build.built else "up to date, skipped" if spec in build.skipped else "kept"
        ann = build.ann[spec]
        print(f"  {spec}: {vectors} vectors, {build.failed[spec]} images without one (failed.csv), {state}, "
              + (f"approximate index {ann['factory']} (nprobe {ann.get('nprobe')})" if ann else "exact search"))


def _search(args: argparse.Namespace) -> None:
    from clipeval.finder.search import FinderIndex, format_results, run_query

    if sum(given is not None for given in (args.text, args.image, args.similar)) != 1:
        raise ValueError("give one query: a TEXT, --image PATH or --similar ID")
    if args.exact and args.approximate:
        raise ValueError("give --exact or --approximate, not both")
    index = FinderIndex.open(args.index, EmbedOptions(device=args.device))
    result = run_query(index, text=args.text, image=args.image, similar=args.similar, checkpoints=args.checkpoint,
                       k=args.k, exact=True if args.exact else False if args.approximate else None)
    print(json.dumps(result, indent=2) if args.json else format_results(result))


def _serve(args: argparse.Namespace) -> None:
    from clipeval.finder.app import serve

    serve(args.index, host=args.host, port=args.port, log_queries=args.log_queries)


def _add_run_options(command: argparse.ArgumentParser, *options) -> None:
    """The flags of a command that runs checkpoints: its own option dataclasses, the embedding pipeline's and
    ``--checkpoint``, ``--out``."""
    command.add_argument("--checkpoint", action="append", required=True,
                         help="checkpoint spec (repeat for several; the first is primary)")
    command.add_argument("--out", required=True, help="the run folder")
    for cls in options:
        add_options(command, cls)
    add_options(command, EmbedOptions)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from clipeval.paths import CHALLENGE_DIR, REHEARSAL_HUB_DIR, TINY_CHECKPOINTS_DIR

    parser = HelpfulParser(prog="clipeval", description=__doc__.splitlines()[0], epilog=top_level_epilog())
    commands = parser.add_subparsers(dest="command", required=True)

    score_help = ("score image-caption pairs with one or more checkpoints: a pairs table (--pairs, one shard) or "
                  "shard files (--shards), resumable, locally or on Ray")
    for name, handler, helps in (("score", _score, score_help),
                                 ("score-shards", _score_shards, "deprecated: score --shards")):
        score = commands.add_parser(name, help=helps)
        score.add_argument("--pairs", help="a pairs source: table (.csv/.tsv/.parquet/.jsonl), image folder, COCO "
                                           "captions_*.json, Hugging Face save_to_disk folder, or hf:owner/name")
        score.add_argument("--shards", action="append", help="shard files (tar/parquet/csv), a folder, a glob or a "
                                                             "brace pattern like 'shard-{00000..00099}.tar' (quote "
                                                             "it; repeat for several)")
        _add_run_options(score, SourceOptions, ShardOptions, ExecutionOptions)
        score.add_argument("--overwrite", action="store_true",
                           help="discard an earlier run in --out that had other inputs, checkpoints or options")
        score.set_defaults(handler=handler)

    retrieve = commands.add_parser("retrieve", help="text-to-image / image-to-text retrieval metrics")
    add_options(retrieve, RetrievalSource)
    _add_run_options(retrieve, SourceOptions, RetrievalOptions)
    retrieve.add_argument("--worst", type=int, default=0, metavar="N",
                          help="print the N worst queries of each checkpoint and direction, with their rank and "
                               "relevant item, and write them to retrieval_worst.csv")
    retrieve.set_defaults(handler=_retrieve)

    scenes = commands.add_parser("make-scenes", help="generate the captioned-scenes dataset (deterministic)")
    scenes.add_argument("--out", help="default data/generated/scenes")
    scenes.add_argument("--train", type=int, help="training scenes (default 5000)")
    scenes.add_argument("--val", type=int, help="validation scenes (default 400)")
    scenes.add_argument("--test", type=int, help="test scenes (default 600)")
    scenes.add_argument("--image-size", type=int, help="image side in pixels (default 64)")
    scenes.add_argument("--seed", type=int)
    scenes.set_defaults(handler=_scenes)

    train = commands.add_parser("train", help="train the dual encoder on the scenes; saves a dual: folder")
    train.add_argument("--scenes", help="folder written by `clipeval make-scenes` (default data/generated/scenes)")
    train.add_argument("--out", help="model folder (default outputs/offline/models/dual)")
    add_options(train, TrainConfig)
    train.set_defaults(handler=_train)

    tune = commands.add_parser("finetune", help="fine-tune an hf:, open_clip: or dual: checkpoint on pairs (full, "
                                                "locked image tower or adapters), then measure its gain on a "
                                                "held-out set and what it forgot on a second set, with CIs")
    tune.add_argument("--checkpoint", required=True, help="the checkpoint spec to fine-tune")
    tune.add_argument("--out", required=True, help="output folder: checkpoint/, state/, gain_forgetting.csv...")
    add_options(tune, FinetuneData)
    add_options(tune, FinetuneConfig)
    add_options(tune, SourceOptions)
    add_options(tune, RetrievalOptions)
    add_options(tune, FetchOptions)
    tune.add_argument("--resume", action="store_true", help="continue from the last state saved in --out")
    tune.add_argument("--overwrite", action="store_true",
                      help="discard an earlier run of other settings or data in --out (refused without it)")
    tune.set_defaults(handler=_finetune)

    for name, handler, helps in (("curate", _curate, "keep the pairs rules select by their scores (curation), "
                                                      "over a scored run's shards (one or many)"),
                                 ("curate-shards", _curate_shards, "deprecated: curate")):
        curation = commands.add_parser(name, help=helps)
        curation.add_argument("--scores", required=True, help="a scored run folder (score --pairs or --shards)")
        curation.add_argument("--rule", action="append", required=True,
                              help="applied in the order given, each to the rows the ones before kept: "
                                   "'cosine[SPEC]>=0.3', 'cosine[SPEC]>0.28', 'top:0.3[SPEC]' or 'top:30%%[SPEC]', "
                                   "'percentile:70[SPEC]', 'basic', 'preset:NAME[SPEC]' (laion400m, laion2b, "
                                   "datacomp-l14-30pct; 'preset:datacomp-basic'), or alternatives 'A | B'; without "
                                   "[SPEC], the run's primary checkpoint")
        curation.add_argument("--out", required=True, help="folder for summary.csv, decisions/, kept_uids.parquet "
                                                           "(and kept.csv, dropped.csv, curated.csv for a pairs table)")
        curation.add_argument("--exact-limit", type=int, default=EXACT_LIMIT,
                              help="most rows for exact top-fraction/percentile cuts; above it a histogram sketch "
                                   "with its error bound")
        curation.add_argument("--write-filtered", action="store_true",
                              help="also write each input shard filtered to its kept samples, same format")
        curation.add_argument("--no-progress", action="store_true")
        for old in ("--caption-column", "--image-column"):  # the run folder records its columns now
            curation.add_argument(old, help=argparse.SUPPRESS, action=_NoLongerNeeded)
        curation.set_defaults(handler=handler)

    make_shards = commands.add_parser("make-shards", help="split a pairs table into shard files (tar/parquet/csv), "
                                      "each image once with its captions, every row with source_row and source_image")
    make_shards.add_argument("--pairs", required=True, help="a pairs table whose image column holds local paths")
    make_shards.add_argument("--out", required=True)
    make_shards.add_argument("--shards", type=int, default=4, help="how many shards")
    make_shards.add_argument("--format", default="tar", choices=["tar", "parquet", "csv"])
    make_shards.add_argument("--image-column", default="image")
    make_shards.add_argument("--caption-column", default="caption")
    make_shards.set_defaults(handler=_make_shards)

    evalset = commands.add_parser("build-evalset", help="pseudo-label a folder of images into a retrieval eval set")
    evalset.add_argument("--images", required=True, help="folder of images (searched recursively)")
    add_options(evalset, LabelOptions)
    evalset.add_argument("--vocabulary", default=None, help="text file, one zero-shot class per line")
    evalset.add_argument("--out", required=True, help="eval-set folder (queries.csv, images.csv, relevance.csv...)")
    evalset.add_argument("--device", default="auto")
    evalset.add_argument("--rebuild", action="store_true", help="label again even if --out holds the same build")
    evalset.add_argument("--no-progress", action="store_true")
    evalset.set_defaults(handler=_build_evalset)

    classifier = commands.add_parser("train-scene-classifier",
                                     help="train the small timm classifier of the scenes (a labeller for notebook 07)")
    classifier.add_argument("--scenes", help="default data/generated/scenes")
    classifier.add_argument("--out", help="default outputs/offline/models/scene-classifier")
    add_options(classifier, ClassifierConfig)
    classifier.add_argument("--no-progress", action="store_true")
    classifier.set_defaults(handler=_train_scene_classifier)

    catalogue = commands.add_parser("checkpoints", help="print the checkpoint catalogue (or what is known of SPEC)")
    catalogue.add_argument("spec", nargs="*", help="checkpoint specs to describe (default: the whole catalogue)")
    catalogue.set_defaults(handler=_checkpoints)

    tiny = commands.add_parser("tiny-checkpoints", help="build tiny random checkpoints in the real formats")
    tiny.add_argument("--out", default=str(TINY_CHECKPOINTS_DIR))
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(handler=_tiny_checkpoints)

    rehearsal = commands.add_parser("rehearsal-hub", help="build the rehearsal hub mirror: every repository the "
                                                          "paper profile needs, random, under its real name")
    rehearsal.add_argument("--out", default=str(REHEARSAL_HUB_DIR), help="mirror folder (hf/ and torch/ inside)")
    rehearsal.add_argument("--only", action="append", default=None,
                           help="build only this repository or torch file (repeatable; default: all)")
    rehearsal.add_argument("--no-progress", action="store_true")
    rehearsal.set_defaults(handler=_rehearsal_hub)

    challenge = commands.add_parser("challenge-set", help="write the embedded challenge set to data/")
    challenge.add_argument("--out", default=str(CHALLENGE_DIR))
    challenge.set_defaults(handler=_challenge_set)

    notebooks = commands.add_parser("run-notebooks", help="execute a profile's notebooks with papermill")
    notebooks.add_argument("--profile", default="offline", help="name in params/ or a YAML path")
    notebooks.add_argument("--checkpoints", default="", help="space-separated specs overriding the profile's")
    notebooks.set_defaults(handler=_run_notebooks)

    report = commands.add_parser("report", help="write <run_dir>/report/index.html: the run's tables, figures and "
                                                "notebooks as one self-contained page")
    report.add_argument("--profile", default="offline", help="name in params/ or a YAML path")
    report.add_argument("--run-dir", default=None, help="run folder (default: the profile's run_dir)")
    report.set_defaults(handler=_report)

    index = commands.add_parser("index", help="embed a collection (image folder or any pairs source) with one or "
                                              "more checkpoints into an index folder for search and serve")
    index.add_argument("source", help="an image folder, a pairs table (.csv/.tsv/.parquet/.jsonl), COCO "
                                      "captions_*.json, Hugging Face save_to_disk folder, or hf:owner/name")
    _add_run_options(index, SourceOptions, IndexOptions)
    index.add_argument("--overwrite", action="store_true",
                       help="discard an earlier index in --out (another source, or to rebuild every checkpoint)")
    index.set_defaults(handler=_index)

    search = commands.add_parser("search", help="search an index folder by text, image or item; two --checkpoint "
                                                "side by side with the overlap of their top k")
    search.add_argument("index", help="an index folder written by `clipeval index`")
    search.add_argument("text", nargs="?", help="the text query")
    search.add_argument("--image", help="an image file: find the items most like it")
    search.add_argument("--similar", metavar="ID", help="an indexed item's id: find the items most like it")
    search.add_argument("--k", type=int, default=10, help="results per checkpoint (default 10)")
    search.add_argument("--checkpoint", action="append",
                        help="checkpoint spec of the index (repeat for side by side; default: its first)")
    search.add_argument("--exact", action="store_true", help="exact search whatever the index's size")
    search.add_argument("--approximate", action="store_true",
                        help="search the approximate (faiss) index (the index must hold one)")
    search.add_argument("--json", action="store_true", help="print the results as JSON")
    search.add_argument("--device", default="auto", help="where the query encoder runs (auto, cpu, cuda...)")
    search.set_defaults(handler=_search)

    serve = commands.add_parser("serve", help="the finder's local web page over an index folder (clipeval index): "
                                              "text and image queries, checkpoints side by side")
    serve.add_argument("index", help="an index folder written by `clipeval index`")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1, this machine only; another one warns)")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free one)")
    serve.add_argument("--log-queries", action="store_true",
                       help="append each query to the index folder's queries.jsonl (off by default)")
    serve.set_defaults(handler=_serve)

    add_epilogs(commands)
    return parser


# what a rerun after Ctrl-C keeps, by command (the others start again)
_KEPT_ON_INTERRUPT = {
    "score": "run the same command again to resume (finished chunks/shards are kept)",
    "score-shards": "run the same command again to resume (finished chunks/shards are kept)",
    "index": "run the same command again to resume (checkpoints already indexed are kept)",
    "retrieve": "run the same command again (the vectors embedded so far are in the embedding cache)",
}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code (2: an expected error, 130: interrupted)."""
    args = build_parser().parse_args(argv)
    from clipeval.embed.cache import announcing_location  # numpy: after the parser has answered --help

    try:
        # quiet means quiet: the model libraries' bars too (transformers' "Loading weights")
        quiet = getattr(args, "no_progress", False) or getattr(args, "progress", None) is False
        with quiet_model_loads() if quiet else contextlib.nullcontext(), announcing_location():
            status = args.handler(args)
        sys.stdout.flush()  # inside the try: a reader gone before the last write is met here, not at exit
    except BrokenPipeError:
        # the reader of the output went away (`clipeval search IX "a dog" --json | head`): stop quietly, as
        # Unix tools do, and keep Python's exit-time flush from reporting the closed pipe again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # SIGPIPE's status
    except EXPECTED_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = _KEPT_ON_INTERRUPT.get(args.command)
        print(f"\ninterrupted; {kept}" if kept else "\ninterrupted", file=sys.stderr)
        return 130
    return status or 0
