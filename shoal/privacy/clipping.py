"""L2 clipping of update vectors, the sensitivity bound every DP guarantee here rests on."""

from __future__ import annotations

import numpy as np


def l2_norm(vector: np.ndarray) -> float:
    return float(np.linalg.norm(vector.astype(np.float64)))


def clip(vector: np.ndarray, bound: float) -> tuple[np.ndarray, float]:
    """``vector * min(1, bound / ||vector||)`` as float64, and the norm before clipping.

    Scaling in float64 and rounding down keeps the result's norm at most ``bound`` even after
    the caller casts it to float32 (the scale is shrunk by a few ulps for that)."""
    if not bound > 0:
        raise ValueError(f"clip bound must be > 0, got {bound}")
    norm = l2_norm(vector)
    scale = 1.0 if norm <= bound else (bound / norm) * (1.0 - 1e-6)
    return vector.astype(np.float64) * scale, norm
