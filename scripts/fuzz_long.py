#!/usr/bin/env python3
"""The long fuzzing run of issue 18: every tests/test_fuzz_*.py property with at least 10 000 examples.

    .venv/bin/python scripts/fuzz_long.py [extra pytest args]

Runs pytest with ``HYPOTHESIS_PROFILE=long`` (tests/fuzzing.py) and hypothesis' statistics, prints them and a
one-line summary, and exits with pytest's status. Expect 30-60 min on 2 CPU cores. A failure prints the
falsifying example and a ``@reproduce_failure`` blob to paste onto the test.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    tests = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_fuzz_*.py"))
    command = [sys.executable, "-m", "pytest", *tests, "-q", "-p", "no:cacheprovider", "-o", "timeout=0",
               "--hypothesis-show-statistics", "-rxXf", *argv]
    env = dict(os.environ, HYPOTHESIS_PROFILE="long")
    print("running:", " ".join(command), flush=True)
    start = time.monotonic()
    status = subprocess.run(command, cwd=REPO, env=env, check=False).returncode
    print(f"fuzz_long: pytest exit {status} after {time.monotonic() - start:.0f} s "
          f"(profile long, {len(tests)} files)", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
