#!/usr/bin/env bash
# Debian's Chromium for the site's browser tests (tests/test_site_browser.py), installed once
# when missing; a machine that has /usr/bin/chromium skips this. Without root or sudo the
# browser tests are skipped with a reason instead.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
sudo=""
if [ "$(id -u)" != "0" ]; then
    if ! command -v sudo >/dev/null; then echo "no root and no sudo: browser tests will be skipped"; exit 0; fi
    sudo="sudo"
fi
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
