//! Property tests for config.json, which is hostile input: whatever the bytes, parsing and
//! everything create derives from the spec before touching the system (oci_runtime::plans::
//! derive_plans, which create runs on) return a value or an error naming config.json, never a
//! panic.
//!
//! Two generators: raw bytes, and mutations of a rich valid config (values replaced at random
//! places with random JSON, keys added from the spec's own vocabulary), which reach the deep
//! fields raw bytes never form. A few thousand cases run in `make test`; PROPTEST_CASES raises it.

use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};

use oci_runtime::config::parse_spec;
use oci_runtime::plans::derive_plans;

/// A config that uses most of the spec: every mutation starts from it.
fn rich_config() -> Value {
    let mut c = oci_runtime::spec::default_spec(false);
    c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]);
    c["process"]["oomScoreAdj"] = json!(100);
    c["process"]["user"] = json!({"uid": 1000, "gid": 1000, "umask": 18, "additionalGids": [5, 6]});
    c["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 4});
    c["process"]["scheduler"] = json!({"policy": "SCHED_OTHER", "nice": 5});
    c["process"]["execCPUAffinity"] = json!({"initial": "0", "final": "0"});
    c["process"]["consoleSize"] = json!({"height": 30, "width": 100});
    c["linux"]["personality"] = json!({"domain": "LINUX"});
    c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1", "kernel.shmmni": "4096"});
    c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    c["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
    c["linux"]["devices"] = json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438}]);
    c["linux"]["resources"] = json!({
        "devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw"}],
        "memory": {"limit": 67108864, "reservation": 33554432, "swap": 134217728, "swappiness": 10},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 64},
        "blockIO": {"weight": 500, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
        "unified": {"memory.high": "max"}
    });
    c["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["clone"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}
        ]
    });
    c["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/data", "type": "bind", "source": "/tmp", "options": ["rbind", "ro", "idmap"],
        "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]
    }));
    c["hooks"] = json!({"prestart": [{"path": "/bin/true", "args": ["true"], "env": ["A=1"], "timeout": 5}]});
    c["annotations"] = json!({"org.example": "x"});
    c
}

/// Strings the spec gives meaning to, and some that often break parsers.
const WORDS: &[&str] = &[
    "",
    "/",
    ".",
    "..",
    "../../../etc",
    "/proc",
    "/proc/self/fd/3",
    "/dev/null",
    "/sys/fs/cgroup",
    "rootfs",
    "bind",
    "rbind",
    "ro",
    "rw",
    "rro",
    "nosuid",
    "noexec",
    "idmap",
    "ridmap",
    "private",
    "rshared",
    "size=1k",
    "mode=0",
    "remount",
    "tmpfs",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "none",
    "c",
    "b",
    "u",
    "p",
    "rwm",
    "CAP_SYS_ADMIN",
    "CAP_NOPE",
    "cap_kill",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_NOTIFY",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_TRACE",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_NOPE",
    "SCMP_CMP_NE",
    "SCMP_CMP_MASKED_EQ",
    "SCMP_CMP_GT",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_NOPE",
    "nosuchsyscall",
    "RLIMIT_NPROC",
    "RLIMIT_NOPE",
    "IOPRIO_CLASS_RT",
    "IOPRIO_CLASS_NOPE",
    "SCHED_FIFO",
    "SCHED_DEADLINE",
    "SCHED_NOPE",
    "SCHED_FLAG_RESET_ON_FORK",
    "LINUX32",
    "MPOL_BIND",
    "pid",
    "network",
    "user",
    "time",
    "cgroup",
    "0-3",
    "0,2-",
    "3-1",
    "99999",
    "-1",
    "1.2.0",
    "0.1",
    "2.0.0",
    "memory.max",
    "../cpu.max",
    "cpu.weight",
    "2MB",
    "1GB",
    "3KB",
    "net.ipv4.x",
    "kernel.nope",
    "a\u{0}b",
    "\u{202e}",
    "é",
];

