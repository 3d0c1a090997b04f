"""A training process other than the main one: it trains its share and leaves the job to rank 0.

It reads nothing of the job itself and publishes nothing: rank 0 sends the run it prepared
(the dataset's rows, the downloaded base model's folder on the shared disk, the checkpoint to
resume), then every decision during training (trainer.consensus), then whether to take part
in gathering the weights for the export. Whatever ends rank 0's job ends this process with
exit code 0, so that the execution's outcome is rank 0's: torchrun exits non-zero when any
of its processes does.
"""

from __future__ import annotations

import dataclasses
import logging

from trainer.distributed import GATHER, STOP, Cohort, Ranks, full_state_dict

logger = logging.getLogger("trainer")


def follow_training_job(ranks: Ranks) -> None:
    """Train as rank 0 says; return when it no longer needs this process."""
    from trainer.consensus import MainRankStopped
    from trainer.recipes import recipe_for

    cohort = Cohort(ranks)
    run = cohort.hear()
    if run == STOP:
        logger.info("rank %d: the job ended before training", ranks.rank)
        return
    run = dataclasses.replace(run, ranks=ranks)
    try:
        outcome = recipe_for(run.config).train(run)
    except MainRankStopped as stopped:
        logger.info("rank %d: rank 0 stopped training (%s)", ranks.rank, stopped)
        return
    if cohort.hear() == GATHER:
        full_state_dict(outcome.trainer.model)  # rank 0 receives the whole weights
    logger.info("rank %d: done", ranks.rank)
