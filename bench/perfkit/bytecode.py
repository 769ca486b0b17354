"""Benchmarks measure dagsync as it is installed: with its bytecode compiled.

``pip install dagsync`` (and so the Docker image) writes ``.pyc`` files at install time; a
checkout installed with ``pip install -e`` has none until the first import writes them, and a
shell with ``PYTHONDONTWRITEBYTECODE=1`` (set on some CI machines, and in our image, where
the wheel's bytecode already exists) never writes them: then every dagsync process compiles
its ~50 modules again, about 0.15-0.3 s of CPU that no installed dagsync pays.
"""

from __future__ import annotations

import compileall
from pathlib import Path

import dagsync


def compile_dagsync() -> str:
    """Compile dagsync's modules in place (as pip does on install); returns a note for the
    report."""
    package = Path(dagsync.__file__).resolve().parent
    compileall.compile_dir(package, quiet=1)
    return f"bytecode: dagsync's modules compiled in place before measuring ({package})"
