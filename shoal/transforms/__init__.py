"""Update transforms: one file each, composed as a list."""

from shoal.transforms.base import TransformContext, UpdateTransform, apply_client, apply_server
from shoal.transforms.half_precision import HalfPrecision

__all__ = ["HalfPrecision", "TransformContext", "UpdateTransform", "apply_client", "apply_server"]
