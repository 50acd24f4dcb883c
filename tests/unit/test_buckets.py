"""The encoder's runs: texts of about one length together, so little of a run is padding."""

from __future__ import annotations

import random

from ech0_moe.embeddings import BUCKET_RATIO, BUCKET_ROWS, BUCKET_TOKENS, _buckets


def test_every_text_once_in_runs_of_about_one_length() -> None:
    rng = random.Random(0)
    lengths = [rng.choice([rng.randint(3, 40), rng.randint(60, 256)]) for _ in range(700)]
    runs = list(_buckets(lengths))
    assert sorted(i for run in runs for i in run) == list(range(len(lengths)))
    for run in runs:
        widths = [lengths[i] for i in run]
        assert widths == sorted(widths) and len(run) <= BUCKET_ROWS
        assert len(run) == 1 or (widths[-1] <= BUCKET_RATIO * widths[0] and len(run) * widths[-1] <= BUCKET_TOKENS)
    padded = sum(len(run) * max(lengths[i] for i in run) for run in runs)
    assert padded <= 1.1 * sum(lengths)


def test_one_text_and_none() -> None:
    assert list(_buckets([300])) == [[0]] and list(_buckets([])) == []
