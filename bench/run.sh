#!/bin/sh
# make bench: every benchmark script in bench/ (each prints its own side-by-side table).
set -eu
cd "$(dirname "$0")/.."
status=0
for script in bench/*.sh; do
    [ "$script" = bench/run.sh ] && continue
    [ -x "$script" ] || continue
    echo "==== $script"
    "$script" || status=1
done
exit $status
