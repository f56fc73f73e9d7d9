from __future__ import annotations

import numpy as np
import pytest
import torch

import shoal
from shoal.config import ModelConfig
from shoal.data.shakespeare import SEQ_LEN, VOCAB, encode_text, play_text, roles, shakespeare, windows
from shoal.errors import ConfigError, DataError
from shoal.models import char_lstm


@pytest.fixture(scope="module")
def play():
    return shakespeare()


def test_the_play_ships_with_the_package_and_splits_by_role():
    text = play_text()
    assert len(text) == 125179  # the brotli test file, byte for byte
    parts = roles(text)
    assert max(parts, key=lambda r: len(parts[r])) == "ROSALIND"
    assert not any(r.startswith(("ACT", "SCENE")) for r in parts)
    assert all("[" not in t and "\t" not in t and "  " not in t for t in parts.values())
    assert parts["ADAM"].startswith("Yonder comes my master, your brother.")


def test_windows_are_every_80_characters_and_the_next_one():
    ids = encode_text("To be, or not to be: that is the question. " * 3)
    w = windows(ids)
    assert len(w) == len(ids) - SEQ_LEN and w.x.dtype == torch.int64
    for i in (0, 7, len(w) - 1):
        assert w.x[i].tolist() == ids[i : i + SEQ_LEN].tolist() and int(w.y[i]) == ids[i + SEQ_LEN]
    assert len(windows(ids[:SEQ_LEN])) == 0


def test_clients_are_roles_with_a_clean_train_test_cut(play):
    assert play.num_classes == len(VOCAB) and play.input_shape == (SEQ_LEN,)
    assert list(play.client_ids)[:2] == ["ROSALIND", "TOUCHSTONE"]  # largest first
    text = roles(play_text())["CELIA"]
    celia = play["CELIA"]
    cut = round(len(text) * 0.9)
    assert len(celia.train) == cut - SEQ_LEN and len(celia.test) == len(text) - cut - SEQ_LEN
    # the last training target is the character just before the cut: no test text is seen
    assert VOCAB[int(celia.train.y[-1])] == text[cut - 1]
    assert len(play.test) == sum(len(c.test) for c in play.clients.values())
    assert len(shakespeare(num_clients=3)) == 3


def test_unknown_characters_are_refused():
    with pytest.raises(DataError, match="outside the vocabulary"):
        encode_text("caf\u00e9")


def test_char_lstm_trains_federated_on_roles(play):
    data = shakespeare(num_clients=3)
    model = lambda: char_lstm(data.num_classes, (16,))  # noqa: E731
    trainer = shoal.TorchTrainer(lr=1.0, local_steps=10, batch_size=10)
    history = shoal.simulate(model, data, shoal.FedAvg(clients_per_round=3), trainer, rounds=2)
    first, last = history.records[0], history.records[-1]
    assert last["test_loss"] < first["test_loss"] < np.log(len(VOCAB)) + 0.5
    assert model()(data["ORLANDO"].train.x[:4]).shape == (4, len(VOCAB))


def test_char_lstm_config_wants_equal_widths():
    with pytest.raises(ConfigError, match="equal LSTM widths"):
        ModelConfig(name="char_lstm", hidden=(64, 32))
