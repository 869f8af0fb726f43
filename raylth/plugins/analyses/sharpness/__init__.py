"""Analysis ``sharpness``: the curvature of the training loss, Hutchinson's
Hessian diagonal (raylth.engine.sharpness) and the top eigenvalue, of the
trial's dense network split by each level's mask (``network: dense``) or of
each trained network itself over the weights it has (``network: own``, as
the paper measures its tickets). specs.py, stages.py (the Hessian once per
network, the splits, the jobs), report.py (sharpness.md: the verdicts pair
seeds, Student's t)."""

from raylth.plugins.analyses.sharpness import report, stages  # noqa: F401  (they register)
from raylth.plugins.analyses.sharpness.specs import HessianSpec, SharpnessOptions, SharpnessSpec

__all__ = ["HessianSpec", "SharpnessSpec", "SharpnessOptions"]
