from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from shoal.data import wakeword
from shoal.data.wakeword import (
    CLIP,
    FRAMES,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    draw_home,
    log_mel,
    mel_filterbank,
    wake_word,
)
from shoal.errors import DataError

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="install espeak-ng (apt-get install espeak-ng) to run this test"
)
SMALL = {"num_clients": 3, "clips_per_home": 40, "test_homes": 1}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("install espeak-ng (apt-get install espeak-ng) to run this test")
    return wake_word(seed=3, holdout_fraction=0.25, cache=tmp_path_factory.mktemp("ww"), **SMALL)


def _centers() -> np.ndarray:
    bins = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
    return bins[mel_filterbank().argmax(axis=1)]  # the bin each triangle peaks at


def test_mel_filters_are_triangles_in_rising_order_covering_the_spectrum():
    fb = mel_filterbank()
    assert fb.shape == (N_MELS, N_FFT // 2 + 1) and fb.min() >= 0 and fb.max() <= 1
    assert np.all(np.diff(_centers()) > 0)
    covered = fb.sum(axis=0) > 0
    bins = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
    assert covered[(bins > 40) & (bins < 7900)].all()


@pytest.mark.parametrize("hz", [300.0, 1000.0, 4000.0])
def test_a_pure_tone_lands_in_the_mel_band_centred_on_it(hz):
    t = np.arange(CLIP) / SAMPLE_RATE
    feats = log_mel(np.sin(2 * np.pi * hz * t)[None])  # [1, 40, 49]
    assert feats.shape == (1, N_MELS, FRAMES) and feats.dtype == np.float32
    loudest = feats[0].mean(axis=1).argmax()
    assert loudest == np.abs(_centers() - hz).argmin()
    assert np.allclose(feats[0, :, 0], feats[0, :, -1], atol=1e-3)  # steady: every frame alike


def test_silence_is_the_floor():
    assert np.allclose(log_mel(np.zeros((2, CLIP))), np.log(1e-6))


def test_homes_differ_in_voice_room_and_words():
    rng = np.random.default_rng(0)
    homes = [draw_home(rng) for _ in range(12)]
    assert len({h.voice for h in homes}) >= 8
    assert len({h.words for h in homes}) == 12
    for h in homes:
        assert len(set(h.words)) == wakeword.WORDS_PER_HOME and wakeword.KEYWORD not in h.words
        assert set(h.words) & set(wakeword.NEAR_MISSES)  # every home has a near miss to reject
        assert sum(h.word_weights) == pytest.approx(1.0)


def test_a_missing_espeak_ng_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr(wakeword.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="apt-get install espeak-ng"):
        wake_word(2, cache=tmp_path)


@needs_espeak
def test_shapes_labels_and_holdouts(small):
    assert small.name == "wake-word" and small.num_classes == 2 and small.input_shape == (1, N_MELS, FRAMES)
    assert list(small.client_ids) == ["home-00", "home-01", "home-02"]
    for c in small.clients.values():
        assert c.train.x.shape[1:] == (1, N_MELS, FRAMES) and torch.isfinite(c.train.x).all()
        assert c.test is not None
        n = len(c.train) + len(c.test)
        assert n >= 40 and len(c.test) == round(n * 0.25)
    y = torch.cat([torch.cat([c.train.y, c.test.y]) for c in small.clients.values()])
    assert set(y.tolist()) == {0, 1}
    assert 0.25 < y.float().mean() < 0.55  # POSITIVE_SHARE = 0.4 of a few hundred clips
    assert small.test is not None and 0.35 < small.test.y.float().mean() < 0.65  # unseen homes: half
    assert small.description["generation_s"] > 0


@needs_espeak
def test_homes_sound_different(small):
    # each home's average spectrum [40]: its voice, room and noise colour it
    profiles = [c.train.x.mean(dim=(0, 1, 3)) for c in small.clients.values()]
    for i in range(len(profiles)):
        for j in range(i):
            assert (profiles[i] - profiles[j]).abs().max() > 0.2
    for c in small.clients.values():  # each clip leveled to mean 0, std 1
        assert c.train.x.mean(dim=(1, 2, 3)).abs().max() < 1e-4


@needs_espeak
def test_the_same_seed_makes_the_same_clips_and_the_cache_returns_them(small, tmp_path, monkeypatch):
    fresh = wake_word(seed=3, holdout_fraction=0.25, cache=tmp_path, **SMALL)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    for cid in small.client_ids:
        assert torch.equal(fresh[cid].train.x, small[cid].train.x)
        assert torch.equal(fresh[cid].train.y, small[cid].train.y)
    monkeypatch.setattr(wakeword, "_generate", lambda *a: pytest.fail("regenerated a cached set"))
    again = wake_word(seed=3, holdout_fraction=0.5, cache=tmp_path, **SMALL)  # the split is not cached
    assert len(again["home-00"].test) == round((len(fresh["home-00"].train) + len(fresh["home-00"].test)) / 2)


@needs_espeak
def test_another_seed_makes_other_homes(small, tmp_path):
    other = wake_word(seed=4, holdout_fraction=0.25, cache=tmp_path, **SMALL)
    assert not torch.equal(other["home-00"].train.x[:5], small["home-00"].train.x[:5])


def test_standardize_levels_each_clip_but_keeps_its_shape():
    rng = np.random.default_rng(0)
    feats = rng.normal(3.0, 2.0, (4, N_MELS, FRAMES)) * np.arange(1, 5)[:, None, None]
    out = wakeword.standardize(feats)
    assert np.allclose(out.mean(axis=(1, 2)), 0, atol=1e-5) and np.allclose(
        out.std(axis=(1, 2)), 1, atol=1e-3
    )
    assert np.allclose(wakeword.standardize(feats * 10 + 7), out, atol=1e-4)  # a louder clip is the same clip
