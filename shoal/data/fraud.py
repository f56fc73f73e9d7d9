"""Card transactions at a consortium of banks, each with its own base rate and fraud mix.

A generator, not a real data set: every number below is an assumption chosen to look like
card-fraud data (a fraud rate of tenths of a percent to a few percent, a handful of known
fraud patterns, customers whose legitimate habits overlap them), so that each bank is too
small or too one-sided to learn every pattern alone. Each bank (one client) is a row of
:data:`BANKS`:

============  ============  =========  ==================================  ==================================
bank          transactions  fraud      customers: student / family /       fraud patterns: card testing /
                            rate       traveller / retiree                 takeover / CNP foreign / night ATM
============  ============  =========  ==================================  ==================================
megabank      40,000        0.6%       .20 / .45 / .15 / .20               .25 / .25 / .25 / .25
neobank       15,000        3.0%       .55 / .30 / .10 / .05               .45 / .45 / .10 / .00
regional      20,000        0.3%       .10 / .45 / .05 / .40               .05 / .15 / .10 / .70
travelcard    10,000        1.5%       .05 / .20 / .65 / .10               .10 / .10 / .75 / .05
creditunion   20,000        0.2%       .05 / .35 / .05 / .55               .00 / .80 / .10 / .10
fintech       12,000        2.0%       .40 / .35 / .20 / .05               .80 / .10 / .10 / .00
studentbank   10,000        1.0%       .80 / .10 / .05 / .05               .30 / .30 / .30 / .10
privatebank   8,000         0.5%       .00 / .30 / .40 / .30               .00 / .60 / .40 / .00
============  ============  =========  ==================================  ==================================

With more than eight clients, bank ``k`` repeats row ``k % 8`` with its own draws
(``"megabank-2"``, ...). Every bank's count of frauds is exactly ``round(rate * n)``, and
its holdout (``holdout_fraction``) is stratified, so its train and holdout have its rate.

**Customers** (:data:`SEGMENTS`): a segment sets the merchant-category mix, the amounts'
log-normal scale, the hour of day (normal around a peak), the share of foreign
transactions, the distance from home, the daily velocity, the account's age and the
cardholder's age. **A legitimate transaction**: category from the mix; amount
``lognormal(log(median of the category) + segment shift, 0.6)``; card present 97% of the
time (0% online, 40% travel); a new device 2%; a failed PIN or CVV ``Poisson(0.05)`` a day.
**A fraud** is a transaction of one of the bank's own customers with its pattern laid over:

- card testing: amounts of a few dollars (``lognormal(log 2, 0.6)``), online, card not
  present, a burst of ``1 + Poisson(5)`` transactions in the hour, failed CVVs;
- account takeover: a new device (85%), an amount about 5x the customer's usual, online
  electronics or travel, far from home;
- card-not-present foreign: foreign (90%), online, thousands of km from home;
- night-time ATM (a skimmed card): cash at 0-5 h, round amounts near 400, card present,
  80 km or more from home.

Each trait of a pattern is laid over with a probability (``_STRENGTH``), so some frauds
look ordinary and some customers look like fraud (travellers abroad, students buying apps
at night): the classes overlap and no bank scores perfectly.

**Features** (:data:`FEATURES`, 20): log amount, hour as sine and cosine, card present,
foreign, log distance from home, log velocity in the last hour and day, log account age,
new device, log of the amount over the customer's usual, log failed authentications
today, cardholder age, and one-hot merchant category (7). All are standardized with the
consortium's pooled training means and standard deviations (one secure sum would give
the banks these without pooling data); every bank, holdout and the server's test set use
the same ones. Label 1 is fraud.

The server's ``test`` is a separate draw from every bank (a fifth of its size, at its
rate): a consortium's shared benchmark, scored as PR-AUC since accuracy would be 99%
for a model that never flags anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shoal.data.datasets import ArrayDataset, ClientData, FederatedDataset
from shoal.errors import DataError

SEGMENTS = ("student", "family", "traveller", "retiree")
CATEGORIES = ("grocery", "fuel", "restaurant", "online", "travel", "atm", "electronics")
PATTERNS = ("card-testing", "account-takeover", "cnp-foreign", "night-atm")
FEATURES = (
    "log_amount",
    "hour_sin",
    "hour_cos",
    "card_present",
    "foreign",
    "log_distance_km",
    "log_txn_last_hour",
    "log_txn_last_day",
    "log_account_age_days",
    "new_device",
    "log_amount_over_usual",
    "log_failed_auth_today",
    "cardholder_age",
    *(f"category_{c}" for c in CATEGORIES),
)
TEST_SHARE = 0.2  # the server's test set: this share of each bank's size, drawn apart

_CATEGORY_MEDIAN_USD = np.array([45.0, 50.0, 30.0, 40.0, 250.0, 100.0, 150.0])
_ONLINE, _TRAVEL, _ATM, _ELECTRONICS = 3, 4, 5, 6
_STRENGTH = 0.85  # the chance that each trait of a fraud pattern is laid over


@dataclass(frozen=True)
class Segment:
    """A kind of customer: what and when they buy."""

    categories: tuple[float, ...]  # over CATEGORIES
    amount_shift: float  # added to the log of each category's median amount
    hour_peak: float  # local hour their purchases centre on
    hour_sd: float
    foreign: float  # share of transactions abroad
    distance_km: float  # median distance from home
    per_day: float  # mean transactions a day (velocity)
    account_years: float  # median age of the account
    age: float  # mean cardholder age, years


#                   grocery fuel  restaurant online travel atm  electronics
SEGMENT_TABLE = {
    "student": Segment((0.15, 0.05, 0.25, 0.35, 0.05, 0.05, 0.10), -0.5, 17, 5, 0.03, 4, 4.0, 1.5, 22),
    "family": Segment((0.35, 0.20, 0.15, 0.15, 0.03, 0.07, 0.05), 0.0, 14, 4, 0.02, 6, 3.0, 8.0, 42),
    "traveller": Segment((0.10, 0.10, 0.25, 0.15, 0.25, 0.05, 0.10), 0.6, 13, 5, 0.30, 40, 4.0, 6.0, 45),
    "retiree": Segment((0.45, 0.15, 0.15, 0.05, 0.05, 0.13, 0.02), 0.0, 11, 3, 0.02, 3, 1.5, 20.0, 70),
}


@dataclass(frozen=True)
class Bank:
    """One row of the module docstring's table."""

    name: str
    transactions: int
    fraud_rate: float
    segments: tuple[float, float, float, float]  # over SEGMENTS
    patterns: tuple[float, float, float, float]  # over PATTERNS

    def __post_init__(self) -> None:
        for kind, mix in (("segments", self.segments), ("patterns", self.patterns)):
            if not np.isclose(sum(mix), 1.0) or min(mix) < 0:
                raise DataError(f"bank {self.name}: {kind} must be shares summing to 1, got {mix}")


