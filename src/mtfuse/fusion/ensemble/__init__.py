"""Output-level fusion: ensembles and stacks of runs' dev predictions (no model is loaded to tune or score).

One-way imports, bottom to top:

* ``members``: a member's tasks and dev predictions, aligned across members into ``TaskArrays`` (the task
  type decides how its outputs are read, aligned, decided, scored and written back as records);
* ``combiners``: pure functions over members' outputs ``[M, N, C]`` (means, tuned weights, votes, Caruana);
* ``stack``: the stacking meta-learners (JSON, never pickle);
* ``methods``: the ensemble method registry ``METHODS`` (``fit`` + ``apply`` per method);
* ``protocol``: k-fold out-of-fold tuning and scoring;
* ``diversity``: how differently members err;
* ``output``: ``mtfuse ensemble`` / ``mtfuse stack``, the output directory (through ``mtfuse.rundir``);
* ``predictor``: ``EnsemblePredictor``, new inputs through the members and the saved parameters.
"""

from mtfuse.fusion.ensemble.members import is_ensemble_dir
from mtfuse.fusion.ensemble.methods import METHODS
from mtfuse.fusion.ensemble.output import ensemble_command, fuse
from mtfuse.fusion.ensemble.predictor import EnsemblePredictor

__all__ = ["METHODS", "EnsemblePredictor", "ensemble_command", "fuse", "is_ensemble_dir"]
