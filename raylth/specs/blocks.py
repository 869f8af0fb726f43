"""A sweep trial's analysis blocks (``lmc:``, ``sharpness:``, ...): the block
name -> its options Spec, filled by each analysis plugin when it registers
(raylth.stages.analyses.register_analysis), read by TrialSpec."""

from __future__ import annotations

from raylth.specs.base import Spec

TRIAL_BLOCKS: dict[str, type[Spec]] = {}


def trial_block(cls: type[Spec]) -> type[Spec]:
    """Register ``cls`` (a Spec with a ``block`` name) as an analysis block of sweep trials."""
    if TRIAL_BLOCKS.get(cls.label(), cls) is not cls:
        raise ValueError(f"analysis block {cls.label()!r} is registered twice")
    TRIAL_BLOCKS.pop(cls.label(), None)  # registered again: moved to the end (its place in the order)
    TRIAL_BLOCKS[cls.label()] = cls
    return cls
