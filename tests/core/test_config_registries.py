"""The config lists the allowed names of ``fl.method``, ``fl.ranks`` and ``fl.sampling`` as plain tuples
(so it imports no strategy module); they must be the strategy registries' keys, in the same order
(the order of the "choose one of" message), plus "optimized" where the planner supplies the values."""

from __future__ import annotations

import dataclasses

import pytest

from fedsketch.config import METHOD_NAMES, RANK_POLICY_NAMES, SAMPLING_POLICY_NAMES, FLConfig, collect
from fedsketch.strategies.methods import METHODS
from fedsketch.strategies.ranks import RANK_POLICIES
from fedsketch.strategies.sampling import SAMPLING_POLICIES

CASES = {
    "method": (METHOD_NAMES, tuple(METHODS)),
    "ranks": (RANK_POLICY_NAMES, (*RANK_POLICIES, "optimized")),
    "sampling": (SAMPLING_POLICY_NAMES, (*SAMPLING_POLICIES, "optimized")),
}


@pytest.mark.parametrize("key", sorted(CASES))
def test_allowed_names_are_the_registry_keys(key):
    config_side, registry_side = CASES[key]
    assert config_side == registry_side, (
        f"fl.{key}: config allows {config_side}, the registry has {registry_side}; "
        "edit the tuple in fedsketch/config/schema.py and the registry together")


@pytest.mark.parametrize("key", sorted(CASES))
def test_the_field_uses_the_tuple(key):
    field = {f.name: f for f in dataclasses.fields(FLConfig)}[key]
    assert field.metadata["choices"] == CASES[key][0]


@pytest.mark.parametrize("key", sorted(CASES))
def test_every_registry_name_validates(key):
    for name in CASES[key][1]:
        _, errors = collect({"fl": {key: name}})
        assert not [e for e in errors if e.startswith(f"fl.{key}:")], (name, errors)
