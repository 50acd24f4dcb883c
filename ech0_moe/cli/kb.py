"""`ech0-moe kb`: add, search, stats and forget in the knowledge base."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from ech0_moe.cli.common import context_of
from ech0_moe.errors import Ech0Error


def cmd_kb(args: argparse.Namespace) -> int:
    from ech0_moe.memory.kb import KnowledgeBase
    from ech0_moe.owners import SHARED, check_owner, readable_by
    from ech0_moe.paths import kb_dir

    ctx = context_of(args)
    namespace = check_owner(args.namespace, what="namespace", shared_ok=True) if args.namespace else None
    kb = KnowledgeBase(kb_dir(ctx.kb_dir))
    if args.action == "add":
        if not args.items:
            raise Ech0Error("kb add needs one or more files or folders")
        if not 0 < args.max_file_mb <= 100_000:
            raise Ech0Error(f"--max-file-mb must be more than 0 and at most 100000, got {args.max_file_mb}")
        result: Any = kb.add_paths(
            args.items,
            domain=args.domain or "",
            namespace=namespace or SHARED,
            follow_symlinks=args.follow_symlinks,
            max_bytes=int(args.max_file_mb * 1e6),
        )
    elif args.action == "search":
        if len(args.items) != 1 or not args.items[0].strip():
            raise Ech0Error('kb search needs one query: ech0-moe kb search "QUESTION"')
        reader = namespace or ctx.user or None  # who reads: their namespace and the shared one; none: everything
        hits = kb.search(
            args.items[0],
            k=args.k,
            max_distance=args.max_distance,
            domain=args.domain,
            method=args.method,
            owners=readable_by(reader),
        )
        result = [h.as_dict() for h in hits]
        if not args.json:
            how = {"fused": "BM25 and embeddings fused", "dense": "embeddings", "lexical": "BM25"}[args.method]
            print(f"{len(hits)} passage(s), ranked by {how} (then diversity); cosine shown beside", file=sys.stderr)
            for rank, h in enumerate(hits, 1):
                where = (f", page {h.page}" if h.page else "") + (f" > {h.heading}" if h.heading else "")
                print(
                    f"{rank}. [{h.kind}, {h.owner}] {h.source}{where}  (cosine {h.score:.3f})  id={h.id}\n"
                    f"       {' '.join(h.text.split())[:160]}"
                )
            return 0
    elif args.action == "stats":
        result = kb.stats(namespace)
    elif args.action == "forget":
        if not (args.items or args.source):
            raise Ech0Error("kb forget needs entry ids or --source PATH_OR_NAME")
        removed = kb.forget(ids=args.items, source=args.source or "", owner=namespace)
        if not any(removed.values()):
            what = f"id(s) {', '.join(args.items)}" if args.items else f"source {args.source!r}"
            where = f" of namespace {namespace!r}" if namespace else ""
            hint = (
                f" (a file or a source is given with --source: ech0-moe kb forget --source {args.items[0]})"
                if args.items and not args.source and ("/" in args.items[0] or "." in args.items[0])
                else ""
            )
            raise Ech0Error(f"kb forget: no entry{where} with {what} in {kb.path}; nothing was removed{hint}")
        result = {"removed": removed["entries"]}
        result |= {"routing_rows_removed": removed["routing_rows"]} if removed["routing_rows"] else {}
    else:
        raise Ech0Error(f"unknown kb action {args.action!r}; use add, search, stats or forget")
    print(json.dumps(result) if args.json else readable(args.action, result))
    return 0


def readable(action: str, result: dict[str, Any]) -> str:
    """What `kb add`, `kb stats` and `kb forget` print without --json."""
    if action == "add":
        lines = [
            f"added {result['added']} file(s) ({result['chunks']} chunks), {result['unchanged']} unchanged, "
            f"{len(result['skipped'])} skipped, in {result['seconds']} s"
        ]
        lines += [f"  skipped {line}" for line in result["skipped"]]
        if result.get("routing_examples"):
            lines.append(f"  {result['routing_examples']} chunks kept as routing examples")
        return "\n".join(lines)
    if action == "stats":
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(result["by_kind"].items())) or "none"
        owners = ", ".join(f"{k} {n}" for k, n in sorted(result["by_owner"].items())) or "none"
        where = f" (namespace {result['namespace']})" if "namespace" in result else ""
        lines = [f"{result['path']}{where}: {result['entries']} entries ({kinds}) from {result['sources']} sources"]
        lines.append(f"  by owner: {owners}")
        return "\n".join(lines + ([f"  read-only: {result['read_only']}"] if "read_only" in result else []))
    rows = f" and {result['routing_rows_removed']} routing example(s)" if result.get("routing_rows_removed") else ""
    return f"removed {result['removed']} entries{rows}"


def cmd_feedback(args: argparse.Namespace) -> int:
    """Record which expert should answer a question: a routing example on the router's next refit."""
    from ech0_moe.cli.common import config_of
    from ech0_moe.owners import LOCAL
    from ech0_moe.paths import kb_dir
    from ech0_moe.routing.taught import add_feedback

    ctx = context_of(args)
    row = add_feedback(kb_dir(ctx.kb_dir), config_of(args), args.question, args.expert, ctx.user or LOCAL)
    applies = f"to {row['owner']}'s routing from the next question on"
    if args.json:
        print(json.dumps({"recorded": row, "applies": applies}))
    else:
        print(f"recorded: {row['text']!r} -> {row['expert']} (applies {applies})")
    return 0


def add_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("feedback", "say which expert should answer a question (the router learns it on its next refit)")
    p.add_argument("question", help="the question")
    p.add_argument("--expert", required=True, help="the expert that should answer it")
    p.set_defaults(func=cmd_feedback)

    p = command("kb", "knowledge base: add, search, stats, forget")
    p.add_argument("action", choices=("add", "search", "stats", "forget"), help="add | search | stats | forget")
    p.add_argument("items", nargs="*", help="files/folders (add), the query (search), entry ids (forget)")
    p.add_argument("--domain", help="add: tag documents with a domain; search: only that domain")
    p.add_argument("--k", type=int, default=4, metavar="N", help="search: passages to return (default 4)")
    p.add_argument(
        "--max-distance",
        dest="max_distance",
        type=float,
        default=0.65,
        metavar="D",
        help="search: cosine distance above which a passage is dropped (default 0.65)",
    )
    p.add_argument(
        "--method",
        choices=("fused", "dense", "lexical"),
        default="fused",
        help="search: fused (BM25 + embeddings, default), dense or lexical alone",
    )
    p.add_argument("--source", help="forget: every entry of this file path, 'learned:<expert>' or 'feedback'")
    p.add_argument(
        "--namespace",
        metavar="NAME",
        help="add: store in this namespace (default: shared, read by everyone); search: read as this owner "
        "(its namespace and the shared one); stats, forget: only this namespace",
    )
    p.add_argument(
        "--follow-symlinks",
        dest="follow_symlinks",
        action="store_true",
        help="add: also ingest files that symlinks inside a folder point to outside it",
    )
    p.add_argument(
        "--max-file-mb",
        dest="max_file_mb",
        type=float,
        default=100.0,
        metavar="MB",
        help="add: skip (and list) files larger than this (default 100; text over 8 MB is streamed)",
    )
    p.set_defaults(func=cmd_kb)
