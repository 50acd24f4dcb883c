"""Reading an `experts.yaml` safely: bounded before it is expanded, duplicate keys refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from ech0_moe.errors import ConfigError, shown

MAX_YAML_BYTES = 1_000_000  # an experts.yaml is a few kB; the reader refuses anything this big
MAX_YAML_ALIASES = 100  # aliases expand in place: a 1 kB "billion laughs" file grew to 5.6 GB
MAX_YAML_NODES = 100_000  # nodes after every alias is expanded: few aliases can still expand to GBs
MAX_YAML_DEPTH = 20


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that refuses a key given twice in one mapping (the later one would silently win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.MarkedYAMLError(problem=f"duplicate key {shown(key)}", problem_mark=key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def is_url(text: str) -> bool:
    """An http(s) URL whose host and port can be read (`http://[::1` cannot), by the client that will
    connect to it too (httpx refuses `0177.0.0.1`: refused here, not at the first question)."""
    import httpx  # only for pools that name a host

    try:
        parsed = urlparse(text)
        _ = parsed.port  # a bad port raises here
        httpx.URL(text)
    except (ValueError, httpx.InvalidURL):
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.hostname)


def bounded_yaml(path: Path) -> Any:
    """The file's YAML, refused with one `ConfigError` line before it is expanded when it is too
    big, uses too many aliases or nests too deeply; complex keys (`? [a]: b`) are refused too."""
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ConfigError(f"larger than {MAX_YAML_BYTES // 1000} kB; an experts.yaml is a few kB")
    text = path.read_text(encoding="utf-8")
    aliases = 0
    sizes: dict[str, int] = {}  # anchor -> the nodes it stands for, expanded
    open_: list[list[Any]] = [[None, 0]]  # per open collection: its anchor, the nodes inside so far
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            open_[-1][1] += sizes.get(str(event.anchor), 1)
        elif isinstance(event, yaml.ScalarEvent):
            open_[-1][1] += 1
            if event.anchor:
                sizes[str(event.anchor)] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            open_.append([event.anchor, 0])
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, inside = open_.pop()
            open_[-1][1] += inside + 1
            if anchor:
                sizes[str(anchor)] = inside + 1
        if aliases > MAX_YAML_ALIASES:
            raise ConfigError(f"invalid YAML: more than {MAX_YAML_ALIASES} aliases")
        if len(open_) - 1 > MAX_YAML_DEPTH:
            raise ConfigError(f"invalid YAML: nested more than {MAX_YAML_DEPTH} levels deep")
        if sum(n for _, n in open_) > MAX_YAML_NODES:
            raise ConfigError(f"invalid YAML: its aliases expand to more than {MAX_YAML_NODES:,} nodes")
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except TypeError:  # a mapping or list used as a key
        raise ConfigError("invalid YAML: a key must be plain text, not a list or mapping") from None
