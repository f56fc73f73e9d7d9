"""APFL (Deng, Kamani and Mahdavi 2020, "Adaptive Personalized Federated Learning"): each
client mixes a personal model ``v`` with the global one, ``v_bar = alpha v + (1 - alpha) w``.

At every local step, on the same minibatch (Algorithm 1):

- ``w <- w - lr grad f(w)``: the shared model, as FedAvg trains it (its update is sent);
- ``v <- v - lr grad_v f(v_bar)``, where ``grad_v f(v_bar) = alpha grad f(v_bar)``;
- ``alpha <- alpha - lr grad_alpha f(v_bar)``, ``grad_alpha = <v - w, grad f(v_bar)>``,
  clipped to [0, 1] (with ``apfl_adaptive``; otherwise alpha stays as set),

with ``v_bar`` taken at the step's starting ``w``. ``v`` and ``alpha`` stay in the
client's state; the client is evaluated on ``alpha v + (1 - alpha) w`` with the newest
global ``w``. Gradients come from autograd through ``torch.func.functional_call``, so
the rule holds for any model.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from shoal.client.algorithm import Local, LocalModel, LocalRun, register
from shoal.client.state import ClientState
from shoal.client.trainer import batches
from shoal.config.names import PersonalizationName
from shoal.data.datasets import ClientData
from shoal.messages import EvalTask
from shoal.params import ParamSpec
from shoal.personal.base import PersonalMethod, settings

KEY, ALPHA = "personal/apfl", "personal/apfl_alpha"


def alpha_of(state: ClientState, start: float) -> float:
    found = state.get(ALPHA)
    return float(found[0]) if found is not None else start


def mixture(state: ClientState, global_params: np.ndarray, start: float) -> np.ndarray:
    """``alpha v + (1 - alpha) w``: the model this client is scored on."""
    a = alpha_of(state, start)
    v = _checked(state[KEY], global_params) if KEY in state else global_params
    return (a * v + (1.0 - a) * global_params).astype(np.float32)


def _checked(v: np.ndarray, global_params: np.ndarray) -> np.ndarray:
    if v.shape != global_params.shape:
        raise ValueError("this client's APFL model does not fit the global one: delete its state")
    return v


class APFL(PersonalMethod):
    name: ClassVar[str] = "apfl"
    method: ClassVar[PersonalizationName] = PersonalizationName.APFL

    def cohort_unsupported(self) -> str | None:
        return "APFL trains a personal model and its mixing weight client by client"

    def local_loop(self) -> APFL:
        return self

    def __call__(self, local: Local) -> tuple[float, int]:
        if local.term is not None:
            raise ValueError(
                "APFL's loop does not apply other algorithms' gradient terms (FedProx, SCAFFOLD)"
            )
        task, run, module = local.task, local.run, local.model.module
        hp = settings(run.trainer)
        spec = run.spec
        assert spec is not None, "the trainer gives the model's layout"
        v_flat = torch.tensor(_checked(local.state.get(KEY, task.params), task.params), requires_grad=True)
        v = _param_views(spec, v_flat, module)
        alpha = torch.tensor(alpha_of(local.state, hp.apfl_alpha), requires_grad=hp.apfl_adaptive)
        w = dict(module.named_parameters())  # the trainer's module, already at local.start
        opt = local.model.optimizer()
        module.train()
        loss_sum, seen = torch.zeros(()), 0
        for idx in batches(len(local.data), run.batch_size, run.steps, task.seed):
            xb, yb = local.data.x.index_select(0, idx), local.data.y.index_select(0, idx)
            mixed = {n: alpha * v[n] + (1.0 - alpha) * w[n].detach() for n in v}
            mixed_loss = F.cross_entropy(functional_call(module, mixed, (xb,)), yb)
            wrt = [v_flat, alpha] if hp.apfl_adaptive else [v_flat]
            grads = torch.autograd.grad(mixed_loss, wrt)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(module(xb), yb)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            with torch.no_grad():
                v_flat.sub_(grads[0], alpha=run.lr)
                if hp.apfl_adaptive:
                    alpha.sub_(grads[1], alpha=run.lr).clamp_(0.0, 1.0)
            loss_sum += loss.detach() * len(idx)
            seen += len(idx)
        local.state[KEY] = v_flat.detach().numpy().copy()
        local.state[ALPHA] = np.array([float(alpha.detach())], dtype=np.float32)
        return float(loss_sum), seen

    def personal_weights(
        self, task: EvalTask, state: ClientState, data: ClientData, run: LocalRun, model: LocalModel
    ) -> np.ndarray | None:
        hp = settings(run.trainer)
        if hp.method is not self.method:
            return None
        return mixture(state, task.params, hp.apfl_alpha)


def _param_views(spec: ParamSpec, flat: torch.Tensor, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters' views into ``flat`` (buffers are not mixed: they are not learned)."""
    by_name = spec.split(flat)
    return {name: by_name[name] for name, _ in module.named_parameters()}


register(APFL())
