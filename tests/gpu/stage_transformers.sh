#!/usr/bin/env bash
# Stage transformers for tests/gpu/test_transformers.py and transformers_throughput.py: the GPU machine (Python
# 3.12, x86_64) has no package index. Run here, in the project root; it writes .gpu-stage/transformers (git-ignored,
# under 64 MiB: one carry). On the GPU machine, in the command that carries it:
#   pip install -q --no-index --no-deps --target /tmp/tf-site .gpu-stage/transformers/*.whl
#   export PYTHONPATH=/tmp/tf-site:$PWD:$PYTHONPATH
set -euo pipefail
out=.gpu-stage/transformers
rm -rf "$out"
mkdir -p "$out"
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$out" "transformers==5.24.0"
rm -f "$out"/numpy-* "$out"/packaging-* "$out"/pyyaml-* "$out"/PyYAML-*  # the GPU machine's torch stack has them
du -sh "$out"
