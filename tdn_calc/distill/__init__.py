"""Active-learning distillation of a fast TDN for a user's own chemical space
(``tdn distill SPEC.yaml --teacher NAME``; docs/campaigns.md).

* :mod:`.spec`: the campaign spec plus its ``distill:`` section (:func:`load_distill_spec`);
* :mod:`.state`: the resumable state file;
* :mod:`.label`: placements split, seed data, teacher checks of the student's minima;
* :mod:`.loop`: :func:`run_distill`, the rounds;
* :mod:`.register`: the result in the user's own manifest.
"""

from .loop import run_distill
from .spec import DistillSpec, load_distill_spec, parse_distill_spec
from .state import DistillState

__all__ = ["DistillSpec", "DistillState", "load_distill_spec", "parse_distill_spec",
           "run_distill"]
