"""Attacks that show what the defences are for. Use them to audit your own setup."""

from shoal.attacks.gradient_inversion import (
    InversionResult,
    example_gradient,
    gradient_from_update,
    invert_gradient,
    psnr,
    small_cnn,
)

__all__ = [
    "InversionResult",
    "example_gradient",
    "gradient_from_update",
    "invert_gradient",
    "psnr",
    "small_cnn",
]
