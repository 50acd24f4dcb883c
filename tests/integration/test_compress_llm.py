"""LLM compression with the real general expert (SmolLM2 through llama.cpp), fact-checked."""

from __future__ import annotations

from pathlib import Path

from ech0_moe.services import ServiceRegistry

ROOT = Path(__file__).resolve().parents[2]
DOC = (
    "The Hubble Space Telescope was launched into low Earth orbit in 1990 and remains in operation. "
    "It was built by NASA with contributions from the European Space Agency. Basically, it is really "
    "quite a famous instrument, and many people have heard of it. Its main mirror is 2.4 metres across. "
) * 4


def test_llm_compression_with_the_real_general_expert(tmp_path: Path) -> None:
    svc = ServiceRegistry().for_run(ROOT / "experts.yaml", tmp_path / "kb")
    c = svc.compressor("llm").compress("When was the Hubble Space Telescope launched?", [DOC], 0.3)
    assert c.method in ("llm", "extractive (llm dropped a fact)")
    assert "1990" in c.context and c.ratio <= 0.35
