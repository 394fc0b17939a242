#!/usr/bin/env bash
# Re-resolve the dependencies in a fresh venv and rewrite constraints.txt (what CI installs).
# Run the suite afterwards (bash .ci/run) before committing the new pins.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet -e ".[dev]"
{
  echo "# Pinned versions CI installs with (pip install -c constraints.txt -e '.[dev]')."
  echo "# pyproject.toml keeps the ranges users install with; regenerate this on purpose when"
  echo "# dependencies move, then run the suite: bash tools/relock.sh"
  "$venv/bin/pip" freeze --all --exclude-editable | grep -v "^pip=="
} > constraints.txt
rm -rf "$(dirname "$venv")"
git diff --stat constraints.txt
