# Sourced by the scripts that serve test images from Debian's docker-registry (critest, the
# benchmarks): start_registry DIR ADDR starts one on ADDR (host:port) with its storage, log
# and configuration in DIR, waits until it answers, and sets REGISTRY_PID; it exits the
# calling script, with the registry's log (and the registry ended), if it never answers.
start_registry() {
    mkdir -p "$1"
    cat >"$1/config.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $1/storage
http:
  addr: $2
  secret: berth-test-registry
YML
    docker-registry serve "$1/config.yml" >"$1/log" 2>&1 &
    REGISTRY_PID=$!
    tries=0
    until curl -fsS -o /dev/null "http://$2/v2/" 2>/dev/null; do
        tries=$((tries + 1))
        if [ $tries -ge 300 ] || ! kill -0 "$REGISTRY_PID" 2>/dev/null; then
            echo "$0: docker-registry on $2 did not start:" >&2
            cat "$1/log" >&2
            kill "$REGISTRY_PID" 2>/dev/null
            exit 1
        fi
        sleep 0.1
    done
}