BANKS = (
    Bank("megabank", 40_000, 0.006, (0.20, 0.45, 0.15, 0.20), (0.25, 0.25, 0.25, 0.25)),
    Bank("neobank", 15_000, 0.030, (0.55, 0.30, 0.10, 0.05), (0.45, 0.45, 0.10, 0.00)),
    Bank("regional", 20_000, 0.003, (0.10, 0.45, 0.05, 0.40), (0.05, 0.15, 0.10, 0.70)),
    Bank("travelcard", 10_000, 0.015, (0.05, 0.20, 0.65, 0.10), (0.10, 0.10, 0.75, 0.05)),
    Bank("creditunion", 20_000, 0.002, (0.05, 0.35, 0.05, 0.55), (0.00, 0.80, 0.10, 0.10)),
    Bank("fintech", 12_000, 0.020, (0.40, 0.35, 0.20, 0.05), (0.80, 0.10, 0.10, 0.00)),
    Bank("studentbank", 10_000, 0.010, (0.80, 0.10, 0.05, 0.05), (0.30, 0.30, 0.30, 0.10)),
    Bank("privatebank", 8_000, 0.005, (0.00, 0.30, 0.40, 0.30), (0.00, 0.60, 0.40, 0.00)),
)


def fraud(num_clients: int = len(BANKS), seed: int = 0, holdout_fraction: float = 0.2) -> FederatedDataset:
    """Banks ``BANKS[k % 8]`` for k < ``num_clients``, each holding out a stratified
    ``holdout_fraction``; ``test`` draws a fifth of each bank's size apart."""
    if num_clients < 1:
        raise DataError(f"num_clients must be >= 1, got {num_clients}")
    if not 0.0 <= holdout_fraction < 1.0:
        raise DataError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    names, trains, holdouts, tests = [], [], [], []
    for k in range(num_clients):
        bank = BANKS[k % len(BANKS)]
        names.append(bank.name if k < len(BANKS) else f"{bank.name}-{k // len(BANKS) + 1}")
        rng = np.random.default_rng(np.random.SeedSequence((seed, k)))
        x, y = transactions(bank, bank.transactions, rng)
        keep = _stratified_cut(y, 1.0 - holdout_fraction, rng)
        trains.append((x[keep], y[keep]))
        holdouts.append((x[~keep], y[~keep]))
        tests.append(transactions(bank, round(bank.transactions * TEST_SHARE), rng))
    pooled = np.concatenate([x for x, _ in trains])
    mean, std = pooled.mean(0), pooled.std(0) + 1e-6  # [20]: the consortium's secure-sum statistics

    def standard(part: tuple[np.ndarray, np.ndarray]) -> ArrayDataset:
        return ArrayDataset.from_numpy((part[0] - mean) / std, part[1])

    clients = {
        name: ClientData(train=standard(tr), test=standard(ho) if len(ho[1]) else None)
        for name, tr, ho in zip(names, trains, holdouts, strict=True)
    }
    test = standard((np.concatenate([x for x, _ in tests]), np.concatenate([y for _, y in tests])))
    rate = float(sum(y.sum() for _, y in trains) / sum(len(y) for _, y in trains))
    return FederatedDataset(
        "fraud", clients, 2, (len(FEATURES),), test, {"banks": num_clients, "fraud_rate": round(rate, 5)}
    )


