#!/bin/sh
# azd prepackage hook: compile the telemetry fold (shared/native.py) into .native/ before `azd deploy` zips the
# project, so the Functions worker (Linux x86-64, CPython 3.11) runs it compiled. Built only where the result
# can load there: on Linux x86-64 with Python 3.11 and a C compiler (`make native` needs the dev requirements).
# Anywhere else, or if the build fails, any existing .native/ is removed and the app runs the same fold
# interpreted (TELEMETRY_COMPILED decides only between a usable build and none; docs/performance.md).
set -eu

cd "$(dirname "$0")/../.."

if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] && command -v python3.11 >/dev/null && command -v cc >/dev/null && command -v make >/dev/null \
  && make native && .venv/bin/python -m native.build --check; then
  echo "prepackage: the telemetry fold is compiled (.native/)"
else
  rm -rf .native
  echo "prepackage: the telemetry fold ships interpreted (no Linux x86-64 build here)"
fi
