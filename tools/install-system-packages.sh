#!/usr/bin/env bash
# Install the Debian/Ubuntu packages of tools/system-packages.txt that are missing.
#   install-system-packages.sh [GROUP...]   the packages without a group, plus those
#                                           marked @GROUP (e.g. test-ui: the browser)
# Idempotent: when all are present it installs nothing and says so.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
groups=" $* "
mapfile -t wanted < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/system-packages.txt" |
  awk -v groups="$groups" '$2 == "" || index(groups, " " substr($2, 2) " ") { print $1 }')

missing=()
for pkg in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all ${#wanted[@]} present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "error: missing system packages: ${missing[*]}" >&2
  echo "       run this as root (the lab is meant for a disposable VM where you are root)" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "error: apt-get not found: the lab supports Debian 12 and Ubuntu 22.04+ (use vagrant/)" >&2
  exit 1
fi
echo "system packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# JAP_DPKG_UNSAFE_IO=1 (vagrant/provision.sh sets it): dpkg unpacks without an fsync
# per file (dpkg(1), --force-unsafe-io). On a machine being provisioned a crash means
# provisioning again anyway; under emulation those syncs cost minutes.
opts=()
[ "${JAP_DPKG_UNSAFE_IO:-}" = 1 ] && opts+=(-o Dpkg::Options::=--force-unsafe-io)
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${opts[@]}" "${missing[@]}"
