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
from typing import TYPE_CHECKING, Any

from ech0_moe.errors import Ech0Error

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

    from ech0_moe.config import PoolConfig
    from ech0_moe.graph.context import Context

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


def _context(args: argparse.Namespace) -> Context:
    """The run's `Context` from the command line (an out-of-range value is one error line)."""
    from ech0_moe.graph.context import Context

    overrides: dict[str, Any] = {}
    for name in ("experts_file", "kb_dir", "compression_target", "top_k", "ensemble_k", "max_tokens"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Context(**overrides)


def _question(args: argparse.Namespace) -> str:
    """The question argument; `-` reads it from standard input."""
    from ech0_moe.text import check_query

    question = sys.stdin.read() if args.question == "-" else args.question
    check_query(question)
    return question


def run_query(graph: CompiledStateGraph, ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    """Invoke the graph on `request` (query, mode, expert) and return every documented result key."""
    from ech0_moe.graph.state import result_of

    return result_of(graph.invoke(request, context=ctx))


STATUS = {
    "routed": lambda e: f"routed to {e['expert']} ({e['confidence']:.2f}): {e['reason']}",
    "loading": lambda e: f"loading {e['expert']}" + (f"... {e['elapsed']:.0f} s" if e.get("elapsed") else "..."),
    "loaded": lambda e: f"{e['expert']} " + (f"loaded in {e['seconds']:.2f} s" if e["swapped"] else "already loaded"),
    "retrieved": lambda e: f"retrieved {e['count']} passage(s)",
    "compressed": lambda e: f"compressed the prompt to {e['achieved']:.0%} (asked {e['requested']:.0%})",
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
    from ech0_moe.nodes.prepare import resolve_mode
    from ech0_moe.services import process_registry

    ctx = _context(args)
    question = _question(args)  # fail fast, before any model is touched
    resolve_mode(args.mode, ctx)
    registry = process_registry()
    registry.services(ctx.experts_file)
    graph = build_graph(services=registry)
    request = {"query": question, "mode": args.mode, "expert": args.expert or ""}
    if args.json:  # one object at the end
        result = run_query(graph, ctx, request)
        print(json.dumps(result, indent=2))
        return 1 if result["error"] else 0
    if args.stream or sys.stdout.isatty():
        result = stream_answer(graph, ctx, request)
    else:
        result = run_query(graph, ctx, request)
        if result["solution"]:
            print(result["solution"])
    if result["error"]:
        raise Ech0Error(result["error"])
    sources = ", ".join(f"{c['source']} ({c['kind']}, {c['score']})" for c in result["retrieved_contexts"])
    print(
        f"\n[{result['mode']}] expert={result['expert_used']} swapped={result['swapped']} "
        f"load={result['load_seconds']}s compression={result['compression_ratio']} "
        f"truncated={result['truncated']} contexts: {sources or 'none'}",
        file=sys.stderr,
    )
    return 0


def cmd_experts(args: argparse.Namespace) -> int:
    from ech0_moe.backends.ollama import OllamaBackend
    from ech0_moe.config import format_size

    config = _config(args)
    resident: dict[str, Any] = {}  # device -> names resident there (None: unknown)
    ollama = OllamaBackend(timeout=5.0)  # a listing does not wait for a hung host
    for e in config.experts:
        if e.device in resident or e.device == "local":
            continue
        try:
            if e.backend == "ray":
                from ech0_moe.cluster import residency, settings_of

                resident[e.device] = [r["expert"] for r in residency(settings_of(config))]
            else:
                resident[e.device] = ollama.resident(e)
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
            # in-process models load on demand during a run; Ollama and Ray tell what they hold now
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
        state = {True: "loaded", False: "-", None: f"{r['device']} unreachable"}[r["loaded"]]
        print(
            f"  {r['name']:<12} {r['domain']:<17} {r['backend']:<9} {format_size(r['size_bytes']):>8}  "
            f"file#{files[r['model']]} {os.path.basename(r['model'])}  {state}"
        )
    if any(r["device"] == "local" for r in rows):
        print("(in-process llama.cpp experts load on demand during a run: none is loaded between commands)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Deploy (or update) the Ray Serve application of a `backend: ray` pool; --status shows each
    replica's resident expert; --delete removes the application."""
    from ech0_moe import cluster
    from ech0_moe.config import format_size

    config = _config(args)
    settings = cluster.settings_of(config)
    if args.delete:
        cluster.delete(config)
        print(f"deleted Serve application {settings.app!r}", file=sys.stderr)
        return 0
    if not args.status:
        t0 = time.perf_counter()
        cluster.deploy(config, fresh=args.fresh)
        print(
            f"deployed {settings.app!r}: {settings.replicas} replicas of {format_size(config.budget_for('ray'))} "
            f"on {settings.address} in {time.perf_counter() - t0:.1f}s",
            file=sys.stderr,
        )
    rows = cluster.residency(settings)
    if args.json:
        print(json.dumps({"app": settings.app, "address": settings.address, "replicas": rows}))
        return 0
    print(f"{'replica':<10} {'node':<16} {'expert':<14} {'bytes':>9} {'budget':>9} {'loads':>5}  last load")
    for r in rows:
        when = time.strftime("%H:%M:%S", time.localtime(r["last_load_at"])) if r["last_load_at"] else "-"
        took = f" ({r['last_load_seconds']:.2f}s)" if r["last_load_at"] else ""
        print(
            f"{r['replica']:<10} {r['node']:<16} {r['expert'] or '-':<14} {format_size(r['bytes']):>9} "
            f"{format_size(r['budget_bytes']):>9} {r['loads']:>5}  {when}{took}"
        )
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    """Route without LangGraph, Chroma or a model: the config and the router only (fast to start)."""
    from ech0_moe.router import Router

    question = _question(args)
    decision = Router(_config(args)).route(question, top_k=args.top_k or 1)
    out = decision.as_dict()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{decision.expert} ({decision.domain}) confidence={decision.confidence} via {decision.method}")
    return 0


def _config(args: argparse.Namespace) -> PoolConfig:
    from ech0_moe.config import load_config
    from ech0_moe.paths import experts_file

    return load_config(experts_file(_context(args).experts_file))


def cmd_validate(args: argparse.Namespace) -> int:
    from ech0_moe.paths import experts_file
    from ech0_moe.validate import validate_pool

    path = experts_file(args.file or _context(args).experts_file)
    problems, notes = validate_pool(path)
    for line in notes:
        print(f"note: {line}", file=sys.stderr)
    for line in problems:
        print(f"ech0-moe: error: {line}", file=sys.stderr)
    if args.json:
        print(json.dumps({"file": str(path), "valid": not problems, "problems": problems, "notes": notes}))
    elif not problems:
        print(f"{path}: valid")
    return 1 if problems else 0


def cmd_router_fit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ech0_moe.datasets import load_jsonl, split_dev
    from ech0_moe.router_fit import config_data, fit_model, label_rows

    config = _config(args)
    rows = load_jsonl(args.data, ("question",)) if args.data else []
    fit_rows, held = split_dev(rows, args.split, args.seed)
    t0 = time.perf_counter()
    model = fit_model(config, config_data(config) + label_rows(config, fit_rows, args.data or ""))
    out = Path(args.out)
    model.save(out)
    print(
        json.dumps(
            {
                "model": str(out),
                "fit_questions": len(fit_rows),
                "held_out": len(held),
                "classes": model.classes,
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
    )
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from ech0_moe.batch import solve_batch
    from ech0_moe.datasets import load_jsonl
    from ech0_moe.services import process_registry

    rows = load_jsonl(args.file, ())
    queries = []
    for n, row in enumerate(rows, 1):
        q = row.get("question") or row.get("query")
        if not isinstance(q, str):
            raise Ech0Error(f"{args.file}: row {n}: needs a 'question' (or 'query') string")
        queries.append(q)
    ctx = _context(args)
    registry = process_registry()
    pool = registry.services(ctx.experts_file).pool
    before, t0 = pool.swaps, time.perf_counter()
    results = solve_batch(queries, ctx, registry, mode=args.mode or "basic", order=args.order)
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
    from ech0_moe.kb import KnowledgeBase
    from ech0_moe.paths import kb_dir

    kb = KnowledgeBase(kb_dir(_context(args).kb_dir))
    if args.action == "add":
        if not args.items:
            raise Ech0Error("kb add needs one or more files or folders")
        if not 0 < args.max_file_mb <= 100_000:
            raise Ech0Error(f"--max-file-mb must be more than 0 and at most 100000, got {args.max_file_mb}")
        result: Any = kb.add_paths(
            args.items,
            domain=args.domain or "",
            follow_symlinks=args.follow_symlinks,
            max_bytes=int(args.max_file_mb * 1e6),
        )
    elif args.action == "search":
        if len(args.items) != 1 or not args.items[0].strip():
            raise Ech0Error('kb search needs one query: ech0-moe kb search "QUESTION"')
        hits = kb.search(
            args.items[0], k=args.k, max_distance=args.max_distance, domain=args.domain, method=args.method
        )
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

    from ech0_moe import bench, datasets

    if args.what == "routing":
        if not args.data:
            raise Ech0Error("bench routing needs --data FILE.jsonl (lines with 'question' and 'expert' or 'domain')")
        rows = datasets.load_jsonl(args.data, ("question",))
        config = _config(args)
        subject_map = datasets.load_mapping(args.map) if args.map else None
        if args.synthetic:
            config, subject_map = bench.subject_pool(config, rows, args.synthetic)
        result = bench.bench_routing(config, rows, folds=args.folds, subject_map=subject_map)
    elif args.what == "compress":
        from ech0_moe.compressor import ExtractiveCompressor

        result = bench.bench_compress(datasets.load_qa(), ExtractiveCompressor())
    elif args.what == "swap":
        from ech0_moe.services import process_registry
        from ech0_moe.swap_bench import bench_swap

        ctx = _context(args)
        result = bench_swap(ctx, process_registry().for_run(ctx.experts_file, ctx.kb_dir))
    elif args.what == "rag":
        with tempfile.TemporaryDirectory(prefix="ech0-bench-rag-") as tmp:
            docs, rows = bench.BENCH_DIR / "docs", datasets.load_qa()
            if args.data:  # {question, answers, passages}; or {question, answers} over --docs
                passages = Path(tmp) / "passages"
                rows = bench.rag_rows(datasets.load_jsonl(args.data, ("question",)), passages, args.data)
                if not args.docs and not any(passages.iterdir()):
                    raise Ech0Error(
                        f"bench rag: the rows of {args.data} carry no passages; name the folder of "
                        "documents they ask about with --docs DIR"
                    )
                docs = Path(args.docs) if args.docs else passages
            result = bench.bench_rag(rows, Path(tmp) / "kb", docs=docs, pad=args.pad)
    elif args.what == "modes":
        from ech0_moe.modes_bench import MODES, benchmark, questions_of

        if not args.data:
            raise Ech0Error("bench modes needs --data FILE.jsonl (question + choices + answer, or a reference answer)")
        rows = datasets.load_jsonl(args.data, ("question",))
        if args.limit:
            rows = datasets.sample(rows, args.limit, args.seed)
        modes = [m.strip() for m in (args.modes or ",".join(MODES)).split(",") if m.strip()]
        result = benchmark(
            questions_of(rows, args.data),
            modes=modes,
            context=_context(args),
            baseline=args.baseline,
            oracle=args.oracle,
            learning=not args.no_learning,
            plot=args.plot,
        )
    elif args.what == "ray":
        from ech0_moe.cluster_bench import bench_ray

        result = bench_ray(_config(args), _context(args), questions=args.questions)
    elif args.what == "startup":
        from ech0_moe.paths import experts_file

        result = bench.bench_startup(experts_file(_context(args).experts_file), runs=args.runs)
    else:
        raise Ech0Error(f"unknown benchmark {args.what!r}; use {', '.join(BENCHMARKS)}")
    if not args.json:
        for key, value in result.items():
            print(f"{key}: {value}", file=sys.stderr)
    print(json.dumps(result))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ech0_moe.config import format_size
    from ech0_moe.graph import build_graph
    from ech0_moe.services import process_registry

    ctx = _context(args)
    t0 = time.perf_counter()
    svc = process_registry().for_run(ctx.experts_file, ctx.kb_dir)
    graph = build_graph(services=svc)
    print(f"ECH0 MoE demo: {len(svc.config.experts)} experts, budget {format_size(svc.pool.budget)}")
    print(f"(router and knowledge base ready in {time.perf_counter() - t0:.1f}s)\n")
    results = []
    bar = tqdm(DEMO_QUESTIONS, desc="demo", unit="q", file=sys.stderr, disable=args.json)
    for question, mode in bar:
        bar.set_postfix_str(mode)
        r = run_query(graph, ctx, {"query": question, "mode": mode})
        results.append({"question": question, **r})
        if not args.json:
            timings = " ".join(f"{k}={v:.2f}s" for k, v in r["timings"].items())
            answer = " ".join(r["solution"].split())[:110]
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
        print(json.dumps({"results": results, "summary": summary}, indent=2))
    else:
        print(
            f"swaps: {summary['swaps']} ({summary['load_seconds_total']}s loading), "
            f"peak loaded {format_size(summary['peak_loaded_bytes'])} "
            f"of {format_size(summary['budget_bytes'])} budget, "
            f"total {summary['seconds']}s"
        )
    return 0


BENCHMARKS = ("routing", "compress", "rag", "swap", "startup", "ray", "modes")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _global_options(parser: argparse.ArgumentParser, *, in_subcommand: bool) -> None:
    """--experts, --kb and --json, accepted before or after the subcommand."""
    unset: Any = argparse.SUPPRESS if in_subcommand else None
    parser.add_argument(
        "--experts",
        dest="experts_file",
        metavar="FILE",
        default=unset,
        help="experts.yaml to use (default: ./experts.yaml, else the packaged example pool)",
    )
    parser.add_argument(
        "--kb", dest="kb_dir", metavar="DIR", default=unset, help="knowledge-base folder (default: ./.ech0/kb)"
    )
    parser.add_argument("--json", action="store_true", default=unset if in_subcommand else False, help="print JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ech0-moe", description="Many experts, one loaded at a time.")
    _global_options(parser, in_subcommand=False)
    common = _Parser(add_help=False)
    _global_options(common, in_subcommand=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text)

    def max_tokens(p: argparse.ArgumentParser, default: int | None = None) -> None:
        p.add_argument(
            "--max-tokens",
            dest="max_tokens",
            type=int,
            default=default,
            metavar="N",
            help="answer length cap in tokens (default: each expert's own max_tokens)",
        )

    modes = "optimized | fast | basic | ensemble"
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
    max_tokens(p)
    p.set_defaults(func=cmd_ask)

    p = command("experts", "list the pool (and what each Ollama host holds)")
    p.set_defaults(func=cmd_experts)

    p = command("validate", "check an experts.yaml without loading a model; one line per problem")
    p.add_argument("file", nargs="?", help="the file to check (default: the --experts file)")
    p.set_defaults(func=cmd_validate)

    p = command("serve", "backend ray: deploy or update the Ray Serve application; --status shows the replicas")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--status", action="store_true", help="show each replica's resident expert (deploy nothing)")
    group.add_argument("--fresh", action="store_true", help="replace the replicas with new, empty ones")
    group.add_argument("--delete", action="store_true", help="remove the application from the cluster")
    p.set_defaults(func=cmd_serve)

    p = command("route", "route a question (no model is loaded)")
    p.add_argument("question", help="the question; - reads it from standard input")
    p.add_argument("--top-k", dest="top_k", type=int, metavar="N", help="how many experts to rank (default 1)")
    p.set_defaults(func=cmd_route)

    p = command("bench", "benchmarks; the last line printed is JSON")
    p.add_argument("what", choices=BENCHMARKS, help=" | ".join(BENCHMARKS))
    max_tokens(p)
    p.add_argument(
        "--data", metavar="FILE", help="routing: JSONL with 'question' and 'expert' or 'domain' (or 'subject') per line"
    )
    p.add_argument("--map", metavar="FILE", help="routing: YAML mapping each row's 'subject' to an expert")
    p.add_argument(
        "--synthetic",
        type=int,
        metavar="N",
        help="routing: a synthetic pool of N experts, one per 'subject' of the data plus decoys",
    )
    p.add_argument(
        "--folds",
        type=int,
        default=5,
        metavar="N",
        help="routing: cross-validation folds when the router saw the data (default 5)",
    )
    p.add_argument("--runs", type=int, default=10, metavar="N", help="startup: how many `route` processes (default 10)")
    p.add_argument("--questions", type=int, default=32, metavar="N", help="ray: mixed questions per run (default 32)")
    p.add_argument("--docs", metavar="DIR", help="rag: a folder to ingest, for --data rows without passages")
    p.add_argument("--pad", type=int, default=0, metavar="N", help="rag: add N filler chunks to time search at size")
    p.add_argument("--modes", metavar="LIST", help="modes: which, comma-separated (default: all four)")
    p.add_argument("--limit", type=int, metavar="N", help="modes: N rows of --data, balanced over domains (seeded)")
    p.add_argument("--seed", type=int, default=0, help="modes: the sample's seed (default 0)")
    p.add_argument("--baseline", choices=("single",), help="modes: also answer everything with the general expert")
    p.add_argument("--oracle", action="store_true", help="modes: also answer with each question's domain expert")
    p.add_argument("--no-learning", dest="no_learning", action="store_true", help="modes: skip the second pass")
    p.add_argument("--plot", metavar="PNG", help="modes: draw accuracy and seconds per run")
    p.set_defaults(func=cmd_bench)

    p = command("batch", "answer a JSONL file of questions, grouped by expert")
    p.add_argument("file", help="JSONL with a 'question' (or 'query') per line")
    p.add_argument("--mode", help=f"{modes} (default: basic)")
    p.add_argument(
        "--order", default="affinity", choices=("affinity", "fifo"), help="affinity (grouped by expert, default) | fifo"
    )
    max_tokens(p)
    p.set_defaults(func=cmd_batch)

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
    p.add_argument("--source", help="forget: every entry of this file path or 'learned:<expert>'")
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
        default=20.0,
        metavar="MB",
        help="add: skip (and list) files larger than this (default 20)",
    )
    p.set_defaults(func=cmd_kb)

    p = command("router", "router model: `router fit --out FILE.npz`")
    p.add_argument("action", choices=["fit"], help="fit")
    p.add_argument("--data", metavar="FILE", help="JSONL with 'question' and 'expert' or 'domain' to fit on as well")
    p.add_argument(
        "--split", type=float, default=1.0, metavar="F", help="fraction of each domain used to fit (default 1.0)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the fitted router (.npz)")
    p.set_defaults(func=cmd_router_fit)

    p = command("demo", "mixed questions showing routing, swaps and timings")
    max_tokens(p, default=200)  # room for complete answers: a truncated one is never learned
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_libraries()
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        code = func(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:  # e.g. `ech0-moe kb search ... | head`: the reader left, end quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Ech0Error as exc:
        print(f"ech0-moe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ech0-moe: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # last line of defence: one sentence, no traceback
        if os.environ.get("ECH0_DEBUG"):
            raise
        detail = (str(exc).strip().splitlines() or ["no details"])[0]
        print(f"ech0-moe: error: unexpected failure ({detail}); ECH0_DEBUG=1 shows where", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
