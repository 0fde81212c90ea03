"""The embedding pipeline's options: one dataclass, the flags of every command that embeds (no torch import)."""

from __future__ import annotations

from dataclasses import dataclass, field

from clipeval.data.fetch import FetchOptions
from clipeval.data.options import MAX_PIXELS

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def device_option(default: str = "auto", what: str = ""):
    """The ``--device`` field of every options dataclass that runs a model (``what``: which model, for its help)."""
    return field(default=default, metadata={"help": f"{what}auto, cpu, cuda, cuda:1..."})


def precision_option():
    """The ``--precision`` field of every options dataclass that runs a model."""
    return field(default="auto", metadata={"choices": PRECISIONS, "help": "fp16/bf16 autocast on CUDA only"})


def progress_option():
    """The ``--progress/--no-progress`` field of every options dataclass whose job shows progress bars."""
    return field(default=True, metadata={"help": "show progress bars (the model libraries' too)"})


# bump when a change in the embedding path (clipeval.embed.engine) alters the vectors, so old cache entries stop
# matching; run fingerprints and cache keys record it
EMBEDDING_VERSION = 1
DECODERS = ("pillow", "torchvision")


@dataclass(frozen=True)
class EmbedOptions:
    """How checkpoints run, images are decoded, inputs batched and vectors cached (the one set of these options).

    The fields' help says what each does, docs/speed.md when each layout is fastest. ``embedding_cache_dir``
    ``None`` is :func:`clipeval.embed.cache.default_cache_dir`; ``max_pixels`` caps a decoded image.
    """

    batch_size: int = field(default=32, metadata={"help": "images / captions per forward pass"})
    device: str = device_option()
    precision: str = precision_option()
    decode_processes: int | None = field(default=None, metadata={
        "help": "processes decoding images while the model encodes (default: 0 on the CPU, spare cores up to 8 "
                "on CUDA; a Ray actor: its CPUs but one)", "old_flags": ("--decode-workers",)})
    encode_processes: int = field(default=0, metadata={
        "help": "CPU: processes that each decode and encode whole batches, one thread each (try one per core; "
                "docs/speed.md); 0: this process encodes"})
    fast_decode: bool = field(default=False, metadata={
        "help": "decode large JPEGs at reduced scale before the exact resize (docs/speed.md)"})
    decoder: str = field(default="pillow", metadata={
        "choices": DECODERS, "help": "pillow: Pillow in decode processes; torchvision: JPEGs decoded and resized on "
                                     "the model's device (nvJPEG on CUDA), other files by Pillow (docs/speed.md)"})
    embedding_cache: bool = field(default=True, metadata={
        "help": "read and write the embedding cache (default: on, in ~/.cache/clipeval/embeddings, or "
                "$XDG_CACHE_HOME/clipeval/embeddings, or the folder $CLIPEVAL_EMBEDDING_CACHE names; "
                "score --shards: off unless given)"})
    embedding_cache_dir: str | None = field(default=None, metadata={"cli": False})
    progress: bool = progress_option()
    fetch: FetchOptions = field(default_factory=FetchOptions)
    max_pixels: int = field(default=MAX_PIXELS, metadata={"cli": False})

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}; got {self.decoder!r}")
        if self.decoder == "torchvision" and self.fast_decode:
            raise ValueError("--fast-decode is Pillow's reduced-scale decoding; the torchvision decoder has none")
        if self.decoder == "torchvision" and (self.decode_processes or self.encode_processes):
            raise ValueError("the torchvision decoder runs in the model's process; --decode-processes and "
                             "--encode-processes are for pillow")
        if self.encode_processes < 0:
            raise ValueError(f"--encode-processes must be 0 or more, got {self.encode_processes}")
        if self.encode_processes and self.decode_processes:
            raise ValueError("choose --encode-processes or --decode-processes: encode processes decode their own "
                             "batches")
