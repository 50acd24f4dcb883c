"""`kb add` of the documents users have, made by real writers: a PDF (fpdf2), an HTML page with
navigation and scripts, a DOCX with headings and a table (python-docx); and the files it must
skip with a reason, storing nothing of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ech0_moe.memory.kb import KnowledgeBase


def _pdf(path: Path, pages: list[str]) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    pdf.output(str(path))
    return path


@pytest.fixture
def documents(tmp_path: Path) -> Path:
    from docx import Document
    from fpdf import FPDF
    from pypdf import PdfReader, PdfWriter

    folder = tmp_path / "docs"
    folder.mkdir()
    _pdf(
        folder / "manual.pdf",
        [
            "The Zephyr pump is primed by opening the bleed valve for ten seconds.",
            "Replace the Zephyr pump's impeller seal every 4000 operating hours.",
        ],
    )
    (folder / "page.html").write_text(
        "<html><head><title>Garden</title><script>var tracking = 'SECRETSCRIPT';</script>"
        "<style>.x{color:red}</style></head><body>"
        "<nav><a href='/'>Home</a> NAVIGATIONLINKS <a href='/about'>About</a></nav>"
        "<main><h1>Tomato care</h1><p>Water tomatoes at the base in the early morning.</p>"
        "<h2>Pruning</h2><p>Pinch out the side shoots of cordon tomatoes weekly.</p></main>"
        "<footer>FOOTERTEXT copyright</footer></body></html>",
        encoding="utf-8",
    )
    doc = Document()
    doc.add_heading("Travel policy", level=1)
    doc.add_paragraph("Economy class is booked for flights shorter than six hours.")
    table = doc.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "City", "Daily allowance"
    table.cell(1, 0).text, table.cell(1, 1).text = "Lisbon", "95 euros"
    doc.save(str(folder / "policy.docx"))
    scanned = FPDF()  # a page with a drawing and no text layer
    scanned.add_page()
    scanned.rect(20, 20, 100, 60, style="F")
    scanned.output(str(folder / "scan.pdf"))
    writer = PdfWriter()
    for page in PdfReader(str(_pdf(tmp_path / "open.pdf", ["Secret budget figures."]))).pages:
        writer.add_page(page)
    writer.encrypt(user_password="hunter2", owner_password="hunter2")
    with open(folder / "locked.pdf", "wb") as fh:
        writer.write(fh)
    whole = (folder / "manual.pdf").read_bytes()
    (folder / "cut.pdf").write_bytes(whole[: len(whole) // 2])
    (folder / "cut.docx").write_bytes((folder / "policy.docx").read_bytes()[:500])
    (folder / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    return folder


def test_pdf_html_and_docx_are_read_with_where_each_chunk_came_from(tmp_path: Path, documents: Path) -> None:
    kb = KnowledgeBase(tmp_path / "kb")
    report = kb.add_paths([documents], progress=False)
    assert report["added"] == 3, report
    skipped = {Path(line.split(":")[0]).name: line.split(": ", 1)[1] for line in report["skipped"]}
    assert skipped["scan.pdf"].startswith("no text layer")
    assert skipped["locked.pdf"].startswith("an encrypted PDF")
    assert skipped["cut.pdf"].startswith("a truncated PDF")
    assert skipped["cut.docx"].startswith("not a readable DOCX")
    assert skipped["photo.png"].startswith("not a type kb add reads")
    sources = {Path(s).name for s in _sources(kb)}
    assert sources == {"manual.pdf", "page.html", "policy.docx"}  # nothing half-read was stored

    seal = kb.search("How often is the impeller seal replaced?", k=1)[0]
    assert Path(seal.source).name == "manual.pdf" and seal.page == 2 and "4000" in seal.text
    prune = kb.search("How do I prune cordon tomatoes?", k=1)[0]
    assert Path(prune.source).name == "page.html" and prune.heading == "Pruning"
    allowance = kb.search("What is the daily allowance in Lisbon?", k=1)[0]
    assert Path(allowance.source).name == "policy.docx" and "95 euros" in allowance.text
    everything = " ".join(kb.col.get(include=["documents"])["documents"] or [])
    for junk in ("SECRETSCRIPT", "NAVIGATIONLINKS", "FOOTERTEXT", "color:red"):
        assert junk not in everything


def test_kb_search_and_the_answer_show_the_page(tmp_path: Path, documents: Path, run_cli) -> None:
    kb_dir = tmp_path / "kb"
    added = run_cli("kb", "add", str(documents / "manual.pdf"), kb=kb_dir)
    assert added.returncode == 0, added.stderr
    found = run_cli("kb", "search", "impeller seal replacement interval", kb=kb_dir)
    assert "manual.pdf, page 2" in found.stdout, found.stdout
    asked = run_cli("ask", "How often is the impeller seal replaced?", "--json", "--max-tokens", "8", kb=kb_dir)
    contexts = json.loads(asked.stdout)["retrieved_contexts"]
    assert any(c["page"] == 2 and c["source"].endswith("manual.pdf") for c in contexts), contexts


def _sources(kb: KnowledgeBase) -> set[str]:
    return {str(m["source"]) for m in kb.col.get(include=["metadatas"])["metadatas"] or []}


def test_fifos_devices_and_looping_symlinks_are_listed_not_read(tmp_path: Path) -> None:
    import os

    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "good.md").write_text("Kettles boil water quickly. " * 5)
    os.mkfifo(folder / "pipe.txt")
    (folder / "zero.txt").symlink_to("/dev/zero")
    (folder / "loop.txt").symlink_to(folder / "loop.txt")
    report = KnowledgeBase(tmp_path / "kb").add_paths([folder], progress=False)
    skipped = {Path(line.split(":")[0]).name: line.split(": ", 1)[1] for line in report["skipped"]}
    assert report["added"] == 1
    assert skipped["pipe.txt"].startswith("not a regular file")
    assert skipped["loop.txt"] == "a broken or looping symlink"
    assert skipped["zero.txt"].startswith(("a symlink out of", "not a regular file"))
