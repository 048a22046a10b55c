"""Run the property tests with the "deep" Hypothesis profile: the suite's properties, a far larger budget.

The suite runs every property with a fixed seed and 200 examples so that it
stays fast and reproducible; this script runs the same properties with a
random seed and (by default) 20,000 examples each, to look further for an
input that breaks a parser. A failure prints the shrunk input and a
``@reproduce_failure`` blob; add the input to the parser's table tests when
you fix it.

    python scripts/fuzz.py                        # every tests/test_properties*.py, 20,000 examples each
    python scripts/fuzz.py --examples 2000 -k host
    python scripts/fuzz.py --seed 1234            # replay one run's choices
    python scripts/fuzz.py -- -x --tb=short       # anything after -- goes to pytest
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
sys.path.insert(0, str(TESTS))

from hypothesis_profiles import BUDGET_VARIABLE, DEEP_MAX_EXAMPLES, PROFILE_VARIABLE  # noqa: E402


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=_positive, default=DEEP_MAX_EXAMPLES, help="examples per property")
    parser.add_argument("--seed", type=int, help="Hypothesis seed (default: random, printed by pytest)")
    parser.add_argument("-k", dest="keyword", help="only the properties whose names match (pytest -k)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    options = parser.parse_args(argv)

    files = sorted(str(path.relative_to(ROOT)) for path in TESTS.glob("test_properties*.py"))
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:randomly",
        "-n",
        "0",
        "-q",
        "--hypothesis-show-statistics",
        *files,
    ]
    if options.seed is not None:
        command.append(f"--hypothesis-seed={options.seed}")
    if options.keyword:
        command += ["-k", options.keyword]
    command += options.pytest_args
    env = {**os.environ, PROFILE_VARIABLE: "deep", BUDGET_VARIABLE: str(options.examples)}
    print(f"fuzz: {options.examples} examples per property: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