def transactions(bank: Bank, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` transactions of ``bank``'s customers, exactly ``round(rate * n)`` of them fraud,
    in a random order: features [n, 20] (not yet standardized) and labels [n]."""
    frauds = round(bank.fraud_rate * n)
    segment = rng.choice(len(SEGMENTS), size=n, p=bank.segments)
    cols = _legitimate(segment, rng)
    pattern = rng.choice(len(PATTERNS), size=frauds, p=bank.patterns)
    victims = rng.permutation(n)[:frauds]
    for p in range(len(PATTERNS)):
        _lay_over(PATTERNS[p], cols, victims[pattern == p], rng)
    y = np.zeros(n, dtype=np.int64)
    y[victims] = 1
    return _features(cols), y


def _legitimate(segment: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Each row's raw attributes, drawn from its customer's segment."""
    n = len(segment)
    seg = [SEGMENT_TABLE[s] for s in SEGMENTS]

    def per(attr: str) -> np.ndarray:
        values: np.ndarray = np.array([getattr(s, attr) for s in seg])[segment]
        return values

    cum = np.cumsum([s.categories for s in seg], axis=1)[segment]  # [n, 7]
    category = (rng.random((n, 1)) > cum).sum(1).clip(0, len(CATEGORIES) - 1)
    shift = per("amount_shift")
    foreign = rng.random(n) < per("foreign")
    present_p = np.select([category == _ONLINE, category == _TRAVEL], [0.0, 0.4], 0.97)
    return {
        "category": category,
        "amount": np.exp(rng.normal(np.log(_CATEGORY_MEDIAN_USD[category]) + shift, 0.6)),
        "usual": np.exp(rng.normal(np.log(60.0) + shift, 0.4)),  # the customer's typical amount
        "hour": rng.normal(per("hour_peak"), per("hour_sd")) % 24.0,
        "card_present": (rng.random(n) < present_p).astype(np.float64),
        "foreign": foreign.astype(np.float64),
        "distance": np.exp(rng.normal(np.log(per("distance_km")), 1.0)) * np.where(foreign, 50.0, 1.0),
        "last_hour": rng.poisson(0.3, n).astype(np.float64),
        "last_day": rng.poisson(per("per_day")).astype(np.float64),
        "account_days": np.exp(rng.normal(np.log(per("account_years") * 365.0), 0.7)),
        "new_device": (rng.random(n) < 0.02).astype(np.float64),
        "failed_auth": rng.poisson(0.05, n).astype(np.float64),
        "age": np.clip(rng.normal(per("age"), 6.0), 18.0, 95.0),
    }


def _lay_over(pattern: str, cols: dict[str, np.ndarray], rows: np.ndarray, rng: np.random.Generator) -> None:
    """Overwrite ``rows`` of ``cols`` with ``pattern``'s traits, each with chance _STRENGTH."""
    n = len(rows)

    def put(key: str, value: np.ndarray | float | int) -> None:
        hit = rng.random(n) < _STRENGTH
        cols[key][rows[hit]] = np.broadcast_to(value, (n,))[hit]

    online_or = np.where(rng.random(n) < 0.7, _ONLINE, _ELECTRONICS)
    if pattern == "card-testing":
        put("amount", np.exp(rng.normal(np.log(2.0), 0.6, n)))
        put("category", online_or)
        put("card_present", 0.0)
        put("last_hour", 1.0 + rng.poisson(5.0, n))
        put("last_day", cols["last_day"][rows] + rng.poisson(8.0, n))
        put("failed_auth", 1.0 + rng.poisson(1.5, n))
        put("hour", rng.uniform(0, 24, n))
    elif pattern == "account-takeover":
        put("new_device", 1.0)
        put("amount", cols["usual"][rows] * np.exp(rng.normal(np.log(5.0), 0.6, n)))
        u = rng.random(n)
        put("category", np.select([u < 0.3, u < 0.7], [_TRAVEL, _ELECTRONICS], _ONLINE))
        put("card_present", 0.0)
        put("distance", np.exp(rng.normal(np.log(300.0), 1.2, n)))
    elif pattern == "cnp-foreign":
        put("foreign", 1.0)
        put("card_present", 0.0)
        put("category", online_or)
        put("distance", np.exp(rng.normal(np.log(3000.0), 0.8, n)))
        put("amount", np.exp(rng.normal(np.log(120.0), 0.8, n)))
    else:  # night-atm
        put("category", _ATM)
        put("card_present", 1.0)
        put("hour", rng.uniform(0, 5, n))
        put("amount", np.round(np.exp(rng.normal(np.log(400.0), 0.4, n)) / 20.0) * 20.0)
        put("distance", 80.0 * np.exp(np.abs(rng.normal(0, 1.0, n))))
        put("last_hour", 1.0 + rng.poisson(2.0, n))


def _features(cols: dict[str, np.ndarray]) -> np.ndarray:
    """The raw attributes as the 20 FEATURES, in order: [n, 20]."""
    angle = 2.0 * np.pi * cols["hour"] / 24.0  # 23 h and 0 h are neighbours
    category = cols["category"].astype(np.int64)
    return np.column_stack(
        [
            np.log(cols["amount"]),
            np.sin(angle),
            np.cos(angle),
            cols["card_present"],
            cols["foreign"],
            np.log1p(cols["distance"]),
            np.log1p(cols["last_hour"]),
            np.log1p(cols["last_day"]),
            np.log(cols["account_days"]),
            cols["new_device"],
            np.log(cols["amount"] / cols["usual"]),
            np.log1p(cols["failed_auth"]),
            cols["age"],
            np.eye(len(CATEGORIES))[category],
        ]
    )


def _stratified_cut(y: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """A mask keeping ``round(share * count)`` of each class, chosen at random."""
    keep = np.zeros(len(y), dtype=bool)
    for label in (0, 1):
        rows = rng.permutation(np.flatnonzero(y == label))
        keep[rows[: round(share * len(rows))]] = True
    return keep
