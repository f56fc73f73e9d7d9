"""Datasets, loaders and partitioners."""

from shoal.config.names import Partition
from shoal.data.datasets import ArrayDataset, ClientData, FederatedDataset, LabeledData
from shoal.data.loaders import (
    digits,
    fashion_mnist,
    fashion_mnist_available,
    load_csv,
    load_idx,
    mnist_subset,
)
from shoal.data.local import read_local
from shoal.data.partition import (
    dirichlet,
    dirichlet_indices,
    federate,
    iid,
    iid_indices,
    partition,
    quantity_skew,
    quantity_skew_indices,
    shard_indices,
    shards,
)
from shoal.data.shakespeare import shakespeare
from shoal.data.synthetic import synthetic

__all__ = [
    "ArrayDataset",
    "ClientData",
    "FederatedDataset",
    "LabeledData",
    "Partition",
    "digits",
    "dirichlet",
    "dirichlet_indices",
    "fashion_mnist",
    "fashion_mnist_available",
    "federate",
    "iid",
    "iid_indices",
    "load_csv",
    "load_idx",
    "mnist_subset",
    "partition",
    "quantity_skew",
    "quantity_skew_indices",
    "read_local",
    "shakespeare",
    "shard_indices",
    "shards",
    "synthetic",
]
