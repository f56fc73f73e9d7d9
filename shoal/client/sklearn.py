"""A client whose model is scikit-learn's, not PyTorch's: the protocol is flat float32 vectors.

:class:`SGDClassifierClient` trains a warm-started ``sklearn.linear_model.SGDClassifier``
(multinomial logistic regression by SGD) on the device's data. The server still needs the
model's layout and, for evaluation, a forward pass: both come from a PyTorch model with
one linear layer (``model.name = "mlp"`` with ``hidden = []``), whose ``weight`` [k, d] and
``bias`` [k] are exactly sklearn's ``coef_`` and ``intercept_`` (for two classes sklearn
keeps one row ``w``; it travels as ``[-w/2, w/2]``, whose softmax is sklearn's sigmoid).
Use it from a config with ``client = "shoal.client.sklearn:sgd_classifier"``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss

from shoal.client.app import ClientApp
from shoal.client.hparams import TorchTrainer
from shoal.client.state import ClientState
from shoal.data.datasets import ArrayDataset, ClientData
from shoal.errors import ConfigError
from shoal.messages import EvalResult, EvalTask, TrainResult, TrainTask
from shoal.models import ModelFactory
from shoal.params import ParamSpec, unflatten


def linear_layout(spec: ParamSpec) -> tuple[str, str, int, int]:
    """The names of the one weight [k, d] and bias [k] of a linear model, and k, d."""
    shapes = dict(zip(spec.names, spec.shapes, strict=True))
    weights = [n for n, s in shapes.items() if len(s) == 2]
    biases = [n for n, s in shapes.items() if len(s) == 1]
    if len(shapes) != 2 or len(weights) != 1 or len(biases) != 1:
        raise ConfigError(
            "the scikit-learn client needs a model with one linear layer (its coef_ and intercept_); "
            f"this one has {', '.join(f'{n} {list(s)}' for n, s in shapes.items())}: "
            "set model.name = 'mlp' and model.hidden = []"
        )
    k, d = shapes[weights[0]]
    if shapes[biases[0]] != (k,) or k < 2:
        raise ConfigError(f"the linear layer's bias must have one entry per class; got {shapes[biases[0]]}")
    return weights[0], biases[0], k, d


@dataclass(frozen=True)
class SGDClassifierClient:
    """Builds the app; ``lr``, ``local_epochs`` and ``weight_decay`` come from ``[trainer]``."""

    lr: float = 0.01
    local_epochs: int = 1
    alpha: float = 1e-4  # sklearn's L2 penalty

    def build(self, model: ModelFactory) -> ClientApp:
        return _SklearnApp(ParamSpec.from_module(model()), self)


def sgd_classifier(model: ModelFactory, trainer: TorchTrainer) -> ClientApp:
    """The config's ``client = "shoal.client.sklearn:sgd_classifier"``."""
    alpha = trainer.weight_decay or 1e-4
    return SGDClassifierClient(trainer.lr, trainer.local_epochs, alpha).build(model)


class _SklearnApp:
    def __init__(self, spec: ParamSpec, hp: SGDClassifierClient) -> None:
        self.spec, self.hp = spec, hp
        self.weight, self.bias, self.k, self.d = linear_layout(spec)

    def _classifier(self, params: np.ndarray, x: np.ndarray, y: np.ndarray) -> SGDClassifier:
        """An SGDClassifier holding ``params`` (primed on one sample so it accepts them)."""
        clf = SGDClassifier(
            loss="log_loss", learning_rate="constant", eta0=self.hp.lr, alpha=self.hp.alpha, random_state=0
        )
        clf.partial_fit(x[:1], y[:1], classes=np.arange(self.k))
        parts = unflatten(params, self.spec)
        w, b = parts[self.weight].astype(np.float64), parts[self.bias].astype(np.float64)
        if self.k == 2:  # sklearn's one row w for class 1 against class 0
            clf.coef_, clf.intercept_ = (w[1] - w[0])[None, :].copy(), np.array([b[1] - b[0]])
        else:
            clf.coef_, clf.intercept_ = w.copy(), b.copy()
        return clf

    def _flat(self, clf: SGDClassifier) -> np.ndarray:
        w, b = clf.coef_, clf.intercept_
        if self.k == 2:  # [-w/2, w/2]: the softmax of these two logits is sklearn's sigmoid
            w, b = np.stack([-w[0] / 2, w[0] / 2]), np.array([-b[0] / 2, b[0] / 2])
        flat: dict[str, np.ndarray] = {self.weight: w, self.bias: b}
        return np.concatenate([flat[n].astype(np.float32).reshape(-1) for n in self.spec.names])

    def _arrays(self, data: ArrayDataset) -> tuple[np.ndarray, np.ndarray]:
        x = data.x.numpy().reshape(len(data), -1).astype(np.float64)
        if x.shape[1] != self.d:
            raise ValueError(f"the data has {x.shape[1]} features, the model {self.d}")
        return x, data.y.numpy()

    def train(self, task: TrainTask, data: ClientData, state: ClientState) -> TrainResult:
        x, y = self._arrays(data.train)
        clf = self._classifier(task.params, x, y)
        order = np.random.default_rng(task.seed)
        epochs = int(task.config.get("local_epochs", self.hp.local_epochs))
        with warnings.catch_warnings():  # a few epochs of partial_fit do not claim convergence
            warnings.simplefilter("ignore", ConvergenceWarning)
            for _ in range(epochs):
                idx = order.permutation(len(y))
                clf.partial_fit(x[idx], y[idx])
        loss = log_loss(y, clf.predict_proba(x), labels=np.arange(self.k))
        return TrainResult(
            task.round,
            task.client_id,
            len(y),
            {"delta": self._flat(clf) - task.params},
            {"train_loss": float(loss), "local_steps": epochs * len(y)},
        )

    def evaluate(self, task: EvalTask, data: ClientData, state: ClientState) -> EvalResult:
        if data.test is None or len(data.test) == 0:
            raise ValueError(f"client {task.client_id} holds no evaluation data (holdout_fraction is 0)")
        x, y = self._arrays(data.test)
        clf = self._classifier(task.params, x, y)
        loss = log_loss(y, clf.predict_proba(x), labels=np.arange(self.k))
        return EvalResult(
            task.round, task.client_id, len(y), {"loss": float(loss), "accuracy": clf.score(x, y)}
        )
