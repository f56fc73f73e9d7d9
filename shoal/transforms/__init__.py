"""Update transforms: one file each, composed as a list."""

from shoal.transforms.base import TransformContext, UpdateTransform, apply_client, apply_server
from shoal.transforms.compress import Compressor
from shoal.transforms.half_precision import HalfPrecision
from shoal.transforms.low_rank import PowerSGD
from shoal.transforms.quantize import StochasticQuantization
from shoal.transforms.sign import SignCompression
from shoal.transforms.sparse import RandomMask, TopK

__all__ = [
    "Compressor",
    "HalfPrecision",
    "PowerSGD",
    "RandomMask",
    "SignCompression",
    "StochasticQuantization",
    "TopK",
    "TransformContext",
    "UpdateTransform",
    "apply_client",
    "apply_server",
]
