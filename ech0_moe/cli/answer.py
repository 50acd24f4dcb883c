"""Commands that answer: `ask`, `batch` and `demo`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ech0_moe.cli.common import context_of, max_tokens_option, read_question
from ech0_moe.errors import Ech0Error

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

    from ech0_moe.graph.context import Context


EXIT_DEGRADED = 3  # --strict: the run answered but something was degraded (a warning)


def warn(warnings: list[str], where: str = "") -> None:
    """Each warning as one stderr line: nothing that went wrong is hidden."""
    for line in warnings:
        print(f"ech0-moe: warning: {where}{line}", file=sys.stderr, flush=True)


def exit_code(args: argparse.Namespace, warned: bool) -> int:
    return EXIT_DEGRADED if warned and getattr(args, "strict", False) else 0


def run_query(graph: CompiledStateGraph, ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    """Invoke the graph on `request` (query, mode, expert) and return every documented result key."""
    from ech0_moe.graph.state import result_of

    return result_of(graph.invoke(request, context=ctx))


STATUS = {
    "routed": lambda e: f"routed to {e['expert']} ({e['confidence']:.2f}): {e['reason']}",
    "loading": lambda e: f"loading {e['expert']}" + (f"... {e['elapsed']:.0f} s" if e.get("elapsed") else "..."),
    "loaded": lambda e: f"{e['expert']} " + (f"loaded in {e['seconds']:.2f} s" if e["swapped"] else "already loaded"),
    "retrieved": lambda e: f"retrieved {e['count']} passage(s)",
    "compressed": lambda e: (
        f"compressed the prompt to {e['achieved']:.0%} (asked {e['requested']:.0%})"
        if e.get("compressible", 1) > 0
        else "nothing to compress: no retrieved passages, and the question is kept whole"
    ),
}


def stream_answer(graph: CompiledStateGraph, ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    """Run the graph showing progress on stderr and printing the answer's tokens as they arrive."""
    from ech0_moe.graph.state import result_of

    values: dict[str, Any] = {}
    printed = False
    for kind, data in graph.stream(request, context=ctx, stream_mode=["messages", "custom", "values"]):
        if kind == "custom" and data.get("event") in STATUS:
            print(f"[{STATUS[data['event']](data)}]", file=sys.stderr, flush=True)
        elif kind == "messages" and data[1].get("langgraph_node") == "answer":
            print(data[0].content, end="", flush=True)
            printed = True
        elif kind == "values":
            values = data
    result = result_of(values)
    if not printed and result["solution"]:  # the ensemble's vote: printed once decided
        print(result["solution"], end="")
    print()
    return result


def cmd_ask(args: argparse.Namespace) -> int:
    from ech0_moe.graph import build_graph
    from ech0_moe.services import process_registry

    ctx = context_of(args)
    question = read_question(args)
    registry = process_registry()
    registry.services(ctx.experts_file)
    graph = build_graph(services=registry)
    request = {"query": question, "mode": args.mode, "expert": args.expert or "", "choices": args.choices or []}
    if args.json:  # one object at the end
        result = run_query(graph, ctx, request)
        print(json.dumps(result, indent=2))
        warn(result["warnings"])
        return 1 if result["error"] else exit_code(args, bool(result["warnings"]))
    if args.stream or sys.stdout.isatty():
        result = stream_answer(graph, ctx, request)
    else:
        result = run_query(graph, ctx, request)
        if result["solution"]:
            print(result["solution"])
    warn(result["warnings"])
    if result["error"]:
        raise Ech0Error(result["error"])
    sources = ", ".join(_where(c) for c in result["retrieved_contexts"])
    print(
        f"\n[{result['mode']}] expert={result['expert_used']} swapped={result['swapped']} "
        f"load={result['load_seconds']}s compression={result['compression_ratio']} "
        f"truncated={result['truncated']} contexts: {sources or 'none'}",
        file=sys.stderr,
    )
    return exit_code(args, bool(result["warnings"]))


def _where(context: dict[str, Any]) -> str:
    """A retrieved passage as the run's summary line names it: file, page, kind and score."""
    page = f" p.{context['page']}" if context.get("page") else ""
    return f"{context['source']}{page} ({context['kind']}, {context['score']})"


def cmd_batch(args: argparse.Namespace) -> int:
    from ech0_moe.batch import solve_batch
    from ech0_moe.datasets import load_jsonl
    from ech0_moe.graph.context import MODES
    from ech0_moe.services import process_registry

    rows = load_jsonl(args.file, ())
    queries, modes = [], []
    for n, row in enumerate(rows, 1):
        q = row.get("question") or row.get("query")
        if not isinstance(q, str):
            raise Ech0Error(f"{args.file}: row {n}: needs a 'question' (or 'query') string")
        mode = row.get("mode") or args.mode or "basic"  # a row's own mode, else the command's
        if mode not in MODES:
            raise Ech0Error(f"{args.file}: row {n}: unknown mode {mode!r}; use one of {', '.join(MODES)}")
        queries.append(q)
        modes.append(mode)
    ctx = context_of(args)
    registry = process_registry()
    pool = registry.services(ctx.experts_file).pool
    before, t0 = pool.swaps, time.perf_counter()
    results = solve_batch(queries, ctx, registry, mode=modes, order=args.order)
    for r in results:
        print(json.dumps(r))
        warn(r["warnings"], f"question {r['index'] + 1}: ")
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
    return exit_code(args, any(r["warnings"] for r in results))


