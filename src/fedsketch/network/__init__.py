"""Wireless system model (PAPER.md §2.4–2.6). Pure numpy: imports no torch."""

from fedsketch.network.bandwidth import allocate_bandwidth
from fedsketch.network.profiles import (
    ClientProfiles,
    draw_profiles,
    load_profiles_csv,
    profiles_from_network,
    sketch_times,
)
from fedsketch.network.round_time import RoundTimeEstimate, expected_round_time

__all__ = [
    "ClientProfiles",
    "RoundTimeEstimate",
    "allocate_bandwidth",
    "draw_profiles",
    "expected_round_time",
    "load_profiles_csv",
    "profiles_from_network",
    "sketch_times",
]
