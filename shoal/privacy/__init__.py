"""Differential privacy: accounting, noise, and the DP transforms of the update path."""

from shoal.config.names import AccountantName
from shoal.privacy.accounting import PrivacyLedger, calibrate_noise, epsilon
from shoal.privacy.central import CentralDP
from shoal.privacy.clipping import clip, l2_norm
from shoal.privacy.distributed import DistributedDP
from shoal.privacy.dp_sgd import DPSGD
from shoal.privacy.local import LocalDP, local_epsilon
from shoal.privacy.noise import SecureNoise, SeededNoise
from shoal.rng import NoiseName
from shoal.sampling import Sampling, SamplingKind

__all__ = [
    "DPSGD",
    "AccountantName",
    "CentralDP",
    "DistributedDP",
    "LocalDP",
    "NoiseName",
    "PrivacyLedger",
    "Sampling",
    "SamplingKind",
    "SecureNoise",
    "SeededNoise",
    "calibrate_noise",
    "clip",
    "epsilon",
    "l2_norm",
    "local_epsilon",
]
