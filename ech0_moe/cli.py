"""`ech0-moe`: ask, inspect the pool, route, run the demo.

Every user-fixable problem ends in one line on stderr (``ech0-moe: error: ...``)
and exit status 2; set ECH0_DEBUG=1 to see a traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from ech0_moe.errors import Ech0Error

DEMO_QUESTIONS: tuple[tuple[str, str], ...] = (
    ("What is the integral of 2x from 0 to 3?", "optimized"),
    ("How do white blood cells recognise a bacterial infection?", "optimized"),
    ("Why does a satellite in low orbit need to keep moving fast?", "fast"),
    ("If every bird can fly and penguins are birds, can penguins fly? Is the argument sound?", "basic"),
    ("What is the integral of 2x from 0 to 3?", "optimized"),
    ("What is the voltage across a 4 ohm resistor carrying 3 amps?", "ensemble"),
)


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def _context(args: argparse.Namespace) -> Any:
    from graph.context import Context

    overrides: dict[str, Any] = {}
    for name in ("experts_file", "kb_dir", "compression_ratio", "top_k", "ensemble_k", "max_tokens"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Context(**overrides)


def run_query(graph: Any, ctx: Any, query: str, mode: str) -> dict[str, Any]:
    """Invoke the graph and return every documented result key."""
    from graph.state import result_of

    return result_of(graph.invoke({"query": query, "mode": mode}, context=ctx))


def cmd_ask(args: argparse.Namespace) -> int:
    from ech0_moe.text import check_query
    from graph import build_graph
    from graph.state import State
    from nodes._common import resolve_mode

    ctx = _context(args)
    check_query(args.question)  # fail fast, before any model is touched
    resolve_mode(State(query=args.question, mode=args.mode or ""), ctx)
    ctx.services()
    result = run_query(build_graph(), ctx, args.question, args.mode or "")
    if args.json:
        print(json.dumps(result, indent=2))
        return 1 if result["error"] else 0
    if result["error"]:
        raise Ech0Error(result["error"])
    print(result["solution"])
    sources = ", ".join(f"{c['source']} ({c['kind']}, {c['score']})" for c in result["retrieved_contexts"])
    print(
        f"\n[{result['mode']}] expert={result['expert_used']} swapped={result['swapped']} "
        f"load={result['load_seconds']}s compression={result['compression_ratio']} "
        f"contexts: {sources or 'none'}",
        file=sys.stderr,
    )
    return 0


def cmd_experts(args: argparse.Namespace) -> int:
    from ech0_moe.backends import make_backend
    from ech0_moe.config import format_size

    config = _config(args)
    resident: dict[str, Any] = {}  # device -> names resident there (None: unknown)
    for e in config.experts:
        if e.backend == "ollama" and e.device not in resident:
            try:
                resident[e.device] = make_backend("ollama").resident(e)
            except Ech0Error:
                resident[e.device] = None
    rows = [
        {
            "name": e.name,
            "domain": e.domain,
            "backend": e.backend,
            "model": e.model,
            "device": e.device,
            "size_bytes": e.size_bytes,
            # in-process models load on demand during a run; Ollama tells what it holds now
            "loaded": False
            if e.device == "local"
            else (None if resident[e.device] is None else e.model in resident[e.device]),
        }
        for e in config.experts
    ]
    if args.json:
        print(json.dumps({"memory_budget": config.memory_budget, "experts": rows}, indent=2))
        return 0
    print(f"memory budget: {format_size(config.memory_budget)}   experts: {len(rows)}")
    files: dict[str, int] = {}
    for r in rows:
        files.setdefault(r["model"], len(files))
        state = {True: "loaded", False: "-", None: "host unreachable"}[r["loaded"]]
        print(
            f"  {r['name']:<12} {r['domain']:<17} {r['backend']:<9} {format_size(r['size_bytes']):>8}  "
            f"file#{files[r['model']]} {os.path.basename(r['model'])}  {state}"
        )
    if any(r["device"] == "local" for r in rows):
        print("(in-process llama.cpp experts load on demand during a run: none is loaded between commands)")
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    from ech0_moe.text import check_query

    check_query(args.question)
    svc = _context(args).services()
    decision = svc.router.route(args.question, top_k=args.top_k or 1)
    out = decision.as_dict()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{decision.expert} ({decision.domain}) confidence={decision.confidence} via {decision.method}")
    return 0


def _config(args: argparse.Namespace) -> Any:
    from ech0_moe.config import load_config

    return load_config(_context(args).experts_file)


def cmd_router_fit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ech0_moe.bench import load_jsonl, split_dev
    from ech0_moe.router import PACKAGED_MODEL, fit_model

    config = _config(args)
    rows = load_jsonl(args.data, ("question", "domain")) if args.data else []
    fit_rows, held = split_dev(rows, args.split, args.seed)
    model = fit_model(config, [(r["question"], r["domain"]) for r in fit_rows])
    out = Path(args.out or PACKAGED_MODEL)
    model.save(out)
    print(
        json.dumps({"model": str(out), "fit_questions": len(fit_rows), "held_out": len(held), "classes": model.classes})
    )
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from ech0_moe.batch import solve_batch
    from ech0_moe.bench import load_jsonl
    from graph import build_graph

    rows = load_jsonl(args.file, ())
    queries = []
    for n, row in enumerate(rows, 1):
        q = row.get("question") or row.get("query")
        if not isinstance(q, str):
            raise Ech0Error(f"{args.file}: row {n}: needs a 'question' (or 'query') string")
        queries.append(q)
    ctx = _context(args)
    pool = ctx.services().pool
    before, t0 = pool.swaps, time.perf_counter()
    results = solve_batch(build_graph(), queries, ctx, mode=args.mode or "basic", order=args.order)
    for r in results:
        print(json.dumps(r))
    stats = pool.stats()
    summary = {
        "queries": len(results),
        "order": args.order,
        "swaps": pool.swaps - before,
        "distinct_experts": len({r["expert_used"] for r in results}),
        "seconds": round(time.perf_counter() - t0, 3),
        "peak_loaded_bytes": stats["peak_loaded_bytes"],
        "budget_bytes": stats["budget_bytes"],
    }
    print(json.dumps({"summary": summary}))
    return 0


def cmd_kb(args: argparse.Namespace) -> int:
    from ech0_moe.config import DOMAINS
    from ech0_moe.kb import KnowledgeBase

    kb = KnowledgeBase(_context(args).kb_dir)
    if args.action == "add":
        if not args.items:
            raise Ech0Error("kb add needs one or more files or folders")
        if args.domain and args.domain not in DOMAINS:
            raise Ech0Error(f"--domain {args.domain!r} is not one of {', '.join(DOMAINS)}")
        result: Any = kb.add_paths(args.items, domain=args.domain or "")
    elif args.action == "search":
        if len(args.items) != 1 or not args.items[0].strip():
            raise Ech0Error('kb search needs one query: ech0-moe kb search "QUESTION"')
        hits = kb.search(args.items[0], k=args.k, max_distance=args.max_distance, domain=args.domain)
        result = [h.as_dict() for h in hits]
        if not args.json:
            for h in hits:
                print(f"{h.score:.3f}  [{h.kind}] {h.source}  id={h.id}\n       {' '.join(h.text.split())[:160]}")
            return 0
    elif args.action == "stats":
        result = kb.stats()
    elif args.action == "forget":
        if not (args.items or args.source):
            raise Ech0Error("kb forget needs entry ids or --source PATH_OR_NAME")
        result = {"removed": kb.forget(ids=args.items, source=args.source or "")}
    else:
        raise Ech0Error(f"unknown kb action {args.action!r}; use add, search, stats or forget")
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from ech0_moe import bench

    if args.what == "routing":
        if not args.data:
            raise Ech0Error("bench routing needs --data FILE.jsonl (lines with 'question' and 'domain')")
        rows = bench.load_jsonl(args.data, ("question", "domain"))
        result = bench.bench_routing(_config(args), rows, folds=args.folds)
    elif args.what == "compress":
        result = bench.bench_compress(bench.load_qa(), _context(args).services().compressor)
    elif args.what == "swap":
        result = bench.bench_swap(_context(args))
    elif args.what == "rag":
        with tempfile.TemporaryDirectory(prefix="ech0-bench-rag-") as tmp:
            result = bench.bench_rag(bench.load_qa(), Path(tmp))
    else:
        raise Ech0Error(f"unknown benchmark {args.what!r}; use routing, compress, rag or swap")
    if not args.json:
        for key, value in result.items():
            print(f"{key}: {value}", file=sys.stderr)
    print(json.dumps(result))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ech0_moe.config import format_size
    from graph import build_graph

    ctx = _context(args)
    t0 = time.perf_counter()
    svc = ctx.services()
    graph = build_graph()
    print(f"ECH0 MoE demo: {len(svc.config.experts)} experts, budget {format_size(svc.pool.budget)}")
    print(f"(router and knowledge base ready in {time.perf_counter() - t0:.1f}s)\n")
    results = []
    bar = tqdm(DEMO_QUESTIONS, desc="demo", unit="q", file=sys.stderr, disable=args.json)
    for question, mode in bar:
        bar.set_postfix_str(mode)
        r = run_query(graph, ctx, question, mode)
        results.append({"question": question, **r})
        if not args.json:
            timings = " ".join(f"{k}={v:.2f}s" for k, v in r["timings"].items())
            answer = " ".join(r["solution"].split())[:110]
            tqdm.write(
                f"Q: {question}\n   -> {r['expert_used']} [{r['mode']}] "
                f"{'SWAP ' + str(r['load_seconds']) + 's' if r['swapped'] else 'no swap'}, "
                f"contexts={len(r['retrieved_contexts'])}, compression={r['compression_ratio']}\n"
                f"   timings: {timings}\n   A: {answer}\n",
                file=sys.stdout,
            )
    stats = svc.pool.stats()
    summary = {
        "questions": len(results),
        "swaps": stats["swaps"],
        "load_seconds_total": stats["load_seconds_total"],
        "peak_loaded_bytes": stats["peak_loaded_bytes"],
        "budget_bytes": stats["budget_bytes"],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if args.json:
        print(json.dumps({"results": results, "summary": summary}, indent=2))
    else:
        print(
            f"swaps: {summary['swaps']} ({summary['load_seconds_total']}s loading), "
            f"peak loaded {format_size(summary['peak_loaded_bytes'])} "
            f"of {format_size(summary['budget_bytes'])} budget, "
            f"total {summary['seconds']}s"
        )
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ech0-moe", description="Many experts, one loaded at a time.")
    common = _Parser(add_help=False)
    common.add_argument("--experts", dest="experts_file", help="path to experts.yaml")
    common.add_argument("--kb", dest="kb_dir", help="knowledge-base folder")
    common.add_argument("--json", action="store_true", help="print JSON")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ask", parents=[common], help="answer one question")
    p.add_argument("question")
    p.add_argument("--mode", help="optimized | fast | basic | ensemble")
    p.add_argument("--compression-ratio", dest="compression_ratio", type=float)
    p.add_argument("--top-k", dest="top_k", type=int, help="contexts to retrieve")
    p.add_argument("--ensemble-k", dest="ensemble_k", type=int)
    p.add_argument("--max-tokens", dest="max_tokens", type=int)
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("experts", parents=[common], help="list the pool")
    p.set_defaults(func=cmd_experts)

    p = sub.add_parser("route", parents=[common], help="route a question (no model is loaded)")
    p.add_argument("question")
    p.add_argument("--top-k", dest="top_k", type=int)
    p.set_defaults(func=cmd_route)

    p = sub.add_parser("bench", parents=[common], help="benchmarks; the last line printed is JSON")
    p.add_argument("what", help="routing | compress | rag | swap")
    p.add_argument("--max-tokens", dest="max_tokens", type=int)
    p.add_argument("--data", help="JSONL data set")
    p.add_argument(
        "--folds", type=int, default=5, help="routing: cross-validation folds when the router saw the data (default 5)"
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("batch", parents=[common], help="answer a JSONL file of questions, grouped by expert")
    p.add_argument("file", help="JSONL with a 'question' (or 'query') per line")
    p.add_argument("--mode", help="optimized | fast | basic (default) | ensemble")
    p.add_argument("--order", default="affinity", help="affinity (grouped by expert, default) | fifo")
    p.add_argument("--max-tokens", dest="max_tokens", type=int)
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("kb", parents=[common], help="knowledge base: add, search, stats, forget")
    p.add_argument("action", help="add | search | stats | forget")
    p.add_argument("items", nargs="*", help="files/folders (add), the query (search), entry ids (forget)")
    p.add_argument("--domain", help="add: tag documents with a domain; search: only that domain")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--max-distance", dest="max_distance", type=float, default=0.65)
    p.add_argument("--source", help="forget: every entry of this file path or 'learned:<expert>'")
    p.set_defaults(func=cmd_kb)

    p = sub.add_parser("router", parents=[common], help="router model: `router fit`")
    p.add_argument("action", choices=["fit"])
    p.add_argument("--data", help="JSONL with 'question' and 'domain' to add a dev split of")
    p.add_argument(
        "--split", type=float, default=1.0, help="fraction of each domain used to fit (the rest is left out)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="where to write the .npz (default: the packaged model)")
    p.set_defaults(func=cmd_router_fit)

    p = sub.add_parser("demo", parents=[common], help="mixed questions showing routing, swaps and timings")
    p.add_argument("--max-tokens", dest="max_tokens", type=int, default=48)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_libraries()
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except Ech0Error as exc:
        print(f"ech0-moe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ech0-moe: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # last line of defence: one line, no traceback
        if os.environ.get("ECH0_DEBUG"):
            raise
        print(f"ech0-moe: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
