"""Personalized federated learning: a model of each client's own beside the global one.

Each method is a client algorithm (:mod:`shoal.client.algorithm`) that the trainer's
``[personalization]`` table turns on; what is personal lives in the client's state, on
the device, and never travels:

- **Personal layers** (:mod:`shoal.personal.layers`): FedPer (Arivazhagan et al. 2019)
  keeps the head on the device and shares the body; FedRep (Collins et al. 2021) trains
  them in turns, the head with the body frozen, then the body with the head frozen;
  FedBN (Li et al. 2021) keeps batch-norm layers, statistics included. Their coordinates
  of every update are zero, so the server's average leaves the global copy untouched.
- **A second model** (:mod:`shoal.personal.ditto`, :mod:`shoal.personal.apfl`): Ditto
  (Li et al. 2021) trains a personal model pulled toward the global one; APFL (Deng et
  al. 2020) learns a mixture ``alpha v + (1 - alpha) w`` of the two.
- **Fine-tuning** (:mod:`shoal.personal.finetune`): the baseline; the global model,
  trained locally for a few epochs before it is scored.

Federated evaluation scores each client's own model (``accuracy``) and the global one
(``global_accuracy``) on its held-out data; the round loop reports the distribution over
clients (mean, 10th percentile, worst).
"""

from shoal.personal import apfl, ditto, finetune, layers

__all__ = ["apfl", "ditto", "finetune", "layers"]
