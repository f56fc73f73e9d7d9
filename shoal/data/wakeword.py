"""Wake word on smart speakers: is this one-second clip the keyword, or anything else?

Every home is one device with its own speaker, room and vocabulary. The audio is spoken
offline by espeak-ng (the Debian package ``espeak-ng``; nothing is downloaded) and
turned into log-mel features here, in numpy and scipy. Label 1 is the keyword
(:data:`KEYWORD`), 0 another word or room noise alone.

What a home draws from the seed (:func:`draw_home`):

- ``voice``: an English accent of espeak-ng (:data:`ACCENTS`: US, British, Scottish,
  Lancashire, RP, West Midlands, Caribbean) with a speaker variant ``+m1``..``+m7``,
  ``+f1``..``+f5`` (:data:`VARIANTS`);
- ``pitch``: espeak-ng ``-p``, uniform in 20..80 (50 is the voice's own);
- ``speed``: ``-s`` in words per minute, uniform in 140..200;
- ``amplitude``: ``-a``, uniform in 60..160 (100 is espeak-ng's default);
- the room: ``snr_db``, the speech-to-noise ratio, uniform in 0..20 dB; ``noise_tilt``,
  the noise's spectral slope (power ~ 1/f^tilt: 0 white hiss, 1 pink, 2 a low rumble),
  uniform in 0..2; ``rt60``, the reverberation time, uniform in 0.1..0.6 s, applied by
  convolution with exponentially decaying noise (the classic synthetic room response);
- ``words``: 8 of the other words (:data:`OTHER_WORDS`), always with one near miss
  (:data:`NEAR_MISSES`), in proportions of a Dirichlet(1) draw: one home says "lights"
  all day, another "timer".

Each home records :data:`TAKES_KEYWORD` takes of the keyword and :data:`TAKES_OTHER` of
each of its words, each take with its own pitch (+-8) and speed (+-15 wpm); a clip is a
take placed at a random offset in one second, scaled by +-6 dB, reverberated in the
home's room and mixed with the home's noise at its SNR (+-3 dB). A clip is the keyword
with probability :data:`POSITIVE_SHARE`, noise alone with :data:`NOISE_SHARE`, another
word otherwise; a home holds ``clips_per_home`` x lognormal(0, 0.4) clips (at least 40).

Features: audio resampled from espeak-ng's 22,050 Hz to 16 kHz; a 512-sample (32 ms)
Hann window every 320 samples (20 ms), no padding: 49 frames; a 40-band HTK mel
filterbank over 20..8000 Hz on the power spectrum; ``log(mel + 1e-6)``; then each clip
shifted and scaled to mean 0 and standard deviation 1 over all its bins, as a speaker's
automatic gain control would level it (raw log-mels span -14..+5 with a per-home offset
of a few units, which made FedAvg's rounds swing). One example is ``[1, 40, 49]``, an
image for ``cnn_bn`` or ``mcmahan_cnn``.

The server's ``test`` set is :data:`TEST_HOMES` unseen homes (their voices, rooms and
words were never trained on), with half of their clips the keyword. Generation runs
about 600 espeak-ng processes (8 to 12 s on 2 cores); the features are cached under
``$XDG_CACHE_HOME/shoal/wake-word`` (``~/.cache/shoal/wake-word``), keyed by a hash of
every parameter above, the arguments and espeak-ng's version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve, get_window, resample_poly

from shoal.data.datasets import ArrayDataset, ClientData, FederatedDataset
from shoal.errors import DataError

KEYWORD = "marvin"  # the Speech Commands keyword: two syllables, rare in other speech
NEAR_MISSES = ("marvel", "martin", "margin", "garden", "carving")  # what a wake word must reject
OTHER_WORDS = (
    *NEAR_MISSES, "yes", "no", "stop", "go", "left", "right", "music", "weather", "timer", "lights",
    "kitchen", "hello", "seven", "dinner", "morning", "volume", "tomorrow", "coffee",
)  # fmt: skip
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029")
VARIANTS = tuple(f"m{i}" for i in range(1, 8)) + tuple(f"f{i}" for i in range(1, 6))
WORDS_PER_HOME = 8
TAKES_KEYWORD, TAKES_OTHER = 8, 2
POSITIVE_SHARE, NOISE_SHARE = 0.4, 0.1
TEST_HOMES = 4

SAMPLE_RATE = 16_000
CLIP = SAMPLE_RATE  # one second
N_FFT, HOP, N_MELS = 512, 320, 40
FRAMES = 1 + (CLIP - N_FFT) // HOP  # 49
GENERATOR_VERSION = 2  # bump when the generator changes what it makes: old caches are not read


@dataclass(frozen=True)
class Home:
    """One smart speaker: who speaks to it, in what room, saying which words."""

    voice: str  # espeak-ng -v, e.g. "en-gb-scotland+f3"
    pitch: int  # -p, 0..99
    speed: int  # -s, words per minute
    amplitude: int  # -a
    snr_db: float
    noise_tilt: float  # noise power ~ 1 / f^tilt
    rt60: float  # seconds for the reverb tail to fall 60 dB
    words: tuple[str, ...]
    word_weights: tuple[float, ...]


def draw_home(rng: np.random.Generator) -> Home:
    """A home's voice, room and words (the ranges are in the module's docstring)."""
    near_miss = str(rng.choice(NEAR_MISSES))
    rest = [w for w in OTHER_WORDS if w != near_miss]
    words = (near_miss, *(str(w) for w in rng.choice(rest, WORDS_PER_HOME - 1, replace=False)))
    return Home(
        voice=f"{rng.choice(ACCENTS)}+{rng.choice(VARIANTS)}",
        pitch=int(rng.integers(20, 81)),
        speed=int(rng.integers(140, 201)),
        amplitude=int(rng.integers(60, 161)),
        snr_db=float(rng.uniform(0, 20)),
        noise_tilt=float(rng.uniform(0, 2)),
        rt60=float(rng.uniform(0.1, 0.6)),
        words=words,
        word_weights=tuple(float(w) for w in rng.dirichlet(np.ones(WORDS_PER_HOME))),
    )


def espeak_version() -> str:
    """espeak-ng's version line, or a DataError saying how to install it."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataError(
            "the wake-word dataset speaks its clips with espeak-ng, which is not installed: "
            "apt-get install espeak-ng (Debian, Ubuntu), brew install espeak-ng (macOS), "
            "dnf install espeak-ng (Fedora)"
        )
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    return out.split("Data at")[0].strip()


