"""Who is sampled (q) and which sketch rank each client gets (k).

A strategy turns the federation's facts (data weights p, client time profiles, the config)
into an :class:`Allocation`; the engine only executes it. Sampling policies and rank policies
are registered by name in :mod:`fedsketch.strategies.sampling` and
:mod:`fedsketch.strategies.ranks`; ``fl.sampling`` / ``fl.ranks`` pick them.
"""

from fedsketch.strategies.allocation import resolve_allocation
from fedsketch.strategies.base import Allocation, Federation

__all__ = ["Allocation", "Federation", "resolve_allocation"]
