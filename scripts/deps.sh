#!/usr/bin/env bash
# Install what bitslab needs to build and test on Debian 12 (as root, or via sudo).
# Installs only what is missing, so it is cheap to call again.
set -euo pipefail
pkgs=(meson ninja-build pkg-config cmake gcc clang libclang-rt-14-dev check liburcu-dev spin valgrind
      python3 python3-jsonschema python3-matplotlib sqlite3 git redis-server memcached)
pkgs+=("$@")
missing=()
for p in "${pkgs[@]}"; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
