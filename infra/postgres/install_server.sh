#!/usr/bin/env bash
# Install the PostgreSQL server (initdb, pg_ctl, postgres) with apt when it is missing.
#
# The integration tests start a throwaway PostgreSQL with initdb/pg_ctl; this script is what they
# (and people) run on a machine that only has the client. Safe to run again: it does nothing
# when a server is already installed. Works as root or through sudo; prints every step.
set -euo pipefail

say() { printf 'install_server.sh: %s\n' "$*"; }

find_initdb() {
    if command -v initdb >/dev/null 2>&1; then
        command -v initdb
        return 0
    fi
    # Debian and Ubuntu keep the server binaries in a versioned folder that is not on PATH.
    local candidate
    for candidate in $(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V -r); do
        if [ -x "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if existing=$(find_initdb); then
    say "PostgreSQL server already installed: $existing (nothing to do)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    say "initdb not found and apt-get is not available: install the PostgreSQL server (15 or newer) with your package manager" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    say "initdb not found; run this script as root or install sudo" >&2
    exit 1
fi

say "initdb not found: installing the 'postgresql' package with apt-get"
say "running: ${SUDO[*]:+${SUDO[*]} }apt-get update"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
say "running: ${SUDO[*]:+${SUDO[*]} }apt-get install -y --no-install-recommends postgresql"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql

if installed=$(find_initdb); then
    say "PostgreSQL server installed: $installed"
else
    say "apt-get finished but initdb is still missing" >&2
    exit 1
fi
