"""`ech0-moe bench modes` / `ech0_moe.benchmark`: the modes and pools compared on answers.

Every mode answers the same questions through the real graph, each run starting cold (nothing
loaded, an empty knowledge base): accuracy, prompt tokens before and after compression,
completion tokens, loads, load seconds and p50/p95 seconds per question. Multiple-choice rows
(`choices` + `answer`) are scored by the option the expert picks (`choices.py`: log-probabilities
with llama.cpp, a letter read from the answer elsewhere; the report says which); rows with a
reference `answer` text count as right when the answer contains it (case and punctuation aside).

- `baseline="single"`: every question answered by the general expert alone;
- `oracle=True`: every question answered by the expert of its own `domain`;
  both beside the routed (basic) run, per domain: does routing to specialists help?
- `learning=True`: a second optimized pass over the same questions on the knowledge base the
  first pass filled (with the experts' answers only: the answer key is never stored).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ech0_moe import datasets
from ech0_moe.bench.common import latency
from ech0_moe.choices import LETTERS, check_choices
from ech0_moe.config import PoolConfig, load_pool
from ech0_moe.errors import InputError
from ech0_moe.graph import Context, build_graph, result_of
from ech0_moe.graph.context import MODES
from ech0_moe.services import Services, no_kb
from ech0_moe.vote import normalise


@dataclass(frozen=True)
class Question:
    """One benchmark row: the question, its options (none = open), the right option's index or
    the reference text, and its domain (for the per-domain tables and the oracle)."""

    question: str
    choices: tuple[str, ...]
    answer: int | str
    domain: str = ""

    def is_right(self, result: dict[str, Any]) -> bool:
        if self.choices:
            return result["choice"] == self.answer
        reference = normalise(str(self.answer))
        return bool(reference) and reference in normalise(result["solution"])


def questions_of(rows: Sequence[dict[str, Any]], source: str = "questions") -> list[Question]:
    """Benchmark questions from rows of `question`, optional `choices`, `answer` (an option's
    index, its letter or its text; else the reference text) and optional `domain`."""
    out = []
    for n, row in enumerate(rows, 1):
        where = f"{source}: row {n}"
        question, answer = row.get("question"), row.get("answer")
        if not isinstance(question, str) or not question.strip():
            raise InputError(f"{where}: needs a 'question' string")
        try:
            choices = check_choices(row.get("choices"))
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        if choices:
            index = _option_index(answer, choices)
            if index is None:
                raise InputError(f"{where}: 'answer' must be an option's index, letter or text, got {answer!r}")
            answer = index
        elif not isinstance(answer, str) or not answer.strip():
            raise InputError(f"{where}: needs 'choices' + 'answer', or a reference 'answer' text")
        out.append(Question(question, tuple(choices), answer, str(row.get("domain") or "")))
    if not out:
        raise InputError(f"{source}: no questions")
    return out


def _option_index(answer: object, choices: list[str]) -> int | None:
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
        return answer
    if isinstance(answer, str):
        text = answer.strip()
        if len(text) == 1 and text.upper() in LETTERS[: len(choices)]:
            return LETTERS.index(text.upper())
        if text in choices:
            return choices.index(text)
    return None


def summarise(questions: Sequence[Question], results: Sequence[dict[str, Any]], seconds: list[float]) -> dict:
    """Accuracy (overall and per domain), tokens, loads and per-question seconds of one run."""
    right = [q.is_right(r) for q, r in zip(questions, results, strict=True)]
    by_domain: dict[str, list[bool]] = defaultdict(list)
    for q, ok in zip(questions, right, strict=True):
        by_domain[q.domain or "-"].append(ok)
    tokens: Counter[str] = Counter()
    for r in results:
        tokens.update({k: v for k, v in r["tokens"].items() if isinstance(v, int)})
    before, after = tokens["prompt_before_compression"], tokens["prompt_after_compression"]
    return {
        "questions": len(results),
        "accuracy": round(sum(right) / len(right), 4),
        "accuracy_by_domain": {d: round(sum(v) / len(v), 4) for d, v in sorted(by_domain.items())},
        "errors": sum(bool(r["error"]) for r in results),
        "no_choice": sum(q.choices != () and r["choice"] < 0 for q, r in zip(questions, results, strict=True)),
        "choice_method": dict(Counter(r["choice_method"] for r in results if r["choice_method"])),
        "prompt_tokens_before_compression": before,
        "prompt_tokens_after_compression": after,
        "prompt_tokens_saved": round(1 - after / before, 4) if before else 0.0,
        "completion_tokens": tokens["completion"],
        "loads": sum(bool(r["swapped"]) for r in results),
        "load_seconds": round(sum(r["load_seconds"] for r in results), 3),
        **latency(seconds),
        "total_seconds": round(sum(seconds), 2),
        "retrieved_learned": sum(any(c["kind"] == "learned" for c in r["retrieved_contexts"]) for r in results),
    }


class _Runner:
    """Runs the questions through the graph, each run on a cold pool and its own knowledge base."""

    def __init__(self, base: Services, context: Context, workdir: Path, bar: tqdm) -> None:
        self.base, self.context, self.workdir, self.bar = base, context, workdir, bar
        self._services: dict[str, Services] = {}

    def services(self, kb_name: str) -> Services:
        """The pool and router with the knowledge base `kb_name` (one per run; made once)."""
        from ech0_moe.memory.kb import KnowledgeBase

        if kb_name not in self._services:
            folder = self.workdir / kb_name
            self._services[kb_name] = self.base.with_kb(lambda: KnowledgeBase(folder))
        return self._services[kb_name]

    def run(
        self,
        label: str,
        questions: Sequence[Question],
        mode: str,
        svc: Services,
        expert: Callable[[Question], str] | None = None,
        cold: bool = True,
    ) -> dict[str, Any]:
        if cold:
            svc.pool.unload_all()
        graph = build_graph(services=svc)
        results, seconds = [], []
        self.bar.set_postfix_str(label)
        for q in questions:
            request = {"query": q.question, "mode": mode, "choices": list(q.choices)}
            if expert:
                request["expert"] = expert(q)
            t0 = time.perf_counter()
            results.append(result_of(graph.invoke(request, context=self.context)))
            seconds.append(time.perf_counter() - t0)
            self.bar.update()
        return summarise(questions, results, seconds)


def benchmark(
    questions: Sequence[Question | dict[str, Any]],
    *,
    experts_file: str = "",
    modes: Sequence[str] = MODES,
    context: Context | None = None,
    services: Services | None = None,
    baseline: str | None = None,
    oracle: bool = False,
    learning: bool = True,
    progress: bool = True,
    plot: str | Path | None = None,
    kb_root: str | Path | None = None,
) -> dict[str, Any]:
    """Compare `modes` (and the single-expert baseline, the domain oracle, a learning pass) on
    `questions` (rows as in `questions_of`, or `Question`s). Each run's knowledge base is a
    folder of `kb_root` named after it (default: a temporary folder, removed). Returns one
    JSON-ready dict."""
    asked = [q if isinstance(q, Question) else questions_of([q])[0] for q in questions]
    for mode in modes:
        if mode not in MODES:
            raise InputError(f"unknown mode {mode!r}; use {', '.join(MODES)}")
    if baseline not in (None, "single"):
        raise InputError(f"unknown baseline {baseline!r}; use single")
    context = context or Context(experts_file=experts_file)
    passes = len(modes) + bool(baseline) + bool(oracle) + bool(learning) * (1 + ("optimized" not in modes))
    bar = tqdm(total=passes * len(asked), desc="bench modes", unit="q", file=sys.stderr, disable=not progress)
    with tempfile.TemporaryDirectory(prefix="ech0-bench-modes-") as tmp:
        runner = _Runner(services or _services(context), context, Path(kb_root or tmp), bar)
        config = runner.base.config
        multiple = [q for q in asked if q.choices]
        chance = sum(1 / len(q.choices) for q in multiple) / len(multiple) if multiple else 0.0
        out: dict[str, Any] = {
            "questions": len(asked),
            "multiple_choice": len(multiple),
            "chance_accuracy": round(chance, 4),  # picking an option at random
            "experts": len(config.experts),
            "modes": {},
        }
        for mode in modes:
            out["modes"][mode] = runner.run(mode, asked, mode, runner.services(mode))
        if baseline:
            general = config.general_expert
            single = runner.run("single", asked, "basic", runner.services("single"), lambda q: general)
            out["single"] = {"expert": general, **single}
        if oracle:
            out["oracle"] = runner.run("oracle", asked, "basic", runner.services("oracle"), _oracle(config))
        if learning:
            svc = runner.services("optimized")  # the knowledge base the first optimized pass filled
            first = out["modes"].get("optimized") or runner.run("optimized", asked, "optimized", svc)
            second = runner.run("second pass", asked, "optimized", svc, cold=False)
            out["learning"] = {
                "first_pass": _brief(first),
                "second_pass": _brief(second),
                "knowledge_base_entries": svc.kb.stats()["entries"],
            }
        bar.close()
    out["by_domain"] = _domain_table(out)
    if plot:
        out["plot"] = str(draw(out, Path(plot)))
    return out


def _brief(run: dict[str, Any]) -> dict[str, Any]:
    keys = ("accuracy", "p50_seconds", "total_seconds", "retrieved_learned")
    return {k: run[k] for k in keys}


def _oracle(config: PoolConfig) -> Callable[[Question], str]:
    """Each question's own expert: the first expert of its domain (the general expert if none)."""
    by_domain: dict[str, str] = {}
    for e in config.experts:
        by_domain.setdefault(e.domain, e.name)
    return lambda q: by_domain.get(q.domain, config.general_expert)


