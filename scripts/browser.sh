#!/usr/bin/env bash
# The browser the console's tests drive: Debian's chromium, driven by Playwright for Python with
# the system executable (no `playwright install`, which downloads a browser build of its own).
#
#   scripts/browser.sh install   apt-get install chromium and a CJK font, once (idempotent)
#   scripts/browser.sh path      print the executable the tests use
set -euo pipefail
CHROMIUM="${PW_CHROMIUM:-/usr/bin/chromium}"
PACKAGES=(chromium fonts-wqy-microhei)  # the font: the console's Chinese, legible in screenshots

case "${1:-help}" in
    install)
        if [ -x "$CHROMIUM" ] && dpkg -s "${PACKAGES[@]}" >/dev/null 2>&1; then
            echo "browser: $("$CHROMIUM" --version 2>/dev/null) already installed"
            exit 0
        fi
        if [ "$(id -u)" != 0 ]; then
            echo "browser: installing chromium needs root (apt-get); run as root or: sudo $0 install" >&2
            exit 1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends "${PACKAGES[@]}" >/dev/null 2>&1 || {
            apt-get update -qq
            apt-get install -y --no-install-recommends "${PACKAGES[@]}"
        }
        echo "browser: $("$CHROMIUM" --version 2>/dev/null) installed"
        ;;
    path)
        echo "$CHROMIUM"
        ;;
    *)
        sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
        ;;
esac
