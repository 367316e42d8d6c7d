#!/usr/bin/env bash
# Download bench/gpu_requirements.txt as cp312 manylinux wheels into .whl/ (git-ignored),
# for a GPU machine that has PyTorch but no network. With --split, wheels over 60 MB are
# cut into 60 MB pieces (.whl/NAME.partNN) so each transfer stays under 64 MiB; join them
# there with `cat NAME.part* > NAME`.
#
#   bash bench/gpu_wheels.sh            # -> .whl/*.whl
#   bash bench/gpu_wheels.sh --split
#
# Then, on the GPU machine, from the repository root:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site python3 bench/gpu_check.py gpu-check-results
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
grep -v '^\s*#' bench/gpu_requirements.txt | grep -v '^\s*$' | while read -r req; do
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d .whl "$req" || echo "could not fetch $req" >&2
done
if [ "${1:-}" = "--split" ]; then
    for f in .whl/*.whl; do
        if [ "$(stat -c %s "$f")" -gt 62914560 ]; then
            split -b 60M -d "$f" "$f.part" && rm "$f"
        fi
    done
fi
ls -la .whl
