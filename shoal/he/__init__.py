"""Homomorphic aggregation with CKKS (TenSEAL): the server adds ciphertexts it cannot read."""

from shoal.he.ckks import CKKSParams, HomomorphicAggregation, KeyAuthority

__all__ = ["CKKSParams", "HomomorphicAggregation", "KeyAuthority"]
