"""Command line: ``python -m clipeval <command> ...`` (also installed as ``clipeval``).

Every command calls the same package functions the notebooks use. Expected failures (a bad
checkpoint spec, a missing column, no network) print one ``error:`` line and exit with 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from clipeval.data.sources import SOURCE_READERS
from clipeval.labels.registry import LABELLERS
from clipeval.models.hub_mirror import MIRROR_FILE
from clipeval.models.registry import quiet_progress_bars
from clipeval.runs.errors import EXPECTED_ERRORS


def _score(args: argparse.Namespace) -> None:
    from clipeval.runs import steps

    run = steps.score(args.out, args.pairs, args.checkpoint, args.image_column, args.caption_column,
                      batch_size=args.batch_size, chunk_size=args.chunk_size, device=args.device,
                      precision=args.precision, workers=args.workers, source_kind=args.source_kind,
                      delimiter=args.delimiter, images_dir=args.images_dir, split=args.split,
                      cache_dir=args.cache_dir, fetch_timeout=args.fetch_timeout, fetch_retries=args.fetch_retries,
                      max_download_mb=args.max_download_mb, progress=not args.no_progress,
                      decode_workers=args.decode_workers, fast_decode=args.fast_decode,
                      embedding_cache=not args.no_embedding_cache, overwrite=args.overwrite)
    ok = int((run.results["status"] == "ok").sum())
    print(f"scored {len(run.results)} pairs ({ok} ok) with {len(args.checkpoint)} checkpoint(s) -> {args.out}")


def _retrieve(args: argparse.Namespace) -> None:
    from clipeval.runs import steps

    name = args.dataset or Path(args.pairs or args.queries or "retrieval").stem
    run = steps.retrieve(args.out, args.checkpoint, name,
                         args.pairs, args.queries, args.images, args.relevance, args.image_column,
                         args.caption_column, args.images_dir, ks=args.k or (1, 5, 10), n_resamples=args.bootstrap,
                         seed=args.seed, batch_size=args.batch_size, device=args.device, precision=args.precision,
                         progress=not args.no_progress, distinct_captions=args.distinct_captions,
                         workers=args.workers, cache_dir=args.cache_dir, fetch_timeout=args.fetch_timeout,
                         fetch_retries=args.fetch_retries, max_download_mb=args.max_download_mb,
                         allow_missing_images=args.allow_missing_images, decode_workers=args.decode_workers,
                         fast_decode=args.fast_decode, embedding_cache=not args.no_embedding_cache)
    columns = ["direction", "k", "hit_rate", "hit_rate_chance", "recall", "recall_chance", "mrr", "mrr_chance"]
    for spec, rows in run.report.metrics.groupby("checkpoint", sort=False):
        print(f"checkpoint {spec}\n{rows[columns].round(4).to_string(index=False)}\n")
    print(f"{len(run.dataset.queries)} queries, {len(run.dataset.images)} images -> {args.out} "
          "(metrics.csv, retrieval_ranks.csv, retrieval_stats.json, retrieval_stats.log)")


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


def _set(**options) -> dict:
    """The options that were given on the command line; unset ones keep the library's defaults."""
    return {name: value for name, value in options.items() if value is not None}


def _scenes(args: argparse.Namespace) -> None:
    from clipeval.data.scenes import generate_scenes

    print(generate_scenes(**_set(root=args.out, n_train=args.train, n_val=args.val, n_test=args.test,
                                 image_size=args.image_size, seed=args.seed)))


def _train(args: argparse.Namespace) -> None:
    from clipeval.models.dual import DualEncoderConfig
    from clipeval.train.dual import TrainConfig, train_dual

    model = DualEncoderConfig(**_set(image_size=args.image_size), pretrained=args.pretrained)
    config = TrainConfig(**_set(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                device=args.device, hard_negatives=args.hard_negatives),
                         progress=not args.no_progress, model=model)
    folder = train_dual(**_set(scenes_dir=args.scenes, output_dir=args.out), config=config)
    print(f"saved dual encoder -> dual:{folder}")


def _curate(args: argparse.Namespace) -> None:
    from clipeval.runs import steps

    result = steps.curate(args.scores, args.rule, args.out, args.caption_column, args.image_column)
    print(result.steps[["step", "rule", "rows_in", "kept", "dropped"]].to_string(index=False))
    for note in result.steps["note"]:
        if note:
            print(f"note: {note}")
    print(f"kept {len(result.kept)} of {result.steps['rows_in'].iloc[0]} rows -> {args.out}")