def _domain_table(out: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per domain: routed (basic) vs single vs oracle accuracy, where those runs exist."""
    runs = {"routed": out["modes"].get("basic"), "single": out.get("single"), "oracle": out.get("oracle")}
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for name, run in runs.items():
        for domain, accuracy in (run or {}).get("accuracy_by_domain", {}).items():
            table[domain][name] = accuracy
    return dict(sorted(table.items()))


def _services(context: Context) -> Services:
    """The pool and router of the context's experts file (each run brings its own knowledge base)."""
    return Services.create(load_pool(context.experts_file), kb=no_kb)


def draw(out: dict[str, Any], path: Path) -> Path:
    """Accuracy and p50 seconds per run (modes, single, oracle, second pass) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = dict(out["modes"])
    for extra in ("single", "oracle"):
        if extra in out:
            runs[extra] = out[extra]
    if "learning" in out:
        runs["optimized, 2nd pass"] = out["learning"]["second_pass"]
    names = list(runs)
    fig, (acc, secs) = plt.subplots(1, 2, figsize=(10, 4))
    acc.bar(names, [runs[n]["accuracy"] for n in names], color="tab:blue")
    if out["chance_accuracy"]:
        acc.axhline(out["chance_accuracy"], color="gray", linestyle="--", label="chance")
        acc.legend(loc="upper right")
    acc.set_ylabel("accuracy")
    acc.set_ylim(0, 1)
    acc.set_title(f"accuracy ({out['questions']} questions)")
    secs.bar(names, [runs[n]["p50_seconds"] for n in names], color="tab:orange")
    secs.set_ylabel("seconds per question (p50)")
    secs.set_title("time")
    for axis in (acc, secs):
        axis.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        metavar="FILE",
        default=str(datasets.ROUTING_DEV),
        help="JSONL: question + choices + answer, or a reference answer (default: benchmarks/routing-dev.jsonl)",
    )
    parser.add_argument("--modes", metavar="LIST", help=f"which, comma-separated (default: {','.join(MODES)})")
    parser.add_argument("--limit", type=int, metavar="N", help="N rows of --data, balanced over domains (seeded)")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    parser.add_argument("--baseline", choices=("single",), help="also answer everything with the general expert")
    parser.add_argument("--oracle", action="store_true", help="also answer with each question's domain expert")
    parser.add_argument("--no-learning", dest="no_learning", action="store_true", help="skip the second pass")
    parser.add_argument("--plot", metavar="PNG", help="draw accuracy and seconds per run")
    parser.add_argument("--max-tokens", dest="max_tokens", type=int, metavar="N", help="answer length cap in tokens")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The four modes (and baselines) answering the same questions, each run cold."""
    rows = datasets.load_jsonl(args.data, ("question",))
    if args.limit:
        rows = datasets.sample(rows, args.limit, args.seed)
    modes = [m.strip() for m in (args.modes or ",".join(MODES)).split(",") if m.strip()]
    return benchmark(
        questions_of(rows, args.data),
        modes=modes,
        context=Context.of(**vars(args)),
        baseline=args.baseline,
        oracle=args.oracle,
        learning=not args.no_learning,
        plot=args.plot,
    )
