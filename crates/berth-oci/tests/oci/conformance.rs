//! The runtime-spec conformance gaps found by running the runtime-spec's validation suite and
//! crun's test suite against berth-oci (issue 10), one test each. They run against runc and
//! crun too (tools/test-oci-peers.sh); where a peer behaves differently, main.rs's
//! DIFFERENCES says which is right per the runtime-spec and the test is skipped for that peer,
//! loudly.

use serde_json::json;

use crate::support::*;

// ------------------------------------------------------------------------------------- hooks

/// (Item 18.) Hooks that exit without reading their state: a few hundred containers in a row all
/// start and exit 0. The state written to a hook that had already gone raised SIGPIPE in the
/// writer: in the container's init (createContainer, startContainer) it killed the init, in a
/// foreground `run` (prestart, poststart) it was forwarded to the container.
pub fn hooked_containers_stress() {
    let mut c = Ctr::new("hookstress", &["echo", "ran"]);
    let t = json!([{"path": "/bin/true"}]);
    c.config()["hooks"] = json!({"prestart": t, "createContainer": t, "startContainer": t, "poststart": t});
    c.write_bundle();
    for i in 0..300 {
        let id = format!("{}-{i}", c.id);
        let out = run(&mut c.command(&["run", "--bundle", c.bundle.dir.to_str().unwrap(), &id]));
        assert_eq!((out.code, out.stdout.as_str()), (0, "ran\n"), "run {i}: {}", out.stderr);
    }
    c.assert_gone();
}
