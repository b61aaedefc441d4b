"""Moved to :mod:`fedsketch.runner.pilot` (pilot runs are runs, not engine code); re-exported here."""

from fedsketch.runner.pilot import DEFAULT_FRACTION, PROBE_SIZE, crossing, make_pilot_runner

__all__ = ["DEFAULT_FRACTION", "PROBE_SIZE", "crossing", "make_pilot_runner"]
