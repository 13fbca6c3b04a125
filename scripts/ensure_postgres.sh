#!/usr/bin/env bash
# Make PostgreSQL's server binaries available for the tests that run real servers on
# loopback (tests/test_postgres.py starts and stops its own throwaway cluster).
# Installs Debian's package when missing and we are root; otherwise says why not.
set -u
if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing PostgreSQL from Debian's packages for the server tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
    || echo "warning: could not install PostgreSQL; its tests will fail in CI and skip elsewhere"
else
  echo "note: PostgreSQL server binaries not found (install package postgresql); its tests will skip"
fi
exit 0
