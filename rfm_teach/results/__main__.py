"""python -m rfm_teach.results: validate every stored run (schema, provenance, file hashes)."""

import sys

from . import _main

sys.exit(_main())
