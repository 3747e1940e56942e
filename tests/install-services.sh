#!/usr/bin/env bash
# Installs what the tests talk to for real, from Debian's packages: Chromium (headless
# screenshots). Idempotent; without root or apt-get it says so and the tests that need these
# programs skip with a reason.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)

if [ ${#missing[@]} -eq 0 ]; then
    echo "services: all present"
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "services: cannot install ${missing[*]} (needs root and apt-get); tests that need them will skip"
    exit 0
fi
echo "services: installing ${missing[*]} from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
