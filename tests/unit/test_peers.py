"""The routing benchmark's peers: semantic-router's rule as computed here, and (where the
package is installed) the package itself giving the same choices on the same features."""

from __future__ import annotations

import numpy as np
import pytest

from ech0_moe.bench.peers import semantic_router_rule


def test_semantic_router_rule_averages_each_route_over_the_nearest_five_of_all() -> None:
    sims = np.array([[0.9, 0.8, 0.75, 0.1, 0.6, 0.5]])
    index = np.array([0, 1, 1, 2, 0, 2])  # the five nearest: 0.9 (0), 0.8 (1), 0.75 (1), 0.6 (0), 0.5 (2)
    assert np.allclose(semantic_router_rule(sims, index, 4), [[0.75, 0.775, 0.5, 0.0]])


def test_the_package_chooses_as_the_rule_does() -> None:
    pytest.importorskip("semantic_router")
    from ech0_moe.bench.peers import semantic_router_package

    rng = np.random.default_rng(0)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    rows, questions = unit(rng.normal(size=(40, 16))), unit(rng.normal(size=(30, 16)))
    index = np.arange(40) % 4
    ours = semantic_router_rule(questions @ rows.T, index, 4)
    theirs = semantic_router_package(rows, index, ["a", "b", "c", "d"], questions)
    assert (ours.argmax(axis=1) == theirs.argmax(axis=1)).all()
    assert np.allclose(ours, theirs, atol=1e-5)
