#!/usr/bin/env bash
# Seed corpora for the fuzz targets, from committed files (fuzz/corpus/ is git-ignored):
# every .gwp under policies/, examples/ and the compiler's diagnostic and formatter test
# inputs, plus every committed regression input. Idempotent; existing corpus files are kept.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(parse compile_structured roundtrip differential)
mapfile -t policies < <(find policies examples compiler/tests/invalid compiler/tests/fmt -type f -name '*.gwp' | sort)
for t in "${targets[@]}"; do
    dir="fuzz/corpus/$t"
    mkdir -p "$dir"
    for f in "${policies[@]}"; do
        # One flat file per seed; the name keeps where it came from.
        cp -f "$f" "$dir/seed-$(printf '%s' "$f" | tr '/' '_')"
    done
    if [ -d "fuzz/regressions/$t" ]; then
        find "fuzz/regressions/$t" -type f ! -name '.*' ! -name '*.md' -exec cp -f {} "$dir/" \;
    fi
done
echo "seeded ${#policies[@]} policy files into fuzz/corpus/<target> for: ${targets[*]}"
