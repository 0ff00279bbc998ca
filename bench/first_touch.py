"""What the first touch of memory costs on this machine, cold and warm.

Every tool in the suite writes gigabytes of memory it has just been given. On a virtual
machine whose host takes back the guest's free memory (a balloon with free page
reporting, as this project's VM has), a page the guest has not used for a few seconds
must be supplied by the host again on its first write: that shows up as system time in
whichever process touches it first. This script measures it: a fresh process writes
SIZE GiB after PAUSE seconds of rest (cold), then another fresh process writes the same
amount right after the first one freed it (warm). ``--pages`` chooses how the memory is
mapped: ``huge`` (numpy's default: it advises huge pages for arrays of 4 MiB or more),
``small`` (4 KiB pages, as sessionize's kernel asks numpy for on such a machine) or
``both`` (each in turn, huge first).

    python bench/first_touch.py [--gib 2] [--pause 5] [--repeats 3] [--pages both]

It uses only numpy and the standard library.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CHILD = """
import json, resource, sys, time
import numpy as np
try:
    from numpy._core.multiarray import _set_madvise_hugepage
except ImportError:
    from numpy.core.multiarray import _set_madvise_hugepage
_set_madvise_hugepage(sys.argv[2] == "huge")
start = time.perf_counter(); before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
a = np.ones(int(float(sys.argv[1]) * (1 << 27)), np.int64)  # 8 bytes each
print(json.dumps({"seconds": time.perf_counter() - start,
                  "system": resource.getrusage(resource.RUSAGE_SELF).ru_stime - before}))
"""


def touch(gib: float, pages: str = "huge") -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(gib), pages], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0, help="memory written per process")
    parser.add_argument("--pause", type=float, default=5.0,
                        help="seconds of rest before the cold run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pages", choices=("huge", "small", "both"), default="both",
                        help="huge pages (numpy's default), 4 KiB pages, or each in turn")
    args = parser.parse_args(argv)
    kinds = ("huge", "small") if args.pages == "both" else (args.pages,)
    print(f"{'repeat':>6}  {'pages':>5}  {'cold s':>7}  {'cold sys':>8}  {'warm s':>7}  "
          f"{'warm sys':>8}  (writing {args.gib:g} GiB in a fresh process)")
    for repeat in range(1, args.repeats + 1):
        for pages in kinds:
            time.sleep(args.pause)
            cold = touch(args.gib, pages)
            warm = touch(args.gib, pages)
            print(f"{repeat:>6}  {pages:>5}  {cold['seconds']:7.2f}  {cold['system']:8.2f}  "
                  f"{warm['seconds']:7.2f}  {warm['system']:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
