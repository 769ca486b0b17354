"""Run ``dagsync ARGS`` in this process and write its own peak RSS (kB) to ``$PERF_RSS_FILE``.

    python bench/perfkit/launcher.py once --repo ... --root ...

``VmHWM`` in /proc/self/status is this process's own high-water mark, reset by exec and not
counting children (git's index-pack is a child of dagsync and is reported apart). A child's
``ru_maxrss`` would not do: it never reads below the forking parent's (the bench harness).
"""

from __future__ import annotations

import os
import runpy
import sys


def own_peak_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    out = os.environ.pop("PERF_RSS_FILE", "")
    sys.argv = ["dagsync", *sys.argv[1:]]
    code: object = 0
    try:
        runpy.run_module("dagsync", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    finally:
        if out:
            with open(out, "w", encoding="ascii") as fh:
                fh.write(str(own_peak_kb()))
    sys.exit(code)


if __name__ == "__main__":
    # This file's folder must not shadow anything dagsync imports.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p) != os.path.dirname(__file__)]
    main()
