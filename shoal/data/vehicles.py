"""Accelerometer and gyroscope windows from a fleet of cars: one client per vehicle.

A generator, not recorded data: the physics is textbook (gravity, lateral acceleration
``v * yaw rate`` in a turn, pitch under braking), every number a marked assumption. A
window is :data:`SECONDS` s of a 6-axis IMU at :data:`RATE_HZ` Hz, shape ``[6, 75]``:
accelerometer x, y, z in g (specific force: at rest z reads +1) and gyroscope x, y, z in
rad/s, in the sensor's frame. x points forward, y left, z up. Its label is the manoeuvre
in it (:data:`CLASSES`):

===========  ============================================================================
class        signal (vehicle frame; ``a`` is the driver's aggressiveness)
===========  ============================================================================
cruise       road vibration, slow drift of ax, ay (0.03 g)
left-turn    ay = +0.25 g a, gz = +0.5 a rad/s, Hann pulse of 2.4 / a s; a slight brake first
right-turn   the same, mirrored
hard-brake   ax = -0.45 g a for 1.5 / a s, the nose dipping (gy: +, then -)
hard-accel   ax = +0.30 g a for 2.0 / a s, the nose lifting
lane-change  ay = +-0.12 g a, one full sine over 2.8 / a s (out and back); gz follows
bump         a speed bump or pothole: two damped 3 Hz jolts of az (front then rear axle,
             0.15 s apart) and pitch, 0.5 g times the road's roughness factor
===========  ============================================================================

Each event starts at a uniform time within the window and is cut by the window's edges.
**Each vehicle** (all drawn from the seed; the spreads are assumptions):

- driver aggressiveness ``a ~ lognormal(0, 0.25)``: amplitudes times ``a``, durations over it;
- sensor mounting: what is left after the telematics unit's alignment to the vehicle frame
  (the factory's, or the auto-alignment to gravity and braking such units run): yaw
  ``N(0, MOUNT_YAW_DEG)``, pitch and roll ``N(0, MOUNT_TILT_DEG)`` degrees, the same rotation
  for both sensors (so a little gravity leaks into ax and ay). An unaligned aftermarket
  mount (yaw ``U(-20, 20)``) is a harder problem for FedAvg than for pooled training: every
  car's windows are rotated its own way, and 40 rounds reach about 0.60 on new cars
  against 0.88 aligned (the README's "Connected vehicles");
- sensor noise: standard deviations ``lognormal(log 0.02 g, 0.4)`` and
  ``lognormal(log 0.01 rad/s, 0.4)``; a constant bias ``N(0, 0.02 g)`` and ``N(0, 0.01 rad/s)``
  per axis;
- road roughness ``r ~ lognormal(log 0.05 g, 0.5)``: an AR(1) vibration of az (coefficient
  0.6) and of the roll and pitch rates (0.5 rad/s per g);
- its own class mix ``Dirichlet(5 * (.35, .12, .12, .08, .08, .15, .10))``: mostly cruising;
- its number of windows ``lognormal(log 120, 0.5)``, clipped to [30, 400].

Every window is then standardized by fixed constants (:data:`OFFSET`, :data:`SCALE`: gravity
taken off az, each axis divided by its typical spread), as the unit's firmware would scale
its readings, so no statistic of any car's data is needed.

Each vehicle holds out ``holdout_fraction`` of its windows for federated evaluation. The
server's ``test`` is :data:`TEST_VEHICLES` vehicles no client is (drawn from the same
laws, 60 windows each, the base class mix): how the model does on a car it never saw.
"""

from __future__ import annotations

import numpy as np

from shoal.data.datasets import ArrayDataset, ClientData, FederatedDataset
from shoal.errors import DataError

CLASSES = ("cruise", "left-turn", "right-turn", "hard-brake", "hard-accel", "lane-change", "bump")
CLASS_MIX = (0.35, 0.12, 0.12, 0.08, 0.08, 0.15, 0.10)  # the fleet's average: mostly cruising
MIX_CONCENTRATION = 5.0  # Dirichlet: smaller makes each vehicle's mix more its own
RATE_HZ, SECONDS = 25, 3.0
STEPS = round(RATE_HZ * SECONDS)  # 75 samples a window
CHANNELS = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")
TEST_VEHICLES, TEST_WINDOWS = 50, 60
MOUNT_YAW_DEG, MOUNT_TILT_DEG = 2.0, 1.0  # residual misalignment after alignment (assumption)
# [6, 1]: the fleet's typical reading per axis (g, rad/s) and its spread, fixed in advance
OFFSET = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])[:, None]
SCALE = np.array([0.12, 0.12, 0.08, 0.04, 0.05, 0.13])[:, None]

