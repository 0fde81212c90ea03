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
    """What a scoring run reads from each shard and how it cuts it into resumable chunks (the fields' help).

    ``max_member_mb`` caps one member, the other ``max_*`` fields a whole shard
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
    """Where a scoring run's shards are scored (the fields' help; docs/sharded-runs.md for the Ray options)."""

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
