"""Data sets for benchmarks and `router fit`: JSONL files and the packaged QA set."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ech0_moe.errors import Ech0Error
from ech0_moe.paths import package_dir


def load_jsonl(path: str | Path, required: Sequence[str]) -> list[dict[str, Any]]:
    """Read a JSONL file; a bad line is one error naming the file and line."""
    p = Path(path)
    if not p.is_file():
        raise Ech0Error(f"data file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise Ech0Error(f"{p}: not UTF-8 text (byte {exc.start})") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise Ech0Error(f"{p}:{n}: not JSON ({exc.msg})") from None
        except RecursionError:
            raise Ech0Error(f"{p}:{n}: JSON nested too deeply") from None
        if not isinstance(row, dict):
            raise Ech0Error(f"{p}:{n}: expected a JSON object, got {type(row).__name__}")
        missing = [k for k in required if k not in row]
        if missing:
            raise Ech0Error(f"{p}:{n}: missing field {missing[0]!r}")
        rows.append(row)
    if not rows:
        raise Ech0Error(f"{p}: no rows")
    return rows


def load_mapping(path: str | Path) -> dict[str, str]:
    """A YAML mapping of text to text (e.g. MMLU subject -> expert); problems are one error line."""
    import yaml

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise Ech0Error(f"{p}: cannot read the mapping ({type(exc).__name__})") from None
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise Ech0Error(f"{p}: expected a mapping of names to expert names")
    return raw


def _shuffled_by_label(labels: Sequence[str], seed: int) -> list[list[int]]:
    """Row indices grouped by label (labels in name order), each group shuffled with `seed`."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    rng = random.Random(seed)
    groups = []
    for label in sorted(by_label):
        items = by_label[label]
        rng.shuffle(items)
        groups.append(items)
    return groups


def row_label(row: dict[str, Any]) -> str:
    """A labelled row's class: its `expert`, else its `domain`."""
    return str(row.get("expert") or row.get("domain") or "")


def split_dev(rows: list[dict[str, Any]], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Stratified split by label: (fit part, held-out part)."""
    fit, held = [], []
    for items in _shuffled_by_label([row_label(r) for r in rows], seed):
        cut = round(len(items) * fraction)
        fit += [rows[i] for i in items[:cut]]
        held += [rows[i] for i in items[cut:]]
    return fit, held


def sample(rows: list[dict[str, Any]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` rows balanced over labels (round-robin over each label's shuffled rows), in that order."""
    groups = _shuffled_by_label([row_label(r) for r in rows], seed)
    picked: list[dict[str, Any]] = []
    for rank in range(max((len(g) for g in groups), default=0)):
        picked += [rows[g[rank]] for g in groups if rank < len(g)]
    return picked[:n]


def fold_of(labels: Sequence[str], folds: int, seed: int = 0) -> list[int]:
    """Stratified k-fold assignment: the fold of each row, every label spread evenly."""
    fold = [0] * len(labels)
    for items in _shuffled_by_label(labels, seed):
        for j, i in enumerate(items):
            fold[i] = j % folds
    return fold


# the demo's mixed questions and the mode each runs in (also half of `bench finish`)
DEMO_QUESTIONS: tuple[tuple[str, str], ...] = (
    ("What is the integral of 2x from 0 to 3?", "optimized"),
    ("How do white blood cells recognise a bacterial infection?", "optimized"),
    ("Why does a satellite in low orbit need to keep moving fast?", "fast"),
    ("If every bird can fly and penguins are birds, can penguins fly? Is the argument sound?", "basic"),
    ("What is the integral of 2x from 0 to 3?", "optimized"),
    ("What is the voltage across a 4 ohm resistor carrying 3 amps?", "ensemble"),
)

# the benchmarks' data: `ech0_moe.benchmarks` (benchmarks/ in a clone, inside the package once installed)
BENCH_DIR = package_dir("ech0_moe.benchmarks") or Path(__file__).resolve().parent.parent / "benchmarks"
ROUTING_DEV = BENCH_DIR / "routing-dev.jsonl"  # 1,387 MMLU questions (MIT); benchmarks/SOURCES.md


# the QA files over real README files and the part each row belongs to (a row's own `split` wins)
QA_FILES = {"qa.jsonl": "weights", "qa-heldout.jsonl": "held-out", "qa-docs.jsonl": "test"}


def load_qa(folder: Path = BENCH_DIR, files: Sequence[str] = ("qa.jsonl",)) -> list[dict[str, Any]]:
    """QA rows over real README files: question (sharing words with its passage), verbatim
    answer span, paraphrase (sharing few), the doc's text and the row's `split`."""
    rows = []
    for name in files:
        for r in load_jsonl(folder / name, ("doc", "question", "answer")):
            r.setdefault("split", QA_FILES.get(name, name))
            r["text"] = (folder / "docs" / r["doc"]).read_text(encoding="utf-8")
            rows.append(r)
    return rows
