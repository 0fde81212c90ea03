"""Every job, once: the command line, the report's sections and folder kinds, and the notebooks' steps are read
from here."""

from __future__ import annotations

from clipeval.jobs.curation import CURATE
from clipeval.jobs.evalsets import BUILD_EVALSET
from clipeval.jobs.finder import INDEX
from clipeval.jobs.finetune import FINETUNE, FINETUNE_STUDY
from clipeval.jobs.hard_negatives import HARD_NEGATIVE_JOB
from clipeval.jobs.job import Command, Job
from clipeval.jobs.retrieval import RETRIEVE, RETRIEVE_BENCHMARKS, SEARCH
from clipeval.jobs.scoring import COMPARE, SCORE, SCORE_SHARDS
from clipeval.jobs.studies import CURATION_STUDY, EXPLORE, LABEL_STUDY, SCENES_BENCHMARK, SHARDED_STUDY
from clipeval.jobs.utilities import UTILITIES
from clipeval.jobs.zero_shot import CLASSIFY

JOBS: dict[str, Job] = {job.name: job for job in (
    EXPLORE, SCORE, SCORE_SHARDS, COMPARE, RETRIEVE, RETRIEVE_BENCHMARKS, SEARCH, SCENES_BENCHMARK, LABEL_STUDY,
    CURATION_STUDY, SHARDED_STUDY, FINETUNE_STUDY, CURATE, BUILD_EVALSET, FINETUNE, INDEX, CLASSIFY, HARD_NEGATIVE_JOB,
    UTILITIES)}


def job_commands() -> list[Command]:
    """Every registered job's commands, in the registry's order."""
    return [command for job in JOBS.values() for command in job.commands]


def register_job(job: Job) -> None:
    """Add a job declared outside the package (its command, report section and folder kind follow).

    Raises:
        ValueError: another job has its name or one of its command names.
    """
    if job.name in JOBS and JOBS[job.name] is not job:
        raise ValueError(f"a job named {job.name!r} is already registered")
    taken = {command.name for other in JOBS.values() if other is not job for command in other.commands}
    if clash := taken & {command.name for command in job.commands}:
        raise ValueError(f"the command {sorted(clash)[0]!r} is another job's")
    JOBS[job.name] = job
