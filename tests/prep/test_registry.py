"""The one registry helper (:mod:`mammoprep.registry`)."""

from __future__ import annotations

import pytest

from mammoprep.registry import Registry


def test_register_get_and_list_in_order():
    r: Registry[int] = Registry("thing")
    assert r.register("b", 2) == 2
    r.register("a", 1)
    assert r.names() == ["b", "a"] and r.get("a") == 1 and r["b"] == 2
    assert "a" in r and "c" not in r and len(r) == 2 and list(r) == ["b", "a"]
    assert r.items() == [("b", 2), ("a", 1)] and r.values() == [2, 1]


def test_a_name_twice_and_an_unknown_name():
    r: Registry[int] = Registry("thing")
    r.register("a", 1)
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        r.register("a", 3)
    with pytest.raises(KeyError, match="unknown thing 'z'; known: a"):
        r.get("z")


def test_the_registry_s_own_error_for_unknown_names():
    class Unknown(Exception):
        pass

    r: Registry[int] = Registry("task", lambda name, known: Unknown(f"{name} not in {known}"))
    r.register("density", 4)
    with pytest.raises(Unknown, match=r"densty not in \['density'\]"):
        r.get("densty")
