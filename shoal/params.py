"""Model weights: a named mapping at the API edge, one flat float32 vector inside a round.

A :class:`ParamSpec` records the names and shapes of a model's floating-point state
(parameters and floating buffers such as BatchNorm statistics), in ``state_dict`` order.
Inside the round loop the weights are a single contiguous ``float32`` vector; the spec
turns it back into named arrays at the edges (files, the network, user code).

:class:`FlatModule` binds a module's tensors as views into one flat buffer, so loading the
global model into a client is one ``copy_`` and reading the trained weights back needs
no gather: this is what keeps per-client overhead near zero in simulation.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from torch import nn

from shoal.errors import CheckpointError, SpecMismatchError

Params = dict[str, np.ndarray]
"""Named float32 arrays, in the model's ``state_dict`` order."""


@dataclass(frozen=True)
class ParamSpec:
    """Names and shapes of a model's floating-point state, in order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.shapes):
            raise SpecMismatchError(f"ParamSpec has {len(self.names)} names but {len(self.shapes)} shapes")
        if len(set(self.names)) != len(self.names):
            raise SpecMismatchError("ParamSpec names must be unique")
        if any(d < 0 for shape in self.shapes for d in shape):
            raise SpecMismatchError("ParamSpec shapes must be non-negative")

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Start of each tensor in the flat vector."""
        return tuple(int(o) for o in np.concatenate([[0], np.cumsum(self.sizes)[:-1]]))

    @property
    def num_params(self) -> int:
        return sum(self.sizes)

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-parameter tensors from ``flat``'s last dimension ([..., D] -> [..., *shape]);
        views where the layout allows (always for a 1-D vector)."""
        lead = tuple(flat.shape[:-1])
        return {
            name: flat[..., off : off + size].reshape(*lead, *shape)
            for name, shape, off, size in zip(self.names, self.shapes, self.offsets, self.sizes, strict=True)
        }

    def digest(self) -> str:
        """A short fingerprint of the layout: a server and its devices must agree on it."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps({"names": list(self.names), "shapes": [list(s) for s in self.shapes]})

    @classmethod
    def from_json(cls, text: str) -> ParamSpec:
        raw = json.loads(text)
        return cls(tuple(raw["names"]), tuple(tuple(int(d) for d in s) for s in raw["shapes"]))

    @classmethod
    def from_module(cls, module: nn.Module) -> ParamSpec:
        items = _float_state(module)
        return cls(tuple(items), tuple(tuple(t.shape) for t in items.values()))


def _float_state(module: nn.Module) -> dict[str, torch.Tensor]:
    # Integer buffers (BatchNorm's num_batches_tracked) are counters, not weights: they are
    # neither averaged nor sent.
    return {k: v for k, v in module.state_dict(keep_vars=True).items() if v.is_floating_point()}


def flatten(params: Mapping[str, np.ndarray], spec: ParamSpec) -> np.ndarray:
    """Named arrays -> one new float32 vector, checked against ``spec``."""
    if tuple(params) != spec.names:
        missing = sorted(set(spec.names) - set(params))
        extra = sorted(set(params) - set(spec.names))
        raise SpecMismatchError(
            f"parameter names do not match the model: missing {missing}, unexpected {extra}"
            if missing or extra
            else "parameter names are in a different order than the model's state_dict"
        )
    out = np.empty(spec.num_params, dtype=np.float32)
    for name, shape, off, size in zip(spec.names, spec.shapes, spec.offsets, spec.sizes, strict=True):
        arr = np.asarray(params[name])
        if tuple(arr.shape) != shape:
            raise SpecMismatchError(f"{name}: shape {tuple(arr.shape)}, the model expects {shape}")
        out[off : off + size] = arr.reshape(-1)
    return out


def unflatten(vector: np.ndarray, spec: ParamSpec) -> Params:
    """One flat vector -> named arrays (views into ``vector``; copy them to keep them)."""
    check_vector(vector, spec)
    return {
        name: vector[off : off + size].reshape(shape)
        for name, shape, off, size in zip(spec.names, spec.shapes, spec.offsets, spec.sizes, strict=True)
    }


