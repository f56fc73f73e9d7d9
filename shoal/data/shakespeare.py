"""Natural clients from a play: each speaking role of *As You Like It* is one device.

The LEAF Shakespeare task (Caldas et al. 2018) on the one play that ships here: the
public-domain text of the Canterbury corpus, as packaged in the ``brotli`` source archive
(``tests/testdata/asyoulik.txt``), copied into ``shoal/data/text/``. A role's speeches,
stage directions removed and whitespace collapsed, form its text; every 80-character
window is one sample and the character after it the label (next-character prediction).
Each role keeps the last 10% of its text for testing, cut on the text so no test
character ever appears in a training window. Roles are very unequal (Rosalind speaks a
quarter of the play, Hymen two lines): non-IID in quantity and in style, as on phones.
"""

from __future__ import annotations

import re
from importlib import resources

import numpy as np

from shoal.data.datasets import ArrayDataset, ClientData, FederatedDataset
from shoal.errors import DataError

SEQ_LEN = 80
VOCAB = " !&',-.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # every character the play uses
_SPEAKER = re.compile(r"^([A-Z][A-Za-z .'()]*)\t(.*)$")  # "ROSALIND\tWhy, how now..."
_STAGE = re.compile(r"\[[^\]]*\]")  # [Enter ORLANDO], [Aside], [Exeunt]


def play_text() -> str:
    return (resources.files("shoal.data") / "text" / "asyoulik.txt").read_text(encoding="ascii")


def roles(text: str) -> dict[str, str]:
    """Each role's speeches in order, as one string."""
    lines: dict[str, list[str]] = {}
    current: list[str] | None = None  # the lines of the role now speaking
    for line in text[text.index("ACT I\n") :].split("\n"):  # skip the dramatis personae
        match = _SPEAKER.match(line)
        if match and not match.group(1).startswith(("ACT ", "SCENE")):
            current = lines.setdefault(match.group(1), [])
            current.append(match.group(2))
        elif line.startswith("\t") and current is not None:
            current.append(line)
        else:  # a blank line, an act or a scene: the speech is over
            current = None
    return {role: " ".join(_STAGE.sub(" ", " ".join(ls)).split()) for role, ls in lines.items()}


def encode_text(text: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(VOCAB)}
    unknown = sorted(set(text) - set(index))
    if unknown:
        raise DataError(f"characters {unknown} are outside the vocabulary")
    return np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))


def windows(ids: np.ndarray, seq_len: int = SEQ_LEN) -> ArrayDataset:
    """Every ``seq_len`` window of ``ids`` and the id that follows it."""
    n = len(ids) - seq_len
    if n < 1:
        return ArrayDataset.from_tokens(np.zeros((0, seq_len), np.int64), np.zeros(0, np.int64))
    x = np.lib.stride_tricks.sliding_window_view(ids, seq_len)[:n]
    return ArrayDataset.from_tokens(x, ids[seq_len:])


def shakespeare(
    num_clients: int | None = None,
    test_fraction: float = 0.1,
    seq_len: int = SEQ_LEN,
) -> FederatedDataset:
    """One client per role with at least ``2 * seq_len`` characters; ``num_clients`` keeps
    the largest roles. ``test`` is the union of the roles' test windows."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    texts = {r: t for r, t in roles(play_text()).items() if len(t) >= 2 * seq_len / test_fraction}
    ranked = sorted(texts, key=lambda r: (-len(texts[r]), r))[: num_clients or len(texts)]
    clients, tests = {}, []
    for role in ranked:
        ids = encode_text(texts[role])
        cut = round(len(ids) * (1 - test_fraction))
        test = windows(ids[cut:], seq_len)
        # a client id is a device name (certificates, token files): "First Lord" -> "First_Lord"
        clients[role.replace(" ", "_")] = ClientData(train=windows(ids[:cut], seq_len), test=test)
        tests.append(test)
    union = ArrayDataset.from_tokens(
        np.concatenate([t.x.numpy() for t in tests]), np.concatenate([t.y.numpy() for t in tests])
    )
    return FederatedDataset(
        "shakespeare",
        clients,
        len(VOCAB),
        (seq_len,),
        union,
        {"play": "As You Like It", "roles": len(clients)},
    )
