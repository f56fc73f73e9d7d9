"""Simulated clients as a fleet of edge devices on a virtual clock.

A fleet (``shoal/fleet/data/phones.toml``, ``iot.toml``, or a file of your own) says what
devices there are (compute tiers, networks, batteries) and when they may train (idle,
charging, on unmetered Wi-Fi, by local hour across time zones). ``fleet = "phones"`` in a
config wraps the run's backend in a :class:`~shoal.fleet.backend.FleetBackend`: each
round takes the virtual time its devices' downloads, training and uploads take, devices
leave mid-task when their eligible stretch ends, and ``strategy.deadline_s`` and
``strategy.over_selection`` decide what a late device costs.
"""

from typing import TYPE_CHECKING

from shoal._lazy import exports

_WHERE = {
    "FleetSpec": "shoal.fleet.spec",
    "load_fleet": "shoal.fleet.spec",
    "DeviceProfile": "shoal.fleet.devices",
    "Fleet": "shoal.fleet.devices",
    "FleetBackend": "shoal.fleet.backend",
    "RoundPolicy": "shoal.fleet.backend",
    "train_flops_per_example": "shoal.fleet.cost",
}
__getattr__, __dir__ = exports(globals(), _WHERE)

if TYPE_CHECKING:  # what _WHERE loads, for type checkers
    from shoal.fleet.backend import FleetBackend, RoundPolicy
    from shoal.fleet.cost import train_flops_per_example
    from shoal.fleet.devices import DeviceProfile, Fleet
    from shoal.fleet.spec import FleetSpec, load_fleet

__all__ = [
    "DeviceProfile",
    "Fleet",
    "FleetBackend",
    "FleetSpec",
    "RoundPolicy",
    "load_fleet",
    "train_flops_per_example",
]
