"""Commands about the pool: `experts`, `validate`, `serve` (Ray), `route` and `router fit`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from ech0_moe.cli.common import config_of, context_of, read_question
from ech0_moe.errors import Ech0Error


def cmd_experts(args: argparse.Namespace) -> int:
    from ech0_moe.config import format_size
    from ech0_moe.serving.runtimes import make_runtime

    config = config_of(args)
    resident: dict[str, Any] = {}  # device -> names resident there (None: unknown)
    for e in config.experts:
        if e.device in resident or e.device == "local":
            continue
        try:
            if e.placement == "ray":
                from ech0_moe.serving.ray_serve.admin import residency

                resident[e.device] = [r["expert"] for r in residency(config.ray_settings())]
            else:
                runtime = make_runtime(e.runtime)
                runtime.timeout = 5.0  # type: ignore[attr-defined]  # a listing does not wait for a hung host
                resident[e.device] = runtime.resident(e)
        except Ech0Error:
            resident[e.device] = None
    rows = [
        {
            "name": e.name,
            "domain": e.domain,
            "runtime": e.runtime,
            "placement": e.placement,
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
            f"  {r['name']:<12} {r['domain']:<17} {r['runtime']:<9} {format_size(r['size_bytes']):>8}  "
            f"file#{files[r['model']]} {os.path.basename(r['model'])}  {state}"
        )
    if any(r["device"] == "local" for r in rows):
        print("(in-process llama.cpp experts load on demand during a run: none is loaded between commands)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Deploy (or update) the Ray Serve application of a `backend: ray` pool; --status shows each
    replica's resident expert; --delete removes the application."""
    from ech0_moe.config import format_size
    from ech0_moe.serving.ray_serve import admin as cluster

    config = config_of(args)
    settings = config.ray_settings()
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
    from ech0_moe.owners import LOCAL
    from ech0_moe.paths import kb_dir
    from ech0_moe.routing.router import Router, taught_router
    from ech0_moe.text import check_query

    question = read_question(args)
    check_query(question)  # no graph here, so no `prepare` to check it
    config = config_of(args)
    ctx = context_of(args)
    router = taught_router(config, kb_dir(ctx.kb_dir), ctx.user or LOCAL) or Router(config)
    decision = router.route(question, top_k=args.top_k or 1)
    out = decision.as_dict()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{decision.expert} ({decision.domain}) confidence={decision.confidence} via {decision.method}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from ech0_moe.paths import experts_file
    from ech0_moe.validate import validate_pool

    path = experts_file(args.file or context_of(args).experts_file)
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
    from ech0_moe.routing.fit import fit_model
    from ech0_moe.routing.rows import config_data, label_rows

    if not 0 < args.split <= 1:
        raise Ech0Error(
            f"--split must be more than 0 and at most 1 (the share of each domain to fit on), got {args.split}"
        )
    out = Path(args.out)
    if not out.parent.is_dir():
        raise Ech0Error(f"--out {out}: no such folder {out.parent}")
    config = config_of(args)
    rows = load_jsonl(args.data, ("question",)) if args.data else []
    fit_rows, held = split_dev(rows, args.split, args.seed)
    t0 = time.perf_counter()
    model = fit_model(config, config_data(config) + label_rows(config, fit_rows, args.data or ""))
    try:
        model.save(out)
    except OSError as exc:
        raise Ech0Error(f"--out {out}: cannot write it ({exc.strerror or exc})") from None
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


def cmd_setup(args: argparse.Namespace) -> int:
    """Prepare the model files once: the demo's second GGUF copy and the ONNX encoders."""
    from ech0_moe.setup_models import main as setup

    setup()
    return 0


def add_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("setup", "once after installing: export the encoder to ONNX and prepare the demo's model files")
    p.set_defaults(func=cmd_setup)

    p = command("experts", "list the pool (and what each Ollama host holds)")
    p.set_defaults(func=cmd_experts)

    p = command("validate", "check an experts.yaml without loading a model; one line per problem")
    p.add_argument("file", nargs="?", help="the file to check (default: the --experts file)")
    p.set_defaults(func=cmd_validate)

    p = command("serve", "placement ray: deploy or update the Ray Serve application; --status shows the replicas")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--status", action="store_true", help="show each replica's resident expert (deploy nothing)")
    group.add_argument("--fresh", action="store_true", help="replace the replicas with new, empty ones")
    group.add_argument("--delete", action="store_true", help="remove the application from the cluster")
    p.set_defaults(func=cmd_serve)

    p = command("route", "route a question (no model is loaded)")
    p.add_argument("question", help="the question; - reads it from standard input")
    p.add_argument("--top-k", dest="top_k", type=int, metavar="N", help="how many experts to rank (default 1)")
    p.set_defaults(func=cmd_route)

    p = command("router", "router model: `router fit --out FILE.npz`")
    p.add_argument("action", choices=["fit"], help="fit")
    p.add_argument("--data", metavar="FILE", help="JSONL with 'question' and 'expert' or 'domain' to fit on as well")
    p.add_argument(
        "--split", type=float, default=1.0, metavar="F", help="fraction of each domain used to fit (default 1.0)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the fitted router (.npz)")
    p.set_defaults(func=cmd_router_fit)
