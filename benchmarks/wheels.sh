#!/usr/bin/env bash
# Wheels for a GPU machine without network whose Python lacks the CLI's packages (and the optional
# torchdeq of the suite's `torchdeq` workload): downloads them
# into .whl/ (run where PyPI is reachable), to be installed there with
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
set -eu
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
for pkg in jsonargparse==4.53.0 docstring-parser typeshed-client importlib-resources mlxtend torchdeq==0.1.0; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any -d .whl "$pkg"
done
ls -la .whl