/// Keys of the spec (and some near misses), so that additions land on fields that mean something.
const KEYS: &[&str] = &[
    "ociVersion",
    "process",
    "root",
    "mounts",
    "hooks",
    "linux",
    "annotations",
    "hostname",
    "domainname",
    "terminal",
    "user",
    "uid",
    "gid",
    "umask",
    "additionalGids",
    "args",
    "env",
    "cwd",
    "capabilities",
    "bounding",
    "effective",
    "inheritable",
    "permitted",
    "ambient",
    "rlimits",
    "type",
    "hard",
    "soft",
    "noNewPrivileges",
    "oomScoreAdj",
    "ioPriority",
    "class",
    "priority",
    "scheduler",
    "policy",
    "nice",
    "runtime",
    "deadline",
    "period",
    "flags",
    "execCPUAffinity",
    "initial",
    "final",
    "apparmorProfile",
    "selinuxLabel",
    "path",
    "readonly",
    "destination",
    "source",
    "options",
    "uidMappings",
    "gidMappings",
    "containerID",
    "hostID",
    "size",
    "namespaces",
    "devices",
    "major",
    "minor",
    "fileMode",
    "access",
    "allow",
    "resources",
    "memory",
    "limit",
    "reservation",
    "swap",
    "swappiness",
    "disableOOMKiller",
    "cpu",
    "shares",
    "quota",
    "cpus",
    "mems",
    "realtimeRuntime",
    "realtimePeriod",
    "idle",
    "burst",
    "pids",
    "blockIO",
    "weight",
    "leafWeight",
    "weightDevice",
    "throttleReadBpsDevice",
    "rate",
    "hugepageLimits",
    "pageSize",
    "unified",
    "network",
    "rdma",
    "cgroupsPath",
    "seccomp",
    "defaultAction",
    "defaultErrnoRet",
    "architectures",
    "listenerPath",
    "listenerMetadata",
    "syscalls",
    "names",
    "action",
    "errnoRet",
    "index",
    "value",
    "valueTwo",
    "op",
    "sysctl",
    "maskedPaths",
    "readonlyPaths",
    "rootfsPropagation",
    "mountLabel",
    "personality",
    "domain",
    "timeOffsets",
    "secs",
    "nanosecs",
    "intelRdt",
    "memoryPolicy",
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
    "timeout",
    "consoleSize",
    "height",
    "width",
    "commandLine",
    "windows",
    "solaris",
    "vm",
];

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(WORDS).prop_map(str::to_string),
        2 => any::<String>(),
        1 => (prop::sample::select(WORDS), 1usize..5000).prop_map(|(w, n)| w.repeat(n.min(5000 / w.len().max(1)))),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        4 => (0u64..70000).prop_map(Value::from),
        3 => prop::sample::select(&[0i64, 1, -1, 2, 4095, 4096, 65536, i32::MAX as i64, u32::MAX as i64][..])
            .prop_map(Value::from),
        1 => any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

/// Every place in `v` (as a JSON pointer): its containers (objects, arrays) and its leaves.
fn places(v: &Value, at: String, containers: &mut Vec<String>, leaves: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            containers.push(at.clone());
            for (k, c) in m {
                places(c, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), containers, leaves);
            }
        }
        Value::Array(a) => {
            containers.push(at.clone());
            for (i, c) in a.iter().enumerate() {
                places(c, format!("{at}/{i}"), containers, leaves);
            }
        }
        _ => leaves.push(at),
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace a string, number or boolean with another of its kind (which the typed parser
    /// accepts, so the value reaches the checks behind it).
    SameKind(Index, String, Value, bool),
    /// Replace one member of a container with a random value.
    Replace(Index, Index, Value),
    /// Add (or overwrite) a key of an object, or push onto an array.
    Add(Index, &'static str, Value),
    /// Remove one member.
    Remove(Index, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        12 => (any::<Index>(), string(), number(), any::<bool>()).prop_map(|(a, s, n, b)| Mutation::SameKind(a, s, n, b)),
        1 => (any::<Index>(), any::<Index>(), json_value()).prop_map(|(a, b, v)| Mutation::Replace(a, b, v)),
        1 => (any::<Index>(), prop::sample::select(KEYS), json_value()).prop_map(|(a, k, v)| Mutation::Add(a, k, v)),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Remove(a, b)),
    ]
}

