"""Simulated GPUs: machine profiles, MIG placement rules and fault injection over a shared state directory."""

from libs.devices.simulated.backend import SimulatedBackend
from libs.devices.simulated.machine import MachineProfile
from libs.devices.simulated.profiles import builtin_profiles, load_profile, parse_profile

__all__ = ["MachineProfile", "SimulatedBackend", "builtin_profiles", "load_profile", "parse_profile"]
