"""Which devices may train: one policy for simulated fleets and for ``shoal server``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EligibilityPolicy:
    """The defaults of production keyboards (Bonawitz et al. 2019): charging, on unmetered
    Wi-Fi, idle; off the charger (when charging is not required) the battery must be at
    least ``min_battery``. ``heartbeat_timeout_s``: how fresh a network device's last
    heartbeat must be (a simulated device is always heard)."""

    require_charging: bool = True
    require_unmetered: bool = True
    require_idle: bool = True
    min_battery: float = 0.0
    heartbeat_timeout_s: float = 60.0

    def eligible(self, charging: Any, unmetered: Any, idle: Any, battery: Any) -> Any:
        """For one device (bools and a float) or a whole fleet (numpy arrays of them)."""
        return (
            (charging | (not self.require_charging))
            & (unmetered | (not self.require_unmetered))
            & (idle | (not self.require_idle))
            & (charging | (battery >= self.min_battery))
        )
