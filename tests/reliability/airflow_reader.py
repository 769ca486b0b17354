"""A reader that looks at a DAG folder the way Airflow's DAG processor does, over and over until
a stop file appears: ``os.walk(followlinks=True)`` through the link, open and read every file,
import every module. Prints one JSON line: errors, walks, files read, modules imported.

Every file the campaign writes starts and ends with the same ``# generation G`` line, so a torn
read (a file partly one version, partly another, or cut short) shows.

    python airflow_reader.py FOLDER STOP_FILE EXPECTED_FILES
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

MAX_ERRORS = 20


def read_once(folder: str, expected: int, serial: int, errors: list[str]) -> tuple[int, int]:
    """One walk; returns (files read, modules imported)."""
    read = imported = 0
    for dirpath, _dirs, files in os.walk(folder, followlinks=True):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                with open(path, encoding="utf-8") as fh:
                    lines = fh.read().splitlines()
            except OSError as exc:
                errors.append(f"missing file: {path}: {exc.strerror}")
                continue
            read += 1
            if len(lines) < 2 or lines[0] != lines[-1]:
                errors.append(f"torn read: {path}")
                continue
            if not name.endswith(".py"):
                continue
            spec = importlib.util.spec_from_file_location(f"dag_{serial}_{read}", path)
            try:
                assert spec is not None and spec.loader is not None
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
                imported += 1
            except Exception as exc:  # what Airflow records as an import error
                errors.append(f"import error: {path}: {type(exc).__name__}: {exc}")
    if read != expected:
        errors.append(f"walk saw {read} files, expected {expected}")
    return read, imported


def main() -> None:
    folder, stop, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # Airflow reads from other pods; here the readers share two cores with dagsync. At a lower
    # priority they still read without pause, but only with the CPU dagsync leaves.
    os.nice(10)
    errors: list[str] = []
    walks = reads = imports = 0
    while not os.path.exists(stop) and len(errors) < MAX_ERRORS:
        if not os.path.exists(folder):
            continue  # before the first publish
        read, imported = read_once(folder, expected, walks, errors)
        walks += 1
        reads += read
        imports += imported
    print(json.dumps({"errors": errors, "walks": walks, "reads": reads, "imports": imports}))


if __name__ == "__main__":
    main()
