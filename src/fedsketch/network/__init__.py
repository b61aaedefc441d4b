"""Wireless system model (PAPER.md §2.4–2.6). Pure numpy: imports no torch."""

from fedsketch.network.bandwidth import allocate_bandwidth
from fedsketch.network.profiles import ClientProfiles, draw_profiles, load_profiles_csv, sketch_times

__all__ = ["ClientProfiles", "allocate_bandwidth", "draw_profiles", "load_profiles_csv", "sketch_times"]
