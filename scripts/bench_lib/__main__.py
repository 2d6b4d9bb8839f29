"""python -m bench_lib (scripts/bench runs this with scripts/ on the path)."""

import sys

from bench_lib.cli import main

sys.exit(main())
