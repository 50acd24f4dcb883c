"""A damaged saved vector index is found before this process reads it.

Chroma keeps the HNSW index of a big enough store in files beside its SQLite database
(`<segment>/data_level0.bin`, ...). Random bytes in them crash Chroma's native reader
(SIGSEGV): no Python error can be raised after the fact. So before a process opens a store
whose saved index changed since it was last read safely, a child process opens it and runs
one query; if the child dies by a signal, the store is refused with one line (the graph then
answers without retrieval, with a warning). A store read safely is stamped (sizes and checksums
of its index files' content), so the probe runs once per change, not on every open.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import zlib
from pathlib import Path

from ech0_moe.errors import KnowledgeBaseError

STAMP_FILE = ".ech0-index-ok"
PROBE_TIMEOUT_S = 120
_PROBE = """
import sys
import chromadb
from chromadb.config import Settings
from ech0_moe.memory.store import MiniLMEmbeddingFunction
client = chromadb.PersistentClient(path=sys.argv[1], settings=Settings(anonymized_telemetry=False))
col = client.get_collection(sys.argv[2], embedding_function=MiniLMEmbeddingFunction())
if col.count():
    col.query(query_embeddings=[[1.0] + [0.0] * (int(sys.argv[3]) - 1)], n_results=1, include=[])
"""


def index_files(folder: Path) -> list[Path]:
    """The saved HNSW index files of the store in `folder` (none for a small store)."""
    return sorted(p for segment in folder.iterdir() if segment.is_dir() for p in segment.glob("*.bin"))


def _checksum(path: Path) -> int:
    """CRC-32 of a file's bytes: an index of 50k entries (~85 MB) in about 0.05 s."""
    crc = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            crc = zlib.crc32(block, crc)
    return crc


def _stamp(files: list[Path]) -> str:
    """What the probe vouches for: each index file's name, size and content (bit rot, or a restore
    that keeps sizes and times and carries the stamp along, is probed again)."""
    return json.dumps([[p.parent.name, p.name, p.stat().st_size, _checksum(p)] for p in files])


def check_index(folder: Path, collection: str, dim: int) -> None:
    """Raise `KnowledgeBaseError` when reading the store's saved index would crash this process."""
    files = index_files(folder) if folder.is_dir() else []
    if not files:
        return
    stamp, stamp_file = _stamp(files), folder / STAMP_FILE
    with contextlib.suppress(OSError):
        if stamp_file.read_text() == stamp:
            return
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, str(folder), collection, str(dim)],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return  # slow, not crashed: this process reads it as usual
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        raise KnowledgeBaseError(
            f"knowledge base {folder}: its saved vector index ({files[0].parent.name}) is damaged "
            f"(reading it crashed with {name}); nothing was changed: move the folder away, or remove "
            "that index folder to have Chroma report what it can still read"
        )
    if proc.returncode == 0:  # read safely: not probed again until the index changes
        with contextlib.suppress(OSError):
            stamp_file.write_text(stamp)
