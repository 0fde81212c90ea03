"""The scoring pipeline's options: what each shard is read as, and where shards are scored (no torch import)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from clipeval.data.options import (
    MAX_JSON_BYTES,
    MAX_MEMBER_BYTES,
    MAX_SAMPLE_CAPTIONS,
    MAX_SHARD_BYTES,
    MAX_SHARD_ROWS,
    MAX_TAR_HEADER_BYTES,
    MAX_XZ_MEMORY_BYTES,
    ShardLimits,
)
from clipeval.embed.options import EmbedOptions

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ShardOptions:
    """What a scoring run reads from each shard and how it cuts it into resumable chunks.

    Attributes:
        image_column: the image column (paths relative to the shard's folder, URLs or bytes).
        caption_column: the caption column.
        uid_column: the shards' unique-id column, when they have one (else ``<shard>/<row>``).
        chunk_size: rows scored and kept together inside a shard (the unit of resuming).
        max_member_mb: the largest tar member (or parquet image cell) read, in MiB; a larger
            one is refused from its header and its sample gets ``member_too_large``.
        max_shard_mb, max_shard_rows, max_captions, max_tar_header_kb, max_xz_memory_mb, max_json_kb: the caps of
            a whole shard
            (:class:`~clipeval.data.options.ShardLimits`, docs/security.md).
    """

    image_column: str = field(default="image", metadata={"help": "the image column: path, URL or bytes"})
    caption_column: str = field(default="caption", metadata={"help": "the caption column"})
    uid_column: str = field(default="uid", metadata={"help": "the shards' unique-id column, if they have one"})
    chunk_size: int = field(default=256, metadata={"help": "rows scored and kept together (the unit of resuming)"})
    max_member_mb: float = field(default=MAX_MEMBER_BYTES / 2**20, metadata={
        "help": "largest shard member (tar file or image cell) read, in MiB; larger ones get member_too_large"})
    max_shard_mb: float = field(default=MAX_SHARD_BYTES / 2**20, metadata={
        "help": "most MiB a shard may decompress to or hold in memory; a larger shard fails"})
    max_shard_rows: int = field(default=MAX_SHARD_ROWS, metadata={"help": "most rows a shard may give; more fails it"})
    max_captions: int = field(default=MAX_SAMPLE_CAPTIONS, metadata={
        "help": "most captions one shard sample may list; more gives it the status too_many_captions"})
    max_tar_header_kb: float = field(default=MAX_TAR_HEADER_BYTES / 2**10, metadata={
        "help": "largest tar pax header or long name read, in KiB; a larger one fails the shard"})
    max_xz_memory_mb: float = field(default=MAX_XZ_MEMORY_BYTES / 2**20, metadata={
        "help": "most MiB an xz or lzma tar may ask for to decompress; more fails the shard"})
    max_json_kb: float = field(default=MAX_JSON_BYTES / 2**10, metadata={
        "help": "largest json member of a tar sample read, in KiB; a larger one gives member_too_large"})

    @property
    def max_member_bytes(self) -> int:
        """:attr:`max_member_mb` in bytes."""
        return int(self.max_member_mb * 2**20)

    @property
    def limits(self) -> ShardLimits:
        """The caps of a whole shard, in the reader's units."""
        return ShardLimits(int(self.max_shard_mb * 2**20), self.max_shard_rows, self.max_captions,
                           int(self.max_tar_header_kb * 2**10), int(self.max_xz_memory_mb * 2**20),
                           int(self.max_json_kb * 2**10))


@dataclass(frozen=True)
class ExecutionOptions:
    """Where a scoring run's shards are scored.

    Attributes:
        executor: ``local`` (this process) or ``ray`` (an actor pool).
        ray_actors: Ray actors in the pool (each loads the checkpoints once).
        cpus_per_actor: CPUs Ray reserves per actor (its torch threads follow).
        gpus_per_actor: GPUs per actor (0 on a CPU machine; 1 per GPU on a GPU box; a fraction
            packs several actors on one GPU).
        address: a Ray cluster to join (``auto``, ``ray://host:10001``...); None starts a local Ray.
        shard_retries: times a shard is tried again after its attempt failed (its actor or node died,
            or the scorer raised) before it is marked failed, so a shard that kills every actor
            (a poison shard) costs this many actors, not the run.
        speculative_after: once no shard waits, a shard running this many times the median finished
            shard's time gets a second copy on a free actor; the first copy to commit wins (None: off).
    """

    executor: str = field(default="local", metadata={"choices": EXECUTORS,
                                                     "help": "local: this process; ray: an actor pool"})
    ray_actors: int = field(default=2, metadata={"help": "ray: actors in the pool (each loads the checkpoints once)",
                                                 "old_flags": ("--num-workers",)})
    cpus_per_actor: float = field(default=1.0, metadata={"help": "ray: CPUs reserved per actor",
                                                         "old_flags": ("--cpus-per-worker",)})
    gpus_per_actor: float = field(default=0.0, metadata={"help": "ray: GPUs per actor (1 on a GPU box)",
                                                         "old_flags": ("--gpus-per-worker",)})
    address: str | None = field(default=None, metadata={
        "help": "ray: the cluster to join (auto, ray://host:10001); default: start a local Ray"})
    shard_retries: int = field(default=2, metadata={
        "help": "ray: times a shard is retried after its actor or node died (or it raised) before it is marked "
                "failed"})
    speculative_after: float | None = field(default=None, metadata={
        "help": "ray: when no shard waits, start a second copy of a shard running F times the median shard's "
                "time; the first to finish wins (default: off)"})

    def actor_decode_processes(self, requested: int | None) -> int | None:
        """Decode processes per actor: as requested, else the actor's CPUs but one (the model's thread).

        An actor sees the whole node's cores, so the pipeline's own default (spare cores up to 8 on
        CUDA) would start that many in every actor of a node; the actor's reservation is its share.
        """
        return requested if requested is not None else max(0, int(self.cpus_per_actor) - 1)

    def actor_embed(self, embed: EmbedOptions) -> EmbedOptions:
        """The embedding options every Ray actor runs with: Pillow's decode processes sized to the actor
        (:meth:`actor_decode_processes`); encode processes (which decode their own batches) and the torchvision
        decoder (no decode processes) as given."""
        if embed.decoder != "pillow" or embed.encode_processes:
            return embed
        return replace(embed, decode_processes=self.actor_decode_processes(embed.decode_processes))


@dataclass
class ShardTask:
    """What every scorer is built from (sent to each Ray actor): ``ShardScorer(**vars(task))``."""

    checkpoints: list[str]
    run_dir: str
    shards: ShardOptions
    embed: EmbedOptions
