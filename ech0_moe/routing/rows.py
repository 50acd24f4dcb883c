"""What the router learns each expert from, as (text, expert) rows: the pool's own texts
(descriptions, the topics they list, examples), our written routing examples by domain
(`data/router_examples.yaml`), labelled data (`router: {data: FILE}`) and what the user taught
(`routing.taught`). Fitting on them is `fit.py`."""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ech0_moe.config import PoolConfig
from ech0_moe.errors import ConfigError
from ech0_moe.owners import LOCAL, SHARED
from ech0_moe.routing import taught

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
EXAMPLES_FILE = DATA_DIR / "router_examples.yaml"


@functools.cache
def written_examples() -> dict[str, list[str]]:
    """Our routing examples, by domain (package data: read once)."""
    return yaml.safe_load(EXAMPLES_FILE.read_text(encoding="utf-8"))


def experts_by_domain(config: PoolConfig) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in config.experts:
        out.setdefault(e.domain, []).append(e.name)
    return out


def label_rows(config: PoolConfig, rows: Sequence[dict[str, Any]], where: str) -> list[tuple[str, str]]:
    """(question, expert) pairs from rows with `question` and `expert` or `domain`;
    an unknown label is a `ConfigError` naming the row."""
    names = set(config.names)
    domains = experts_by_domain(config)
    out: list[tuple[str, str]] = []
    for n, row in enumerate(rows, 1):
        question = row.get("question") if isinstance(row, dict) else None
        if not isinstance(question, str) or not question.strip():
            raise ConfigError(f"{where}: row {n}: needs a 'question' string")
        if isinstance(row.get("expert"), str):
            if row["expert"] not in names:
                raise ConfigError(f"{where}: row {n}: expert {row['expert']!r} is not in the pool")
            out.append((question, row["expert"]))
        elif isinstance(row.get("domain"), str):
            if row["domain"] not in domains:
                raise ConfigError(f"{where}: row {n}: no expert of domain {row['domain']!r} in the pool")
            out += [(question, name) for name in domains[row["domain"]]]
        else:
            raise ConfigError(f"{where}: row {n}: needs an 'expert' or a 'domain' label")
    return out


# how far one owner's feedback reaches into everyone else's routing: at most this many of its rows
# per expert, and all owners' together never more than the pool's own rows for that expert
# (`bench injection`: 50 wrong labels from one owner move no other owner's question)
SHARED_FEEDBACK_PER_OWNER = 3


def taught_rows(config: PoolConfig, rows: Sequence[dict[str, Any]], asker: str = LOCAL) -> list[tuple[str, str]]:
    """(text, expert) pairs from `routing.taught` rows for `asker`'s routing: a document chunk
    teaches every expert of its domain (a domain the pool lacks: none), feedback the expert it
    names (if still in the pool). Its own rows and the shared namespace's documents count whole;
    other owners' feedback only within the bound above (deduplicated); their documents never."""
    domains = experts_by_domain(config)
    own_rows = Counter(e for _, e in pool_rows(config, written=False))
    out: dict[tuple[str, str], None] = {}  # ordered and deduplicated
    lent: Counter[str] = Counter()  # other owners' feedback rows, per expert
    lent_by: Counter[tuple[str, str]] = Counter()  # ... per (owner, expert)
    for r in rows:
        owner = taught.row_owner(r)
        if r.get("expert"):
            if r["expert"] not in config.names or (r["text"], r["expert"]) in out:
                continue
            if owner != asker:
                key = (owner, r["expert"])
                if lent_by[key] >= SHARED_FEEDBACK_PER_OWNER or lent[r["expert"]] >= own_rows[r["expert"]]:
                    continue
                lent_by[key] += 1
                lent[r["expert"]] += 1
            out[(r["text"], r["expert"])] = None
        elif owner in (asker, SHARED):
            out.update(((r["text"], name), None) for name in domains.get(r.get("domain", ""), []))
    return list(out)


def read_labels(config: PoolConfig, path: str | Path) -> list[tuple[str, str]]:
    """The labelled JSONL file `path` as (question, expert) pairs; problems are one `ConfigError` line."""
    from ech0_moe.datasets import load_jsonl
    from ech0_moe.errors import Ech0Error

    try:
        rows = load_jsonl(path, ())
    except Ech0Error as exc:
        raise ConfigError(f"router data: {exc}") from None
    return label_rows(config, rows, str(path))


_LEAD = re.compile(r":\s|\s[-\u2013\u2014]\s")


def topic_phrases(description: str) -> list[str]:
    """The topics a description lists, each as a text of its own: "Mathematics: algebra, calculus
    and geometry." -> ["algebra", "calculus", "geometry"]. One sentence averages its topics into
    one vector; each topic alone is an example a question on it lands near."""
    parts = _LEAD.split(description, maxsplit=1)  # "Law - contracts, ...", "Law: contracts, ..."
    listed = parts[-1]
    if len(parts) == 1 and listed.count(",") < 2:  # a sentence, not a list of topics
        return []
    topics = (p.strip(" .;") for p in re.split(r",|;| and ", listed))
    return [p for p in topics if len(p) > 2]


# a listed topic as the question it stands for: "A question about tenancy." lies nearer the
# questions on it than "tenancy" alone (docs/routing.md)
TOPIC_ROW = "A question about {}."


def pool_rows(config: PoolConfig, written: bool = True) -> list[tuple[str, str]]:
    """What a pool teaches the router by itself: descriptions, the topics they list, examples and
    (`written`) our written examples of the experts' domains."""
    rows = [(text, e.name) for e in config.experts for text in e.routing_texts]
    rows += [(TOPIC_ROW.format(topic), e.name) for e in config.experts for topic in topic_phrases(e.description)]
    if written and not unwritten_domains(config):
        domains = experts_by_domain(config)
        for domain, texts in written_examples().items():
            rows += [(text, name) for name in domains.get(domain, []) for text in texts]
    return rows


def unwritten_domains(config: PoolConfig) -> list[str]:
    """The specialists' domains we wrote no routing examples for. Our written examples count only
    when there is none: an expert with them would take the questions of a neighbour without them
    (few-shot macro on our pools of that shape, docs/routing.md)."""
    ours = written_examples()
    return sorted({e.domain for e in config.experts if e.name != config.general_expert} - set(ours))


def config_data(config: PoolConfig) -> list[tuple[str, str]]:
    """The labelled data `router: {data: FILE}` names, as (question, expert) pairs."""
    return read_labels(config, config.router.data) if config.router.data else []
