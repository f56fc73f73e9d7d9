from __future__ import annotations

import pytest
import torch
from torch import nn

from shoal.errors import ConfigError
from shoal.models import CharLSTM, mcmahan_2nn, mcmahan_cnn, mlp
from shoal.split import cut_model, cut_shapes


@pytest.mark.parametrize(
    ("model", "input_shape"),
    [(mcmahan_cnn(), (1, 28, 28)), (mcmahan_2nn(), (1, 28, 28)), (mlp((64,), 10, (16,)), (64,))],
    ids=["cnn", "2nn", "mlp"],
)
def test_reference_models_are_sequential_and_their_parts_compose_to_the_model(
    model: nn.Module, input_shape: tuple[int, ...]
) -> None:
    assert isinstance(model, nn.Sequential)
    cut = next(i + 1 for i, layer in enumerate(model) if any(True for _ in layer.parameters()))
    parts = cut_model(model, (cut,))
    x = torch.randn(3, *input_shape)
    assert torch.equal(parts.middle(parts.bottom(x)), model(x))
    assert torch.equal(parts.whole()(x), model(x))


def test_u_shaped_cut_keeps_the_head_on_the_device() -> None:
    model = mcmahan_cnn((1, 8, 8), 10)
    parts = cut_model(model, (3, 9))
    assert parts.u_shaped and parts.top is not None
    assert [type(m) for m in parts.top] == [nn.Linear]
    shapes = cut_shapes(parts, (1, 8, 8))
    assert shapes.cut == (32, 4, 4) and shapes.server_out == (512,) and shapes.logits == (10,)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(parts.top(parts.middle(parts.bottom(x))), model(x))


def test_a_model_that_is_not_sequential_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"nn.Sequential.*CharLSTM"):
        cut_model(CharLSTM(20), (1,))


@pytest.mark.parametrize(
    ("cuts", "match"),
    [
        ((0,), "1..3"),
        ((4,), "1..3"),
        ((3, 2), "increase"),
        ((2, 2), "increase"),
        ((1, 2, 3), "one layer index"),
        ((), "one layer index"),
    ],
)
def test_bad_cuts_are_refused(cuts: tuple[int, ...], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        cut_model(mlp((64,), 10, (16,)), cuts)  # Flatten, Linear, ReLU, Linear


def test_a_cut_that_leaves_a_part_without_weights_is_refused() -> None:
    model = mlp((64,), 10, (16,))  # Flatten, Linear, ReLU, Linear
    with pytest.raises(ConfigError, match=r"device's bottom part .* no weights.*raw input"):
        cut_model(model, (1,))
    with pytest.raises(ConfigError, match="server's part"):
        cut_model(model, (2, 3))
