#!/usr/bin/env bash
# Installs what DwarfStar needs to build and test, from Debian packages.
# Idempotent: packages already present are not reinstalled.
set -euo pipefail
PKGS="build-essential libpcre2-dev libjansson-dev libedit-dev libmicrohttpd-dev liburing-dev tmux python3"
missing=""
for p in $PKGS; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "setup: installing$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
echo "setup: all build dependencies present"