def cmd_demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ech0_moe.config import format_size
    from ech0_moe.datasets import DEMO_QUESTIONS
    from ech0_moe.graph import build_graph
    from ech0_moe.owners import LOCAL
    from ech0_moe.services import process_registry

    ctx = context_of(args)
    t0 = time.perf_counter()
    svc = process_registry().for_run(ctx.experts_file, ctx.kb_dir, ctx.user or LOCAL)
    graph = build_graph(services=svc)
    models = sorted({os.path.basename(e.model) for e in svc.config.experts})
    if not args.json:
        print(f"ECH0 MoE demo: {len(svc.config.experts)} experts, budget {format_size(svc.pool.budget)}")
        print(f"model(s): {', '.join(models)} ({svc.config.path})")
        if any("135m" in m.lower() for m in models):
            print(
                "note: SmolLM2-135M is a 135-million-parameter model: it answers exam questions at chance.\n"
                "      The demo shows the machinery (routing, swaps, retrieval, compression, timings); for real\n"
                "      answers point experts.yaml at your own experts (a GGUF path, runtime: ollama or openai)\n"
                "      and run `ech0-moe validate experts.yaml` (README: experts.yaml)."
            )
        print(f"(router and knowledge base ready in {time.perf_counter() - t0:.1f}s)\n")
    results: list[dict[str, Any]] = []
    warnings: list[str] = []
    failed: list[str] = []
    bar = tqdm(DEMO_QUESTIONS, desc="demo", unit="q", file=sys.stderr, disable=args.json)
    for question, mode in bar:
        bar.set_postfix_str(mode)
        r = run_query(graph, ctx, {"query": question, "mode": mode})
        results.append({"question": question, **r})
        warnings += r["warnings"]
        warn(r["warnings"], f"question {len(results)}: ")
        if r["error"]:  # a failed answer is never hidden behind an empty line
            failed.append(r["error"])
            print(f"ech0-moe: error: question {len(results)}: {r['error']}", file=sys.stderr, flush=True)
        if not args.json:
            timings = " ".join(f"{k}={v:.2f}s" for k, v in r["timings"].items())
            answer = textwrap.fill(" ".join(r["solution"].split()), width=100, subsequent_indent="      ")
            tqdm.write(
                f"Q: {question}\n   -> {r['expert_used']} [{r['mode']}] "
                f"{'SWAP ' + str(r['load_seconds']) + 's' if r['swapped'] else 'no swap'}, "
                f"contexts={len(r['retrieved_contexts'])}, compression={r['compression_ratio']}"
                f"{', truncated (not learned)' if r['truncated'] else ''}\n"
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
        print(json.dumps({"results": results, "summary": {**summary, "models": models}}, indent=2))
    else:
        print(
            f"swaps: {summary['swaps']} ({summary['load_seconds_total']}s loading), "
            f"peak loaded {format_size(summary['peak_loaded_bytes'])} "
            f"of {format_size(summary['budget_bytes'])} budget, "
            f"total {summary['seconds']}s"
        )
    if failed:
        print(f"ech0-moe: error: {len(failed)} of {len(results)} demo questions failed (above)", file=sys.stderr)
        return 1
    return exit_code(args, bool(warnings))


def add_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    from ech0_moe.graph.context import MODES

    modes = " | ".join(MODES)
    p = command("ask", "answer one question")
    p.add_argument("question", help="the question; - reads it from standard input")
    p.add_argument("--mode", help=f"{modes} (default: optimized)")
    p.add_argument("--expert", metavar="NAME", help="answer with this expert (the router still scores them all)")
    p.add_argument(
        "--compression-target",
        dest="compression_target",
        type=float,
        metavar="F",
        help="requested kept fraction of prompt tokens, in (0, 1] (default 0.5)",
    )
    p.add_argument("--top-k", dest="top_k", type=int, metavar="N", help="passages to retrieve (default 4)")
    p.add_argument(
        "--stream",
        action="store_true",
        help="print progress and the answer's tokens as they arrive (the default on a terminal)",
    )
    p.add_argument(
        "--ensemble-k", dest="ensemble_k", type=int, metavar="N", help="experts the ensemble asks (default 3)"
    )
    p.add_argument("--choices", nargs="+", metavar="OPTION", help="multiple choice: the options, the expert picks one")
    strict_option(p)
    max_tokens_option(p)
    p.set_defaults(func=cmd_ask)

    p = command("batch", "answer a JSONL file of questions, grouped by expert")
    p.add_argument("file", help="JSONL with a 'question' (or 'query') per line")
    p.add_argument("--mode", help=f"{modes} (default: basic)")
    p.add_argument(
        "--order", default="affinity", choices=("affinity", "fifo"), help="affinity (grouped by expert, default) | fifo"
    )
    strict_option(p)
    max_tokens_option(p)
    p.set_defaults(func=cmd_batch)

    p = command("demo", "mixed questions showing routing, swaps and timings")
    strict_option(p)
    max_tokens_option(p)
    p.set_defaults(func=cmd_demo)


def strict_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strict",
        action="store_true",
        help=f"exit {EXIT_DEGRADED} when the run was degraded (any warning), not 0",
    )
