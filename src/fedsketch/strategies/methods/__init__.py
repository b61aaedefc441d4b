"""Federated LoRA methods on one harness: how a round samples, sketches, scales and aggregates.

Every method implements :class:`fedsketch.strategies.methods.base.Method`; ``fl.method`` picks
one from :data:`METHODS`. The round loop (``fedsketch.server``) is the same for all of them.
"""

from fedsketch.strategies.methods.base import Method
from fedsketch.strategies.methods.flora import FedStackLoRA
from fedsketch.strategies.methods.fslora import FSLoRA
from fedsketch.strategies.methods.heterolora import HeteroLoRA
from fedsketch.strategies.methods.independent import IndependentSketch

METHODS: dict[str, type[Method]] = {
    "independent": IndependentSketch,
    "fslora": FSLoRA,
    "heterolora": HeteroLoRA,
    "flora": FedStackLoRA,
}


def make_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"fl.method: {name!r} is not allowed; choose one of {', '.join(map(repr, METHODS))}")
    return METHODS[name]()


__all__ = ["METHODS", "Method", "make_method"]
