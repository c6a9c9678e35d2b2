#!/bin/sh
# berth-oci's integration suite against runc and crun (Debian's), as a comparison:
#   tools/test-oci-peers.sh [FILTER]      the tests whose names contain FILTER (default: all)
# `make test` runs the conformance tests this way (FILTER conformance::), where a peer's known
# differences from berth-oci are skipped by name with the runtime-spec's verdict
# (DIFFERENCES in crates/berth-oci/tests/oci/main.rs); `make compare-oci` runs the whole suite,
# whose assertions on berth-oci's own error texts fail for the peers by design.
# Both peers run inside a private mount namespace without the cgroup2 mount, as bench/oci.sh
# runs them: Debian's crun 1.8 refuses hybrid cgroup hosts (the host's mounts stay untouched).
set -eu
cd "$(dirname "$0")/.."
filter=${1:-}
for t in runc crun; do
    command -v $t >/dev/null || { echo "test-oci-peers: $t is missing (make deps)" >&2; exit 1; }
done
testbin=$(cargo test -p berth-oci --test oci --no-run --message-format=json 2>/dev/null \
    | grep '"kind":\["test"\]' | grep '"name":"oci"' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
[ -x "$testbin" ] || { echo "test-oci-peers: could not build the integration test binary" >&2; exit 1; }
status=0
for peer in runc crun; do
    echo "== berth-oci's integration suite against $peer${filter:+ ($filter)}"
    BERTH_OCI_TEST_RUNTIME=$peer unshare --mount --propagation private sh -c '
        if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified; fi
        exec "$@"' sh "$testbin" $filter || status=1
done
exit $status
