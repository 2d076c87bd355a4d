#!/usr/bin/env bash
# Install the Debian packages the tests drive for real, if any is missing (needs root or sudo).
set -euo pipefail
wanted=(curl:curl redis-server:redis-server chromium:chromium npm:npm nginx:nginx-light)
missing=()
for pair in "${wanted[@]}"; do
  bin="${pair%%:*}"
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing+=("${pair#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
