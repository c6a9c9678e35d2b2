#!/bin/sh
# Installs the Debian packages listed in tools/debian-packages.txt that are not yet installed.
# Idempotent and quiet when everything is present, so `make` can call it every time.
set -eu
list="$(dirname "$0")/debian-packages.txt"
missing=""
for pkg in $(sed -e 's/#.*//' "$list"); do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    case "$status" in
        *"install ok installed"*) ;;
        *) missing="$missing $pkg" ;;
    esac
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing Debian packages:$missing (run as root to install them)" >&2
    exit 1
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null || apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