_T = np.arange(STEPS) / RATE_HZ  # [75] seconds into the window


def vehicles(num_clients: int = 100, seed: int = 0, holdout_fraction: float = 0.2) -> FederatedDataset:
    """Vehicles ``"car-0"`` .. ``"car-{n-1}"``, each its own driver, mounting, sensor and
    road; ``test`` is :data:`TEST_VEHICLES` more vehicles."""
    if num_clients < 1:
        raise DataError(f"num_clients must be >= 1, got {num_clients}")
    if not 0.0 <= holdout_fraction < 1.0:
        raise DataError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    clients = {}
    for k in range(num_clients):
        rng = np.random.default_rng(np.random.SeedSequence((seed, k)))
        car = Vehicle(rng)
        n = int(np.clip(rng.lognormal(np.log(120.0), 0.5), 30, 400))
        x, y = car.windows(rng.choice(len(CLASSES), size=n, p=car.mix), rng)
        x = standardized(x)
        cut = round(n * (1.0 - holdout_fraction))
        held = ArrayDataset.from_numpy(x[cut:], y[cut:]) if cut < n else None
        clients[f"car-{k}"] = ClientData(train=ArrayDataset.from_numpy(x[:cut], y[:cut]), test=held)
    xs, ys = [], []
    for j in range(TEST_VEHICLES):  # a stream of its own: the test set is the same for any num_clients
        rng = np.random.default_rng(np.random.SeedSequence((seed, j, 1)))
        x, y = Vehicle(rng).windows(rng.choice(len(CLASSES), size=TEST_WINDOWS, p=CLASS_MIX), rng)
        xs.append(standardized(x))
        ys.append(y)
    test = ArrayDataset.from_numpy(np.concatenate(xs), np.concatenate(ys))
    description = {"vehicles": num_clients, "rate_hz": RATE_HZ, "seconds": SECONDS}
    return FederatedDataset("vehicles", clients, len(CLASSES), (len(CHANNELS), STEPS), test, description)


def standardized(x: np.ndarray) -> np.ndarray:
    """Windows in physical units [n, 6, T] on the model's scale (see the docstring)."""
    out: np.ndarray = ((x - OFFSET) / SCALE).astype(np.float32)
    return out


class Vehicle:
    """One car: its driver, sensor mounting, sensor and road, and its class mix."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.aggressiveness = float(rng.lognormal(0.0, 0.25))
        yaw, pitch, roll = np.radians(
            [rng.normal(0, MOUNT_YAW_DEG), rng.normal(0, MOUNT_TILT_DEG), rng.normal(0, MOUNT_TILT_DEG)]
        )
        self.mounting = _rotation(yaw, pitch, roll)  # [3, 3]: vehicle frame -> sensor frame
        self.noise = np.array([rng.lognormal(np.log(0.02), 0.4)] * 3 + [rng.lognormal(np.log(0.01), 0.4)] * 3)
        self.bias = np.concatenate([rng.normal(0, 0.02, 3), rng.normal(0, 0.01, 3)])
        self.roughness = float(rng.lognormal(np.log(0.05), 0.5))
        self.mix = rng.dirichlet(MIX_CONCENTRATION * np.asarray(CLASS_MIX))

    def windows(self, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One window per label, as the sensor reads it: [n, 6, 75] and the labels [n]."""
        n = len(labels)
        acc, gyro = np.zeros((n, 3, STEPS)), np.zeros((n, 3, STEPS))  # vehicle frame
        acc[:, 2] = 1.0  # gravity: specific force at rest reads +1 g upward
        self._road(acc, gyro, rng)
        a = self.aggressiveness
        for i, label in enumerate(labels):
            _manoeuvre(CLASSES[label], a, self.roughness, acc[i], gyro[i], rng)
        # rotate both sensors into the mounting's frame: [3, 3] x [n, 3, T] -> [n, 3, T]
        x = np.concatenate([np.einsum("ij,njt->nit", self.mounting, m) for m in (acc, gyro)], axis=1)
        x += self.bias[None, :, None] + self.noise[None, :, None] * rng.standard_normal(x.shape)
        return x, labels.astype(np.int64)

    def _road(self, acc: np.ndarray, gyro: np.ndarray, rng: np.random.Generator) -> None:
        """AR(1) vibration from the road surface on az and on the roll and pitch rates."""
        shocks = rng.standard_normal((acc.shape[0], 3, STEPS)) * self.roughness
        shocks[:, :2] *= 0.5  # rad/s of roll and pitch per g of vertical vibration (assumption)
        vib = np.zeros_like(shocks)
        for t in range(1, STEPS):
            vib[..., t] = 0.6 * vib[..., t - 1] + shocks[..., t]
        acc[:, 2] += vib[:, 2]
        gyro[:, :2] += vib[:, :2]
        phase = rng.uniform(0, 3, (acc.shape[0], 1, 1))
        acc[:, :2] += rng.normal(0, 0.03, (acc.shape[0], 2, 1)) * np.sin(np.pi * _T / SECONDS + phase)  # slow
        # speed and curvature changes of ordinary driving


