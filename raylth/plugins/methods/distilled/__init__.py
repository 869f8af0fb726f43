"""Distilled pruning (McDermott & Cummings 2023; McDermott & Parhi 2025):
methods ``distilled_imp``, ``distilled_random`` and ``mask_then_imp``, their
stages ``ticket`` and ``maskimp``, and the report of the pruning comparison
(distilled_pruning.md).

distilled_imp: an IMP trunk whose every level trains on the distilled set
(the trial's ``inner`` TrainSpec; the ordinary ``imp`` stages with
``DataSpec(name='distilled', ...)``, rewinding to the trial's
``prune.rewind``, 0it = init), and each level's ticket (``TicketSpec``: the
level's mask on its rewind-point weights) trained on the full real data with
the trial's ``train``. Its results rows are the tickets. distilled_random:
the same, with random masks of the tickets' per-layer counts. mask_then_imp:
ordinary IMP on the real data that starts from the ticket of ``start_level``
(its mask and its start weights are both the start and the rewind point of
every later level) and continues to ``levels``.
"""

from raylth.plugins.methods.distilled import methods, report, stages  # noqa: F401  (they register)
from raylth.plugins.methods.distilled.specs import MaskImpSpec, TicketSpec

__all__ = ["TicketSpec", "MaskImpSpec"]
