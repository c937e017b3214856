"""Training and evaluation of TDN models (``tdn train``, ``tdn eval``; docs/training.md).

* :mod:`.config`: the YAML config -> model settings + :class:`TrainConfig`;
* :mod:`.stats`: reference energies, energy scale and neighbour counts of the training split;
* :mod:`.trainer`: :class:`Trainer` (AdamW, warm-up + cosine, EMA, exact resume, DDP);
* :mod:`.evaluate`: errors of a model on a data set.
"""

from .config import RunConfig, TrainConfig, config_from_dict, load_config
from .evaluate import evaluate, run_evaluation
from .trainer import Trainer

__all__ = ["RunConfig", "TrainConfig", "Trainer", "config_from_dict", "evaluate",
           "load_config", "run_evaluation"]