fn apply(config: &mut Value, m: &Mutation) {
    let (mut containers, mut leaves) = (Vec::new(), Vec::new());
    places(config, String::new(), &mut containers, &mut leaves);
    let pick = |i: &Index| containers[i.index(containers.len())].clone();
    match m {
        Mutation::SameKind(at, string, number, boolean) => {
            let Some(leaf) = config.pointer_mut(&leaves[at.index(leaves.len())]) else { return };
            match leaf {
                Value::String(_) => *leaf = Value::String(string.clone()),
                Value::Number(_) => *leaf = number.clone(),
                Value::Bool(_) => *leaf = Value::Bool(*boolean),
                _ => {}
            }
        }
        Mutation::Replace(at, member, value) => match config.pointer_mut(&pick(at)) {
            Some(Value::Object(o)) if !o.is_empty() => {
                let key = o.keys().nth(member.index(o.len())).unwrap().clone();
                o.insert(key, value.clone());
            }
            Some(Value::Array(a)) if !a.is_empty() => {
                let n = a.len();
                a[member.index(n)] = value.clone();
            }
            _ => {}
        },
        Mutation::Add(at, key, value) => match config.pointer_mut(&pick(at)) {
            Some(Value::Object(o)) => {
                o.insert(key.to_string(), value.clone());
            }
            Some(Value::Array(a)) => a.push(value.clone()),
            _ => {}
        },
        Mutation::Remove(at, member) => match config.pointer_mut(&pick(at)) {
            Some(Value::Object(o)) if !o.is_empty() => {
                let key = o.keys().nth(member.index(o.len())).unwrap().clone();
                o.remove(&key);
            }
            Some(Value::Array(a)) if !a.is_empty() => {
                let n = a.len();
                a.remove(member.index(n));
            }
            _ => {}
        },
    }
}

/// Parses and derives; an error must say it is about config.json.
fn check(bytes: &[u8]) {
    match parse_spec(bytes, "config.json") {
        Ok(spec) => {
            if let Err(e) = derive_plans(&spec, Path::new("/nonexistent-bundle")) {
                assert!(!e.to_string().is_empty());
            }
        }
        Err(e) => assert!(e.to_string().starts_with("config.json"), "{e}"),
    }
}

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(default);
    // Failures print their minimal input; nothing is written into the source tree.
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

#[test]
fn the_rich_config_is_valid() {
    let spec = parse_spec(&serde_json::to_vec(&rich_config()).unwrap(), "config.json").unwrap();
    derive_plans(&spec, Path::new("/nonexistent-bundle")).unwrap();
}

#[test]
fn errors_name_the_field() {
    let mut c = rich_config();
    c["linux"]["seccomp"]["syscalls"][1]["args"][0]["op"] = json!("SCMP_CMP_NOPE");
    let err = parse_spec(&serde_json::to_vec(&c).unwrap(), "config.json").unwrap_err().to_string();
    assert!(err.contains("linux.seccomp.syscalls[1].args[0].op"), "{err}");
    let mut c = rich_config();
    c["mounts"][7]["options"] = json!(["rbind", "remount"]);
    let spec = parse_spec(&serde_json::to_vec(&c).unwrap(), "config.json").unwrap();
    let err = derive_plans(&spec, Path::new("/b")).unwrap_err().to_string();
    assert!(err.contains("mounts[7].options") && err.contains("remount"), "{err}");
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes);
    }

    #[test]
    fn arbitrary_json(value in json_value()) {
        check(&serde_json::to_vec(&value).unwrap());
    }

}

proptest! {
    #![proptest_config(cases(6000))]

    #[test]
    fn mutated_configs(mutations in prop::collection::vec(mutation(), 1..5)) {
        let mut config = rich_config();
        for m in &mutations {
            apply(&mut config, m);
        }
        check(&serde_json::to_vec(&config).unwrap());
    }
}
