#!/usr/bin/env bash
# promtool, which the suite uses to check and unit-test the Prometheus alert rules
# (monitoring/prometheus/): Debian's `prometheus` package, installed without starting its server.
#
#   scripts/promtool.sh install   apt-get install prometheus once (idempotent); its service is not started
#   scripts/promtool.sh path      print the executable the tests use
set -euo pipefail
PROMTOOL="${PW_PROMTOOL:-/usr/bin/promtool}"

case "${1:-help}" in
    install)
        if [ -x "$PROMTOOL" ]; then
            echo "promtool: $("$PROMTOOL" --version 2>&1 | head -1) already installed"
            exit 0
        fi
        if [ "$(id -u)" != 0 ]; then
            echo "promtool: installing Debian's prometheus package needs root (apt-get); run as root or: sudo $0 install" >&2
            exit 1
        fi
        export DEBIAN_FRONTEND=noninteractive
        # The package's maintainer scripts would start a Prometheus server (port 9090): we want only its
        # promtool. RUNLEVEL=1 makes invoke-rc.d start no service; a server started anyway is stopped.
        export RUNLEVEL=1
        apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1 || {
            apt-get update -qq
            apt-get install -y --no-install-recommends prometheus
        }
        if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
            systemctl disable --now prometheus >/dev/null 2>&1 || true
        fi
        echo "promtool: $("$PROMTOOL" --version 2>&1 | head -1) installed"
        ;;
    path)
        echo "$PROMTOOL"
        ;;
    *)
        sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
        ;;
esac
