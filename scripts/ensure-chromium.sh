#!/usr/bin/env bash
# The browser tests (tests/checklist/test_browser.py) drive Debian's Chromium through
# Playwright; nothing downloads a browser at run time. Install it when it is missing.
set -euo pipefail
chromium=${SWITCHBOARD_CHROMIUM:-/usr/bin/chromium}
if [ -x "$chromium" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "The browser tests need Chromium at $chromium: apt-get install -y chromium (as root)." >&2
  exit 1
fi
echo "installing Chromium (Debian package) for the browser tests"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