def _manoeuvre(
    name: str, a: float, roughness: float, acc: np.ndarray, gyro: np.ndarray, rng: np.random.Generator
) -> None:
    """Add one manoeuvre's signal to a window's [3, 75] accelerometer and gyroscope."""
    amp = a * rng.uniform(0.7, 1.3)
    if name in ("left-turn", "right-turn"):
        side = 1.0 if name == "left-turn" else -1.0
        pulse = _hann(2.4 / a, rng)
        acc[1] += side * 0.25 * amp * pulse
        gyro[2] += side * 0.5 * amp * pulse
        acc[0] -= 0.05 * amp * np.roll(pulse, -RATE_HZ // 2)  # slowing into the corner
    elif name in ("hard-brake", "hard-accel"):
        sign, peak, length = (-1.0, 0.45, 1.5) if name == "hard-brake" else (1.0, 0.30, 2.0)
        pulse = _hann(length / a, rng)
        acc[0] += sign * peak * amp * pulse
        gyro[1] -= sign * 0.03 * amp * np.gradient(pulse, 1.0 / RATE_HZ)  # the nose dips or lifts
    elif name == "lane-change":
        side = rng.choice([-1.0, 1.0])
        wave = _hann(2.8 / a, rng, full_sine=True)
        acc[1] += side * 0.12 * amp * wave
        gyro[2] += side * 0.05 * amp * wave
    elif name == "bump":
        start = rng.uniform(0.2, SECONDS - 0.8)
        for axle in (0.0, 0.15):  # front wheels, then rear (wheelbase over speed)
            dt = _T - start - axle
            jolt = np.where(dt >= 0, np.exp(-6.0 * dt) * np.sin(2 * np.pi * 3.0 * dt), 0.0)
            acc[2] += 0.5 * amp * (roughness / 0.05) ** 0.5 * jolt
            gyro[1] += (0.3 if axle == 0 else -0.3) * amp * jolt


def _hann(length_s: float, rng: np.random.Generator, full_sine: bool = False) -> np.ndarray:
    """A pulse of ``length_s`` s (at most the window) at a uniform start: [75]; a Hann bump,
    or one period of a sine with the same envelope (out and back)."""
    length = min(length_s * rng.uniform(0.8, 1.2), SECONDS - 0.2)
    start = rng.uniform(0.0, SECONDS - length)
    phase = np.clip((_T - start) / length, 0.0, 1.0)
    if full_sine:
        return np.sin(2 * np.pi * phase) * np.sin(np.pi * phase)
    return np.sin(np.pi * phase) ** 2


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Z-Y-X rotation matrix: [3, 3]."""
    (cy, cp, cr), (sy, sp, sr) = np.cos([yaw, pitch, roll]), np.sin([yaw, pitch, roll])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    out: np.ndarray = rz @ ry @ rx
    return out
