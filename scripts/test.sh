#!/usr/bin/env bash
# Install what the tests need and run the whole suite (the README's test command; CI runs it too).
set -euo pipefail
cd "$(dirname "$0")/.."

# In CI the compiled codec must build: a silent fall-back to the pure-Python codec is a failure there.
if [ "${CI:-}" = "true" ]; then
  export MULTIFROST_REQUIRE_EXTENSION=1
fi

python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'

# The Redis registry and multi-host tests start their own redis-server (Debian's package) and
# build hosts out of network namespaces (iproute2's ip, root only).
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = "0" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing </dev/null >/dev/null
  elif [ "${CI:-}" = "true" ]; then
    echo "missing:$missing; run this script as root (it installs them) or apt-get install$missing" >&2
    exit 1
  fi
fi

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
