#!/usr/bin/env bash
# Fetches the Alpaca demo data (ARCHITECTURE.md, "Assets"): 999 records {instruction, input, output}
# from the sdist of llamafactory==0.9.5 on PyPI, into assets/data/alpaca_en_demo.json.
# Idempotent. Needs python3 with pip (only to download the sdist).
set -euo pipefail
cd "$(dirname "$0")/.."
out=assets/data/alpaca_en_demo.json
[ -f "$out" ] && { echo "$out is ready"; exit 0; }
work=assets/download
mkdir -p "$work" "$(dirname "$out")"
sdist="$work/llamafactory-0.9.5.tar.gz"
[ -f "$sdist" ] || python3 -m pip download --quiet --disable-pip-version-check --no-deps \
  --no-binary :all: llamafactory==0.9.5 -d "$work"
tmp=$(mktemp "$out.XXXXXX")
tar -xzOf "$sdist" llamafactory-0.9.5/data/alpaca_en_demo.json > "$tmp"
mv "$tmp" "$out"
echo "wrote $out"