def speak(text: str, voice: str, pitch: int, speed: int, amplitude: int) -> np.ndarray:
    """espeak-ng's audio for ``text``, resampled to 16 kHz, silence trimmed: float32 [samples]."""
    args = ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-a", str(amplitude)]
    wav = subprocess.run([*args, "--stdout", text], capture_output=True, check=True).stdout
    # --stdout streams, so the RIFF sizes are placeholders: read the rate, take all after "data"
    rate = int.from_bytes(wav[24:28], "little")
    start = wav.index(b"data") + 8
    audio = np.frombuffer(wav[start : start + (len(wav) - start) // 2 * 2], dtype="<i2") / 32768.0
    gcd = np.gcd(SAMPLE_RATE, rate)
    audio = resample_poly(audio, SAMPLE_RATE // gcd, rate // gcd)
    loud = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max(initial=1e-9))
    trimmed: np.ndarray = audio[loud[0] : loud[-1] + 1] if loud.size else audio
    return trimmed.astype(np.float32)


def room_impulse(rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Exponentially decaying Gaussian noise, -60 dB after ``rt60`` s, with the direct path first."""
    t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
    ir = rng.standard_normal(t.size) * np.exp(-6.9 * t / rt60)  # ln(1000) = 6.9: 60 dB in amplitude
    ir[0] = 0.0
    ir *= 0.3 / np.linalg.norm(ir)  # the tail's energy, relative to the direct path's 1
    ir[0] = 1.0
    return ir


def colored_noise(tilt: float, rng: np.random.Generator) -> np.ndarray:
    """One second of unit-power noise whose power falls as 1 / f^tilt."""
    spectrum = np.fft.rfft(rng.standard_normal(CLIP))
    f = np.fft.rfftfreq(CLIP, 1 / SAMPLE_RATE)
    spectrum *= np.maximum(f, 20.0) ** (-tilt / 2)  # amplitude ~ f^(-tilt/2)
    noise = np.fft.irfft(spectrum, CLIP)
    unit: np.ndarray = noise / np.sqrt(np.mean(noise**2))
    return unit


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, f_min: float = 20.0) -> np.ndarray:
    """Triangular HTK mel filters [n_mels, n_fft // 2 + 1] over f_min..Nyquist."""
    top = 2595.0 * np.log10(1.0 + np.array([f_min, SAMPLE_RATE / 2]) / 700.0)  # HTK's mel scale
    edges = 700.0 * (10.0 ** (np.linspace(top[0], top[1], n_mels + 2) / 2595.0) - 1.0)  # [n_mels + 2] Hz
    bins = np.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)  # [n_fft // 2 + 1]
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    filters: np.ndarray = np.maximum(0.0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)))
    return filters


_MEL = mel_filterbank()
_WINDOW = get_window("hann", N_FFT)  # periodic Hann, as for spectral analysis


def log_mel(clips: np.ndarray) -> np.ndarray:
    """[n, CLIP] audio at 16 kHz -> [n, N_MELS, FRAMES] log-mel power, float32."""
    frames = np.lib.stride_tricks.sliding_window_view(clips, N_FFT, axis=-1)[:, ::HOP]  # [n, 49, 512]
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=-1)) ** 2  # [n, 49, 257]
    mel = power @ _MEL.T  # [n, 49, 40]
    feats: np.ndarray = np.log(mel + 1e-6).transpose(0, 2, 1)
    return feats.astype(np.float32)


