"""Analysis ``lmc``: instability to SGD noise, linear mode connectivity
(Frankle et al. 2020). Children of a network spawned at step k train to the
end under their own data order and/or augmentation; every pair is
interpolated on an alpha grid and the error barrier between them measured.
specs.py (its specs and the ``lmc:`` block), stages.py (children, the
interpolation, the jobs it adds to a trial), report.py (its report section)."""

from raylth.plugins.analyses.lmc import report, stages  # noqa: F401  (they register)
from raylth.plugins.analyses.lmc.specs import ChildSpec, LmcOptions, LmcSpec, SpawnsChildren
from raylth.plugins.analyses.lmc.stages import run_child

__all__ = ["ChildSpec", "LmcSpec", "LmcOptions", "SpawnsChildren", "run_child"]