def _build_evalset(args: argparse.Namespace) -> None:
    from clipeval.runs.evalsets import build_evalset

    vocabulary = [line.strip() for line in Path(args.vocabulary).read_text().splitlines() if line.strip()] \
        if args.vocabulary else []
    built = build_evalset(args.out, args.images, args.labeller, args.model, args.threshold, args.top_k, vocabulary,
                          args.device, args.batch_size, args.rebuild, progress=not args.no_progress)
    dataset = built.dataset
    print(f"{'reused' if built.reused else 'built'} {built.folder}: {len(dataset.queries)} queries, "
          f"{len(dataset.images)} images, {len(dataset.relevant)} relevant pairs, "
          f"{built.labels['image'].nunique()} images labelled")
    print(f"evaluate it: python -m clipeval retrieve --queries {built.folder}/queries.csv "
          f"--images {built.folder}/images.csv --relevance {built.folder}/relevance.csv --checkpoint SPEC --out DIR")


def _train_scene_classifier(args: argparse.Namespace) -> None:
    from clipeval.train.scene_classifier import ClassifierConfig, train_scene_classifier

    config = ClassifierConfig(**_set(epochs=args.epochs, seed=args.seed, device=args.device))
    folder = train_scene_classifier(**_set(scenes_dir=args.scenes, out_dir=args.out), config=config,
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


def _score_shards(args: argparse.Namespace) -> int:
    from clipeval.runs.sharded import score_shards

    run = score_shards(args.out, args.shards, args.checkpoint, executor=args.executor, num_workers=args.num_workers,
                       cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
                       address=args.address, image_column=args.image_column, caption_column=args.caption_column,
                       uid_column=args.uid_column, batch_size=args.batch_size, chunk_size=args.chunk_size,
                       device=args.device, precision=args.precision, workers=args.workers, cache_dir=args.cache_dir,
                       fetch_timeout=args.fetch_timeout, fetch_retries=args.fetch_retries,
                       max_download_mb=args.max_download_mb, decode_workers=args.decode_workers,
                       fast_decode=args.fast_decode, embedding_cache=args.embedding_cache, overwrite=args.overwrite,
                       progress=not args.no_progress)
    stats = run.stats
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


def _curate_shards(args: argparse.Namespace) -> None:
    from clipeval.runs.sharded import curate_shards

    result = curate_shards(args.scores, args.rule, args.out, exact_limit=args.exact_limit,
                           write_filtered=args.write_filtered, progress=not args.no_progress)
    print(result.summary.to_string(index=False))
    print(f"kept {result.kept} of {result.rows} rows ({'exact' if result.exact else 'sketch'} cuts) -> {args.out}")


def _make_shards(args: argparse.Namespace) -> None:
    from clipeval.data.shards import write_shards
    from clipeval.data.sources import read_pairs

    pairs = read_pairs(args.pairs, args.image_column, args.caption_column)
    for path in write_shards(pairs, args.out, args.shards, args.format, args.image_column, args.caption_column):
        print(path)


def _report(args: argparse.Namespace) -> int:
    from clipeval.runs.report import build_profile_report

    report = build_profile_report(args.profile, args.run_dir)
    missing = sum(len(section.missing) for section in report.sections)
    print(f"report -> {report.index} ({len(report.figures)} figures, {len(report.notebooks)} notebooks, "
          f"{missing} file(s) missing)")
    for page in report.failed_notebooks:
        print(f"warning: {page.name} holds an error output: {'; '.join(page.errors)}", file=sys.stderr)
    return 1 if report.failed_notebooks else 0


def _measured(args: argparse.Namespace) -> int:
    from clipeval.runs.measured import README_PATH, read_blocks, render_blocks, stale_blocks, update_readme

    if args.check:
        stale = stale_blocks(README_PATH.read_text(), render_blocks())
        print(f"stale README measured blocks: {', '.join(stale)}; run make measured" if stale
              else f"the README's {len(read_blocks(README_PATH.read_text()))} measured blocks are up to date")
        return 1 if stale else 0
    changed = update_readme(from_run=args.from_run)
    print(f"rewrote README measured blocks: {', '.join(changed)}" if changed else "README measured blocks unchanged")
    return 0


def _add_decode_options(command: argparse.ArgumentParser) -> None:
    """How images are decoded: ``score``, ``retrieve`` and ``score-shards`` share it."""
    command.add_argument("--decode-workers", type=int, default=None,
                         help="processes decoding images while the model encodes (default: 0 on the CPU, "
                              "spare cores up to 8 on CUDA; a Ray worker of score-shards: its CPUs but one)")
    command.add_argument("--fast-decode", action="store_true",
                         help="decode large JPEGs at reduced scale before the exact resize (see README, Speed)")


def _add_pipeline_options(command: argparse.ArgumentParser) -> None:
    """The embedding pipeline's options ``score`` and ``retrieve`` share: decoding and the embedding cache."""
    _add_decode_options(command)
    command.add_argument("--no-embedding-cache", action="store_true",
                         help="neither read nor write the embedding cache ($CLIPEVAL_EMBEDDING_CACHE, "
                              "default outputs/cache/embeddings)")


def _add_fetch_options(command: argparse.ArgumentParser) -> None:
    """The image reading and URL fetching options ``score`` and ``retrieve`` share."""
    command.add_argument("--workers", type=int, default=8, help="concurrent image reads/downloads")
    command.add_argument("--cache-dir", default=None, help="image cache root (default data/cache/images)")
    command.add_argument("--fetch-timeout", type=float, default=10.0, help="seconds per URL request")
    command.add_argument("--fetch-retries", type=int, default=3)
    command.add_argument("--max-download-mb", type=float, default=50.0)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from clipeval.data.challenge import CHALLENGE_DIR
    from clipeval.paths import REHEARSAL_HUB_DIR, TINY_CHECKPOINTS_DIR

    parser = argparse.ArgumentParser(prog="clipeval", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    score = commands.add_parser("score", help="score image-caption pairs with one or more checkpoints")
    score.add_argument("--pairs", required=True,
                       help="pairs table (.csv/.tsv/.parquet/.jsonl), image folder, COCO captions_*.json, "
                            "Hugging Face save_to_disk folder, or hf:owner/name")
    score.add_argument("--source-kind", default="auto", choices=["auto", *SOURCE_READERS])
    score.add_argument("--delimiter", default=None, help="field separator for delimited text: ',', ';', tab, '|'")
    score.add_argument("--images-dir", default=None, help="folder of a COCO file's images")
    score.add_argument("--split", default=None, help="split of a Hugging Face dataset")
    score.add_argument("--checkpoint", action="append", required=True,
                       help="checkpoint spec (repeat for several; the first is primary)")
    score.add_argument("--out", required=True, help="run folder to write results.csv, stats... into")
    score.add_argument("--image-column", default="image")
    score.add_argument("--caption-column", default="caption")
    score.add_argument("--batch-size", type=int, default=32)
    score.add_argument("--chunk-size", type=int, default=256, help="rows per resumable chunk")
    score.add_argument("--device", default="auto")
    score.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    _add_fetch_options(score)
    score.add_argument("--overwrite", action="store_true",
                       help="discard an earlier run in --out that had other inputs, checkpoints or options")
    score.add_argument("--no-progress", action="store_true")
    _add_pipeline_options(score)
    score.set_defaults(handler=_score)

    retrieve = commands.add_parser("retrieve", help="text-to-image / image-to-text retrieval metrics")
    retrieve.add_argument("--pairs", help="any pairs source (table, COCO captions_*.json, HF dataset...): "
                                          "every row (with match=True if that column exists) is a query "
                                          "relevant to its own image; distinct images are the collection")
    retrieve.add_argument("--distinct-captions", action="store_true",
                          help="with --pairs: one query per distinct caption string, relevant to every "
                               "image it is matched with (default: one query per row, as in COCO's protocol)")
    retrieve.add_argument("--queries", help="table with query_id and the caption column")
    retrieve.add_argument("--images", help="table with image_id and the image column")
    retrieve.add_argument("--relevance", help="table with query_id, image_id: one row per relevant pair")
    retrieve.add_argument("--images-dir", default=None, help="folder of a COCO file's images")
    retrieve.add_argument("--dataset", default=None, help="dataset name in metrics.csv")
    retrieve.add_argument("--checkpoint", action="append", required=True, help="checkpoint spec (repeatable)")
    retrieve.add_argument("--out", required=True, help="folder for metrics.csv and retrieval_ranks.csv")
    retrieve.add_argument("--image-column", default="image")
    retrieve.add_argument("--caption-column", default="caption")
    retrieve.add_argument("--k", type=int, nargs="+", action="extend", default=None,
                          help="cut-offs for HitRate@k and Recall@k: --k 1 5 10 (or --k 1 --k 5; default 1 5 10)")
    retrieve.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs")
    retrieve.add_argument("--seed", type=int, default=0)
    retrieve.add_argument("--batch-size", type=int, default=32)
    retrieve.add_argument("--device", default="auto")
    retrieve.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    retrieve.add_argument("--allow-missing-images", action="store_true",
                          help="go on when fewer than half the local image files are found (default: stop)")
    _add_fetch_options(retrieve)
    retrieve.add_argument("--no-progress", action="store_true")
    _add_pipeline_options(retrieve)
    retrieve.set_defaults(handler=_retrieve)

    scenes = commands.add_parser("make-scenes", help="generate the captioned-scenes dataset (deterministic)")
    scenes.add_argument("--out", help="default data/generated/scenes")
    scenes.add_argument("--train", type=int, help="training scenes (default 5000)")
    scenes.add_argument("--val", type=int, help="validation scenes (default 400)")
    scenes.add_argument("--test", type=int, help="test scenes (default 600)")
    scenes.add_argument("--image-size", type=int, help="image side in pixels (default 64)")
    scenes.add_argument("--seed", type=int)
    scenes.set_defaults(handler=_scenes)

    train = commands.add_parser("train", help="train the dual encoder on the scenes; saves a dual: folder "
                                              "(unset options keep clipeval.train.dual.TrainConfig's defaults)")
    train.add_argument("--scenes", help="folder written by `clipeval make-scenes` (default data/generated/scenes)")
    train.add_argument("--out", help="model folder (default outputs/offline/models/dual)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--image-size", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--device")
    train.add_argument("--hard-negatives", action="store_true", default=None,
                       help="NegCLIP: add each image's hard-negative captions to the loss (better composition, "
                            "worse retrieval here; see README)")
    train.add_argument("--pretrained", action="store_true",
                       help="start from distilbert-base-uncased and ImageNet EfficientNet-B0 (needs network)")
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(handler=_train)

    curation = commands.add_parser("curate", help="keep the pairs a rule selects by their scores (curation)")
    curation.add_argument("--scores", required=True, help="a scored run folder (results.csv and scores.csv)")
    curation.add_argument("--rule", action="append", required=True,
                          help="applied in order: 'cosine[SPEC]>=0.3', 'cosine[SPEC]>0.28', 'top:0.3[SPEC]', "
                               "'percentile:70[SPEC]', 'basic', 'preset:NAME[SPEC]' (laion400m, laion2b, "
                               "datacomp-l14-30pct; 'preset:datacomp-basic'), or alternatives 'A | B'")
    curation.add_argument("--out", required=True, help="folder for kept.csv, dropped.csv, curated.csv, summary.csv")
    curation.add_argument("--caption-column", default="caption")
    curation.add_argument("--image-column", default="image")
    curation.set_defaults(handler=_curate)

    sharded = commands.add_parser("score-shards", help="score shards (tar/parquet/csv) into one parquet per shard; "
                                                       "resumable; --executor local or ray")
    sharded.add_argument("--shards", action="append", required=True,
                         help="shard files, a folder, a glob or a brace pattern like 'shard-{00000..00099}.tar' "
                              "(quote it; repeat for several)")
    sharded.add_argument("--checkpoint", action="append", required=True, help="checkpoint spec (repeat for several)")
    sharded.add_argument("--out", required=True, help="run folder: shards/<name>.parquet and .done.json per shard")
    sharded.add_argument("--executor", default="local", choices=["local", "ray"])
    sharded.add_argument("--num-workers", type=int, default=2, help="ray: actors in the pool (each loads the models)")
    sharded.add_argument("--cpus-per-worker", type=float, default=1.0, help="ray: CPUs reserved per actor")
    sharded.add_argument("--gpus-per-worker", type=float, default=0.0, help="ray: GPUs per actor (1 on a GPU box)")
    sharded.add_argument("--address", default=None, help="ray: cluster to join (auto, ray://host:10001); "
                                                        "default: start a local Ray")
    sharded.add_argument("--image-column", default="image")
    sharded.add_argument("--caption-column", default="caption")
    sharded.add_argument("--uid-column", default="uid", help="the shards' unique-id column, if they have one")
    sharded.add_argument("--batch-size", type=int, default=32)
    sharded.add_argument("--chunk-size", type=int, default=256, help="rows read and scored together in a shard")
    sharded.add_argument("--device", default="auto")
    sharded.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    _add_fetch_options(sharded)
    _add_decode_options(sharded)
    sharded.add_argument("--embedding-cache", action="store_true",
                         help="read and write the embedding cache (off for shards: at scale it would fill the disk)")
    sharded.add_argument("--overwrite", action="store_true",
                         help="discard shards an earlier run in --out scored with other checkpoints or options")
    sharded.add_argument("--no-progress", action="store_true")
    sharded.set_defaults(handler=_score_shards)

    shard_curation = commands.add_parser("curate-shards", help="apply curation rules over a sharded run's shards")
    shard_curation.add_argument("--scores", required=True, help="a score-shards run folder")
    shard_curation.add_argument("--rule", action="append", required=True, help="as for curate (applied in order)")
    shard_curation.add_argument("--out", required=True,
                                help="folder for kept_uids.parquet, decisions/, summary.csv (and filtered/)")
    shard_curation.add_argument("--exact-limit", type=int, default=50_000_000,
                                help="most rows for exact top-fraction/percentile cuts; above it a histogram "
                                     "sketch with its error bound")
    shard_curation.add_argument("--write-filtered", action="store_true",
                                help="also write each input shard filtered to its kept samples, same format")
    shard_curation.add_argument("--no-progress", action="store_true")
    shard_curation.set_defaults(handler=_curate_shards)

    make_shards = commands.add_parser("make-shards", help="split a pairs table into shard files (tar/parquet/csv)")
    make_shards.add_argument("--pairs", required=True, help="a pairs table whose image column holds local paths")
    make_shards.add_argument("--out", required=True)
    make_shards.add_argument("--shards", type=int, default=4, help="how many shards")
    make_shards.add_argument("--format", default="tar", choices=["tar", "parquet", "csv"])
    make_shards.add_argument("--image-column", default="image")
    make_shards.add_argument("--caption-column", default="caption")
    make_shards.set_defaults(handler=_make_shards)

    evalset = commands.add_parser("build-evalset", help="pseudo-label a folder of images into a retrieval eval set")
    evalset.add_argument("--images", required=True, help="folder of images (searched recursively)")
    evalset.add_argument("--labeller", default="classifier", choices=list(LABELLERS),
                         help="classifier (timm), zero-shot (a checkpoint over --vocabulary), captioner "
                              "(transformers image-to-text) or api (OpenAI-compatible; CLIPEVAL_LABEL_API_* variables)")
    evalset.add_argument("--model", default=None, help="timm name or folder, checkpoint spec, captioning model or "
                                                      "API model (default: the labeller's)")
    evalset.add_argument("--threshold", type=float, default=None,
                         help="smallest confidence kept (classifier default 0.85, zero-shot 0.5, captioner 0)")
    evalset.add_argument("--top-k", type=int, default=1, help="most probable classes an image may get")
    evalset.add_argument("--vocabulary", default=None, help="text file, one zero-shot class per line")
    evalset.add_argument("--out", required=True, help="eval-set folder (queries.csv, images.csv, relevance.csv...)")
    evalset.add_argument("--device", default="auto")
    evalset.add_argument("--batch-size", type=int, default=16)
    evalset.add_argument("--rebuild", action="store_true", help="label again even if --out holds the same build")
    evalset.add_argument("--no-progress", action="store_true")
    evalset.set_defaults(handler=_build_evalset)

    classifier = commands.add_parser("train-scene-classifier",
                                     help="train the small timm classifier of the scenes (a labeller for notebook 07)")
    classifier.add_argument("--scenes", help="default data/generated/scenes")
    classifier.add_argument("--out", help="default outputs/offline/models/scene-classifier")
    classifier.add_argument("--epochs", type=int)
    classifier.add_argument("--seed", type=int)
    classifier.add_argument("--device")
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

    measured = commands.add_parser("measured", help="rewrite the README's measured blocks from bench/results/ and "
                                                    "bench/results/offline/ (see README, The run report)")
    measured.add_argument("--from-run", default=None,
                          help="first copy this run folder's measured files into bench/results/offline/ "
                               "(make measured: outputs/offline)")
    measured.add_argument("--check", action="store_true", help="only say which blocks differ (exit 1 if any)")
    measured.set_defaults(handler=_measured)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        # quiet means quiet: the model libraries' bars too (transformers' "Loading weights")
        with quiet_progress_bars() if getattr(args, "no_progress", False) else contextlib.nullcontext():
            status = args.handler(args)
    except EXPECTED_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return status or 0