def standardize(feats: np.ndarray) -> np.ndarray:
    """Each example [n, ...] to mean 0 and standard deviation 1 over all its values."""
    axes = tuple(range(1, feats.ndim))
    mean, std = feats.mean(axis=axes, keepdims=True), feats.std(axis=axes, keepdims=True)
    leveled: np.ndarray = (feats - mean) / (std + 1e-5)
    return leveled.astype(np.float32)


def _takes(home: Home, rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """Each word's takes, each with its own pitch and speed around the home's."""
    jobs = [(w, n) for w, n in ((KEYWORD, TAKES_KEYWORD), *((w, TAKES_OTHER) for w in home.words))]
    calls = [
        (word, int(np.clip(home.pitch + rng.integers(-8, 9), 0, 99)), home.speed + int(rng.integers(-15, 16)))
        for word, n in jobs
        for _ in range(n)
    ]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # espeak-ng runs as processes
        audio = list(pool.map(lambda c: speak(c[0], home.voice, c[1], c[2], home.amplitude), calls))
    takes: dict[str, list[np.ndarray]] = {}
    for (word, _, _), a in zip(calls, audio, strict=True):
        takes.setdefault(word, []).append(a)
    return takes


def home_clips(
    home: Home, n: int, rng: np.random.Generator, positive_share: float = POSITIVE_SHARE
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` clips spoken in ``home``: log-mel features [n, 1, 40, 49] and labels [n]."""
    takes = _takes(home, rng)
    ir = room_impulse(home.rt60, rng)
    # the room's noise is fixed by the home's SNR against its keyword at 0 dB gain; a louder or
    # softer take (+-6 dB) then changes the clip's own SNR, as a nearer or farther speaker would
    speech_power = np.mean([np.sum(t[:CLIP] ** 2) / CLIP for t in takes[KEYWORD]])
    kind = rng.choice(3, n, p=[positive_share, NOISE_SHARE, 1 - positive_share - NOISE_SHARE])
    clips = np.zeros((n, CLIP))
    for i, k in enumerate(kind):
        if k != 1:  # 0: the keyword, 2: one of the home's words; 1: the room alone
            word = KEYWORD if k == 0 else str(rng.choice(home.words, p=home.word_weights))
            speech = takes[word][rng.integers(len(takes[word]))][:CLIP]
            at = rng.integers(CLIP - len(speech) + 1)
            clips[i, at : at + len(speech)] = speech * 10 ** (rng.uniform(-6, 6) / 20)
        clips[i] = fftconvolve(clips[i], ir)[:CLIP]
        snr = 10 ** ((home.snr_db + rng.uniform(-3, 3)) / 10)
        clips[i] += colored_noise(home.noise_tilt, rng) * np.sqrt(speech_power / snr)
    return standardize(log_mel(clips))[:, None], (kind == 0).astype(np.int64)


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shoal" / "wake-word"


def wake_word(
    num_clients: int = 20,
    seed: int = 0,
    holdout_fraction: float = 0.25,
    clips_per_home: int = 160,
    test_homes: int = TEST_HOMES,
    cache: Path | str | None = None,
) -> FederatedDataset:
    """Homes "home-00".. each with its clips (``holdout_fraction`` held out for federated
    evaluation); ``test`` is ``test_homes`` unseen homes. ``cache``: where generated
    features are kept (default :func:`cache_dir`)."""
    if num_clients < 1 or clips_per_home < 10 or test_homes < 0:
        raise DataError(f"wake_word needs num_clients >= 1, clips_per_home >= 10 and test_homes >= 0, got "
                        f"{num_clients}, {clips_per_home}, {test_homes}")  # fmt: skip
    if not 0.0 <= holdout_fraction < 1.0:
        raise DataError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    params = {
        "generator": GENERATOR_VERSION,
        "espeak": espeak_version(),
        "num_clients": num_clients,
        "seed": seed,
        "clips_per_home": clips_per_home,
        "test_homes": test_homes,
    }
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache) if cache is not None else cache_dir()
    file = path / f"{key}.npz"
    if not file.is_file():
        path.mkdir(parents=True, exist_ok=True)
        arrays = _generate(num_clients, seed, clips_per_home, test_homes)
        tmp = path / f"{key}.{os.getpid()}.tmp.npz"  # written whole, then renamed: no torn cache
        np.savez(tmp, allow_pickle=False, **arrays)
        os.replace(tmp, file)
    with np.load(file) as stored:
        return _federate({k: stored[k] for k in stored.files}, num_clients, seed, holdout_fraction)


def _generate(num_clients: int, seed: int, clips_per_home: int, test_homes: int) -> dict[str, np.ndarray]:
    """Every home's features and labels (x{i}, y{i}; test homes follow the clients), and the
    homes' parameters as JSON."""
    started = time.perf_counter()
    rng = np.random.default_rng([seed, 17])  # 17: the wake word's own stream
    homes = [draw_home(rng) for _ in range(num_clients + test_homes)]
    sizes = np.maximum(40, clips_per_home * rng.lognormal(0, 0.4, len(homes))).astype(int)
    arrays: dict[str, np.ndarray] = {}
    for i, (home, n) in enumerate(zip(homes, sizes, strict=True)):
        home_rng = np.random.default_rng([seed, 17, i])  # one stream per home: order-independent
        share = POSITIVE_SHARE if i < num_clients else 0.5
        arrays[f"x{i}"], arrays[f"y{i}"] = home_clips(home, int(n), home_rng, share)
    arrays["homes"] = np.array(json.dumps([asdict(h) for h in homes]))
    arrays["num_homes"] = np.array(len(homes))
    arrays["generation_s"] = np.array(time.perf_counter() - started)
    return arrays


def _federate(arrays: dict[str, np.ndarray], num_clients: int, seed: int, holdout: float) -> FederatedDataset:
    clients = {}
    for i in range(num_clients):
        x, y = arrays[f"x{i}"], arrays[f"y{i}"]
        order = np.random.default_rng([seed, 17, i, 1]).permutation(len(y))
        cut = len(y) - round(len(y) * holdout)
        kept, held = order[:cut], order[cut:]
        clients[f"home-{i:02d}"] = ClientData(
            train=ArrayDataset.from_numpy(x[kept], y[kept]),
            test=ArrayDataset.from_numpy(x[held], y[held]) if len(held) else None,
        )
    tests = list(range(num_clients, int(arrays["num_homes"])))
    test = None
    if tests:
        test = ArrayDataset.from_numpy(
            np.concatenate([arrays[f"x{i}"] for i in tests]), np.concatenate([arrays[f"y{i}"] for i in tests])
        )
    description: dict[str, str | int | float] = {
        "keyword": KEYWORD,
        "homes": num_clients,
        "test_homes": len(tests),
        "generation_s": round(float(arrays["generation_s"]), 2),
    }
    return FederatedDataset("wake-word", clients, 2, (1, N_MELS, FRAMES), test, description)
