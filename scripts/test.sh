#!/usr/bin/env bash
# Install what the tests need and run the whole suite (the README's test command; CI runs it too).
set -euo pipefail
cd "$(dirname "$0")/.."

# In CI the compiled codec must build: a silent fall-back to the pure-Python codec is a failure there.
if [ "${CI:-}" = "true" ]; then
  export MULTIFROST_REQUIRE_EXTENSION=1
fi

python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'

if command -v npm >/dev/null 2>&1; then
  (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
elif [ "${CI:-}" = "true" ]; then
  echo "npm is missing: the interop tests need Node.js 20 and npm (apt-get install nodejs npm)" >&2
  exit 1
fi

# The types: mypy with its default settings (pyproject.toml only lets untyped msgpack through).
python3 -m mypy multifrost

# The whole suite, with the compiled codec ...
python3 -m pytest -q "$@"
# ... and the codec and in-process RPC tests again with the pure-Python twin forced.
MULTIFROST_PUREPYTHON=1 python3 -m pytest -q -p no:cacheprovider tests/test_codec.py tests/test_rpc.py -k "memory or codec"
