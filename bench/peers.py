"""Peer toolkits, each in its own virtualenv under a cache folder, installed on first use.

    python bench/peers.py            # install every peer (idempotent)
    python bench/peers.py joeynmt    # one peer

Set SEQSMITH_BENCH_CACHE to move the cache (default: ~/.cache/seqsmith-bench).
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

CACHE = Path(os.environ.get("SEQSMITH_BENCH_CACHE", Path.home() / ".cache" / "seqsmith-bench"))

# Each peer's install line, as its users would type it on this machine (see bench/README.md for why).
PEERS: dict[str, list[list[str]]] = {
    "joeynmt": [["torch==2.13.0", "joeynmt==2.3.0", "importlib_metadata", "sentencepiece==0.1.99"]],
    "opennmt": [["torch==2.13.0", "OpenNMT-py==3.0.4"]],
    "hf": [["torch==2.13.0", "transformers", "sentencepiece", "ctranslate2", "sacremoses"]],
    "fairseq": [["torch==2.13.0", "fairseq==0.12.2"]],
}


def python_of(name: str) -> Path:
    return CACHE / name / "bin" / "python"


def ensure(name: str) -> Path:
    """The peer's python, installing the virtualenv first if needed."""
    python = python_of(name)
    marker = CACHE / name / ".installed"
    if marker.is_file():
        return python
    venv.create(CACHE / name, with_pip=True, clear=True)
    for packages in PEERS[name]:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    marker.write_text("\n".join(" ".join(p) for p in PEERS[name]) + "\n")
    return python


if __name__ == "__main__":
    for peer in sys.argv[1:] or list(PEERS):
        try:
            print(peer, ensure(peer))
        except subprocess.CalledProcessError as error:
            print(peer, "install failed:", error, file=sys.stderr)
