#!/usr/bin/env bash
# Static checks that need no broker or database: the type checker over messaging/ and the three
# services (mypy.ini), and the import contracts of the shared package's layering (.importlinter).
# .ci/run calls this before the tests; both tools are pinned in requirements-dev.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m mypy --config-file mypy.ini
lint-imports --config .importlinter
