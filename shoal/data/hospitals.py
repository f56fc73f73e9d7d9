"""Breast-cancer diagnosis across hospitals: scikit-learn's Wisconsin diagnostic set
(569 fine-needle aspirates, 30 features of the cell nuclei; Street, Wolberg & Mangasarian
1993) split into sites as unequal as real ones.

A referral centre sees many patients and many cancers; a screening centre sees mostly
healthy women; a rural clinic sees few of either. Each site is a device (cross-silo FL:
few, large, always-on participants). Label 1 is malignant, the positive class (the set's
own coding is the reverse). Per site, from :data:`SITES`:

============  ========  ==========  =====
site          patients  malignant   gain
============  ========  ==========  =====
university    36%       55%         1.00
regional      24%       35%         1.03
community     16%       25%         0.97
screening     14%       10%         1.05
rural         10%       30%         0.95
============  ========  ==========  =====

``patients`` is the site's share of the pool left after the server's test set,
``malignant`` the share of its patients with cancer (the university site takes whatever
of each class is left), and ``gain`` a calibration difference between the sites' imaging
and measurement (every feature is scaled by it), a mild feature shift on top of the
label and quantity skew. The server's test set is a stratified 20% of the patients, drawn
first and measured at gain 1.

Features are standardized with the training pool's mean and standard deviation: the
consortium agrees on one normalization before training. (Deployed, each site would send
its per-feature sums and sums of squares through secure aggregation once; here they are
computed directly, which leaks nothing the model does not.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shoal.data.datasets import ArrayDataset, ClientData, FederatedDataset
from shoal.data.loaders import stratified_split
from shoal.errors import DataError

TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Site:
    name: str
    patients: float  # share of the training pool
    malignant: float  # share of its patients with cancer
    gain: float  # calibration: every feature x gain


SITES = (
    Site("university", 0.36, 0.55, 1.00),
    Site("regional", 0.24, 0.35, 1.03),
    Site("community", 0.16, 0.25, 0.97),
    Site("screening", 0.14, 0.10, 1.05),
    Site("rural", 0.10, 0.30, 0.95),
)


def hospitals(
    num_clients: int = len(SITES), seed: int = 0, holdout_fraction: float = 0.3
) -> FederatedDataset:
    """The first ``num_clients`` sites of :data:`SITES`, each holding out
    ``holdout_fraction`` of its patients (stratified) for federated evaluation."""
    if not 1 <= num_clients <= len(SITES):
        raise DataError(f"hospitals has {len(SITES)} sites; data.num_clients must be 1..{len(SITES)}")
    if not 0.0 <= holdout_fraction < 1.0:
        raise DataError(f"data.holdout_fraction must be in [0, 1), got {holdout_fraction}")
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    x_all, y_all = bunch.data.astype(np.float64), (bunch.target == 0).astype(np.int64)  # 1: malignant
    rng = np.random.default_rng(seed)
    pool, test_idx = stratified_split(y_all, TEST_FRACTION, rng)
    by_class = {c: list(rng.permutation(pool[y_all[pool] == c])) for c in (0, 1)}
    sites = SITES[:num_clients]
    picked: dict[str, np.ndarray] = {}
    for site in sites[1:]:  # the first (largest) site takes what is left of each class
        n = round(site.patients * len(pool))
        sick = round(n * site.malignant)
        picked[site.name] = np.array(by_class[1][:sick] + by_class[0][: n - sick])
        del by_class[1][:sick], by_class[0][: n - sick]
    first = sites[0]
    if num_clients < len(SITES):  # fewer sites: the first is drawn to its own row of the table
        sick = round(round(first.patients * len(pool)) * first.malignant)
        n = round(first.patients * len(pool))
        by_class = {1: by_class[1][:sick], 0: by_class[0][: n - sick]}
    picked[first.name] = np.array(by_class[1] + by_class[0])
    train_rows = np.concatenate(list(picked.values()))
    mean, std = x_all[train_rows].mean(axis=0), x_all[train_rows].std(axis=0) + 1e-12
    clients = {}
    for site in sites:
        rows = picked[site.name]
        x = ((x_all[rows] * site.gain - mean) / std).astype(np.float32)
        y = y_all[rows]
        kept, held = stratified_split(y, holdout_fraction, rng)
        clients[site.name] = ClientData(
            train=ArrayDataset.from_numpy(x[kept], y[kept]),
            test=ArrayDataset.from_numpy(x[held], y[held]) if len(held) else None,
        )
    test = ArrayDataset.from_numpy(((x_all[test_idx] - mean) / std).astype(np.float32), y_all[test_idx])
    sizes = {s.name: len(picked[s.name]) for s in sites}
    return FederatedDataset("hospitals", clients, 2, (x_all.shape[1],), test, sizes)