def check_vector(vector: np.ndarray, spec: ParamSpec, what: str = "parameter vector") -> None:
    if vector.dtype != np.float32 or vector.ndim != 1 or vector.shape[0] != spec.num_params:
        raise SpecMismatchError(
            f"{what} is {vector.dtype}{list(vector.shape)}; the model needs float32[{spec.num_params}]"
        )
    if not np.isfinite(vector).all():
        raise SpecMismatchError(f"{what} contains NaN or infinity")


def from_module(module: nn.Module) -> tuple[np.ndarray, ParamSpec]:
    """A module's floating-point state as a new flat vector and its spec."""
    spec = ParamSpec.from_module(module)
    state = _float_state(module)
    flat = torch.cat([t.detach().reshape(-1).float() for t in state.values()]) if state else torch.empty(0)
    return flat.numpy().astype(np.float32, copy=True), spec


def to_module(vector: np.ndarray, spec: ParamSpec, module: nn.Module) -> None:
    """Copy a flat vector into ``module``'s parameters and floating buffers in place."""
    check_vector(vector, spec)
    if ParamSpec.from_module(module) != spec:
        raise SpecMismatchError("the module's parameters do not match the spec of this vector")
    with torch.no_grad():
        for t, arr in zip(_float_state(module).values(), unflatten(vector, spec).values(), strict=True):
            t.copy_(read_only_tensor(arr))


class FlatModule:
    """Rebinds a module's floating tensors as views into one contiguous float32 buffer.

    After binding, ``self.flat`` *is* the model's weights: ``load`` is one copy, and an
    optimizer stepping the module's parameters updates ``flat`` directly.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.spec = ParamSpec.from_module(module)
        self.flat = torch.zeros(self.spec.num_params, dtype=torch.float32)
        with torch.no_grad():
            for (name, t), off, size in zip(
                _float_state(module).items(), self.spec.offsets, self.spec.sizes, strict=True
            ):
                view = self.flat[off : off + size].view(t.shape)
                view.copy_(t.detach())
                owner, _, attr = name.rpartition(".")
                sub = module.get_submodule(owner) if owner else module
                if isinstance(t, nn.Parameter):
                    t.data = view  # the Parameter object survives, so optimizers see it
                else:
                    setattr(sub, attr, view)

    def load(self, vector: np.ndarray) -> None:
        # A numpy copy into the buffer's memory: works for read-only arrays (decoded
        # messages, Ray's object store), which torch.from_numpy warns about.
        self.flat.detach().numpy()[:] = vector

    def numpy(self) -> np.ndarray:
        """A new float32 copy of the current weights."""
        return self.flat.detach().numpy().copy()


def read_only_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``array``'s memory, for reading only.

    Decoded messages and Ray's object store hand out read-only arrays; torch.from_numpy
    warns about those because a write would be undefined. Callers here only read.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def model_hash(vector: np.ndarray) -> str:
    """SHA-256 of the weights' bytes: two runs agree exactly iff the hashes agree."""
    return hashlib.sha256(np.ascontiguousarray(vector, dtype="<f4").tobytes()).hexdigest()


def save_params(
    path: str | Path, vector: np.ndarray, spec: ParamSpec, metadata: Mapping[str, str] | None = None
) -> None:
    """Write weights as safetensors (no pickle), atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(
        {k: np.ascontiguousarray(v) for k, v in unflatten(vector, spec).items()},
        str(tmp),
        metadata=dict(metadata or {}),
    )
    tmp.replace(path)


def load_params(path: str | Path, spec: ParamSpec) -> np.ndarray:
    """Read safetensors weights written by :func:`save_params` (or any compatible file)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist")
    try:
        arrays = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    ordered = {n: arrays[n] for n in spec.names if n in arrays}
    ordered.update({k: v for k, v in arrays.items() if k not in ordered})
    return flatten(ordered, spec)
