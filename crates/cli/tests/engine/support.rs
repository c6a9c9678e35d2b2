//! The engine suite's harness: one temp store root with the test images, a configuration that
//! gives the suite its own cgroup parent, default network (bridge name and subnet) and
//! berth-init; `berth` commands; and the leak check that ends the suite. The reaper (the suite
//! is the subreaper of every monitor it starts), waiting, terminals and the leak check's core
//! are berth_testkit's, shared with the other suites.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

pub struct Suite {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub config: PathBuf,
    pub berth: PathBuf,
    pub cgroup_parent: String,
    pub network: String,
    pub bridge: String,
    pub subnet: String,
    /// iptables chains the CNI plugins create that did not exist before the suite
    pub new_chains: Vec<(String, String)>,
    pub ip_forward: String,
}

pub const IMAGE: &str = "localhost/berth-test/busybox:1";
pub const APP: &str = "localhost/berth-test/app:1";
/// busybox with an Entrypoint, a Cmd and a User in its config
pub const ENTRY: &str = "localhost/berth-test/entry:1";

static SUITE: OnceLock<Suite> = OnceLock::new();

pub fn suite() -> &'static Suite {
    SUITE.get().expect("suite initialised")
}

fn target_dir() -> PathBuf {
    // target/debug/deps/engine-xxxx → target
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().parent().unwrap().to_path_buf()
}

/// The iptables chains of the filter and nat tables.
fn iptables_chains() -> Vec<(String, String)> {
    iptables_rules()
        .into_iter()
        .filter_map(|(table, rule)| Some((table, rule.strip_prefix("-N ")?.to_string())))
        .collect()
}

pub fn init() {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("berth-engine-test-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let target = target_dir();
    let berth = PathBuf::from(env!("CARGO_BIN_EXE_berth"));
    for bin in ["berth-monitor", "berth-oci"] {
        assert!(
            target.join("debug").join(bin).is_file(),
            "{bin} is not built in {}: run `cargo build --workspace --bins` (make test does) before the engine tests",
            target.join("debug").display()
        );
    }
    let init = berth_testkit::init::berth_init(&target.join("init"));
    let network = format!("bt{pid}");
    let bridge = format!("btb{}", pid % 1_000_000);
    let subnet = berth_testkit::network::free_subnet(pid);
    let cgroup_parent = format!("/berth-test-{pid}");
    // A runtime handler from berth.toml: runc behind a wrapper that reports neither seccomp
    // nor exec (how the engine treats a runtime that lacks them).
    let limited = dir.join("limited-runtime");
    write_script(
        &limited,
        "#!/bin/sh\ncase \"$1\" in features|exec) echo \"limited: no $1\" >&2; exit 1;; --version) echo limited 0.1; exit 0;; esac\nexec runc \"$@\"\n",
    );
    // One whose create fails after making the container's cgroup (as crun does on a host it
    // refuses): what it made must not outlive the container.
    let leaky = dir.join("leaky-runtime");
    write_script(
        &leaky,
        "#!/bin/sh\ncase \"$1\" in features) exit 1;; --version) echo leaky 0.1; exit 0;; esac\n\
         bundle=; cmd=; prev=\nfor a in \"$@\"; do\n  case \"$prev\" in --bundle|-b) bundle=$a;; esac\n\
           [ -z \"$cmd\" ] && case \"$a\" in create|delete|state|kill|start) cmd=$a;; esac\n  prev=$a\ndone\n\
         if [ \"$cmd\" = create ]; then\n\
           path=$(grep -o '\"cgroupsPath\": *\"[^\"]*\"' \"$bundle/config.json\" | sed 's/.*\"\\([^\"]*\\)\"$/\\1/')\n\
           mkdir -p \"/sys/fs/cgroup/pids$path\" 2>/dev/null || mkdir -p \"/sys/fs/cgroup$path\"\n\
           echo \"leaky: create failed after making $path\" >&2; exit 1\nfi\nexec runc \"$@\"\n",
    );
    let config = dir.join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[engine]\ncgroup-parent = \"{cgroup_parent}\"\ninit = \"{}\"\nlog-max-size = 4096\n[engine.network]\ndefault-name = \"{network}\"\ndefault-bridge = \"{bridge}\"\ndefault-subnet = \"{subnet}\"\n[engine.runtimes.limited]\npath = \"{}\"\n[engine.runtimes.leaky]\npath = \"{}\"\n",
            init.display(),
            limited.display(),
            leaky.display()
        ),
    )
    .unwrap();
    // Monitors (double-forked by berth) are re-parented to us.
    berth_testkit::children::become_subreaper(&dir);
    let before = iptables_chains();
    let ip_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default().trim().to_string();
    let root = dir.join("root");
    SUITE
        .set(Suite {
            dir: dir.clone(),
            root,
            config,
            berth,
            cgroup_parent,
            network,
            bridge,
            subnet,
            new_chains: before,
            ip_forward,
        })
        .ok()
        .expect("init once");
    import_images(&suite().root);
}

/// The test images: busybox alone (no command), and an "app" with a full image config.
pub fn import_images(root: &Path) {
    use berth_testkit::image::{busybox_layer, Compression, Layer, LayerBuilder, OciLayout};
    let layout_dir = suite().dir.join(format!("layout-{}", root.file_name().unwrap().to_string_lossy()));
    let bb = busybox_layer(&suite().dir).expect("busybox layer (is busybox-static installed?)");
    let mut extra = LayerBuilder::new();
    extra.dir("data/", 0o755).file("data/seed", 0o644, b"from the image\n").file(
        "var/www/app.txt",
        0o644,
        b"app page\n",
    );
    let mut layout = OciLayout::create(&layout_dir).unwrap();
    let plain = layout
        .image(&[Layer { tar: bb.clone(), compression: Compression::Gzip }], serde_json::json!({}), "amd64")
        .unwrap();
    layout.tag(IMAGE, &plain.manifest_descriptor).unwrap();
    let app = layout
        .image(
            &[
                Layer { tar: bb.clone(), compression: Compression::Gzip },
                Layer { tar: extra.finish(), compression: Compression::Gzip },
            ],
            serde_json::json!({
                "Cmd": ["httpd", "-f", "-p", "80", "-h", "/var/www"],
                "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "APP_MODE=test"],
                "WorkingDir": "/var/www",
                "ExposedPorts": {"80/tcp": {}},
                "Volumes": {"/data": {}},
                "Labels": {"org.example.role": "web"},
                "StopSignal": "SIGUSR1"
            }),
            "amd64",
        )
        .unwrap();
    layout.tag(APP, &app.manifest_descriptor).unwrap();
    let entry = layout
        .image(
            &[Layer { tar: bb, compression: Compression::Gzip }],
            serde_json::json!({
                "Entrypoint": ["/bin/echo", "from-entrypoint"],
                "Cmd": ["default-arg"],
                "User": "user"
            }),
            "amd64",
        )
        .unwrap();
    layout.tag(ENTRY, &entry.manifest_descriptor).unwrap();
    berth_in(root, &["load", "-q", "-i", layout_dir.to_str().unwrap()]).ok("load test images");
}

// ------------------------------------------------------------------------------------- processes

pub use berth_testkit::check::wait_until;
pub use berth_testkit::children::{run, spawn, spawn_with_stdin_pipe, Output};
pub use berth_testkit::host::{is_cgroup2, write_script};
pub use berth_testkit::leaks::iptables_rules;
pub use berth_testkit::terminal::Terminal;

pub fn berth_cmd(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(&suite().berth);
    c.arg("--root").arg(root).arg("--config").arg(&suite().config).args(args);
    c.env_remove("BERTH_ROOT").env_remove("BERTH_CONFIG");
    c
}

pub fn berth_in(root: &Path, args: &[&str]) -> Output {
    run(&mut berth_cmd(root, args))
}

pub fn berth(args: &[&str]) -> Output {
    berth_in(&suite().root, args)
}

pub fn berth_stdin(args: &[&str], input: &[u8]) -> Output {
    berth_testkit::children::run_with_stdin(&mut berth_cmd(&suite().root, args), input)
}

pub fn inspect(name: &str) -> Value {
    let o = berth(&["inspect", name]).ok("inspect");
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    v[0].clone()
}

/// A unique container name for a test.
pub fn name(test: &str) -> String {
    format!("t{}-{test}", std::process::id())
}

/// Removes a container whatever its state (for test cleanup).
pub struct Cleanup(pub Vec<String>);

/// A unique container name for a test, and the guard that removes that container when the
/// test ends, however it ends.
pub fn named(test: &str) -> (String, Cleanup) {
    let n = name(test);
    (n.clone(), Cleanup(vec![n]))
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = berth(&["rm", "-f", "-v", n]);
        }
    }
}

/// An HTTP GET on 127.0.0.1:port; the body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut s =
        std::net::TcpStream::connect_timeout(&format!("127.0.0.1:{port}").parse().unwrap(), Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut r = String::new();
    s.read_to_string(&mut r)?;
    Ok(r.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or(r))
}

/// A container's cgroup: in the v1 `hierarchy`, or on a pure v2 host its one directory.
pub fn container_cgroup(hierarchy: &str, id: &str) -> PathBuf {
    berth_testkit::host::cgroup_path(hierarchy, &format!("{}/{id}", suite().cgroup_parent))
}

// ---------------------------------------------------------------------------------- the end

/// What the suite left behind, then removes the suite's own network, chains and directory.
pub fn check_leaks() -> Vec<String> {
    let s = suite();
    let mut leaks = Vec::new();
    let left = berth(&["ps", "-a", "-q"]);
    if !left.stdout.trim().is_empty() {
        leaks.push(format!("containers: {}", left.stdout.trim().replace('\n', " ")));
        for id in left.stdout.split_whitespace() {
            let _ = berth(&["rm", "-f", "-v", id]);
        }
    }
    let _ = berth(&["network", "rm", &s.network]);
    let net = s.subnet.trim_end_matches("0/24");
    let scope = berth_testkit::leaks::Scope {
        dir: s.dir.clone(),
        cgroup: s.cgroup_parent.trim_start_matches('/').to_string(),
        // what each container has while it exists (a `--rm` container's exit record may
        // outlive it in run/containers for the `run` waiting on it, so that one is not here)
        state_roots: ["containers", "run/netns", "cni", "run/locks", "snapshots", "build-tmp"]
            .iter()
            .map(|d| s.root.join(d))
            .collect(),
        interfaces: vec![s.bridge.clone()],
        markers: vec![net.to_string(), format!("t{}-", std::process::id())],
        settle: Duration::from_secs(10),
        ..Default::default()
    };
    leaks.extend(berth_testkit::leaks::leaks(&scope));
    berth_testkit::host::remove_cgroups(&scope.cgroup);
    // The chains the CNI plugins share between all containers (firewall, portmap): removed
    // again when the suite created them and no container (anyone's) uses them now. The chains
    // of one container (CNI-<hash>, CNI-DN-<hash>) are its CNI DEL's to remove, never the
    // suite's: they may be another runtime's, made while the suite ran, and flushing them
    // broke that runtime's DEL.
    let before = &s.new_chains;
    let created: Vec<(String, String)> = iptables_chains()
        .into_iter()
        .filter(|(t, c)| !before.contains(&(t.clone(), c.clone())) && SHARED_CNI_CHAINS.contains(&c.as_str()))
        .collect();
    let rules = iptables_rules();
    let in_use = rules.iter().any(|(table, rule)| {
        let words = shell_words(rule);
        let owner = words.get(1).map(String::as_str).unwrap_or_default();
        let target = words.iter().position(|w| w == "-j").and_then(|i| words.get(i + 1));
        rule.starts_with("-A ")
            && created.iter().any(|(t, c)| t == table && c == owner)
            && (words.iter().any(|w| w == "-s" || w == "-d")
                || target.is_some_and(|t| t.starts_with("CNI-") && !SHARED_CNI_CHAINS.contains(&t.as_str())))
    });
    if !in_use {
        for (table, chain) in &created {
            for (_, l) in rules.iter().filter(|(t, _)| t == table) {
                if l.ends_with(&format!("-j {chain}")) && !l.starts_with(&format!("-A {chain} ")) {
                    let del = shell_words(&l.replacen("-A ", "-D ", 1));
                    let _ = run(Command::new("iptables").args(["-t", table]).args(&del));
                }
            }
        }
        for (table, chain) in &created {
            let _ = run(Command::new("iptables").args(["-t", table, "-F", chain]));
        }
        for (table, chain) in &created {
            let _ = run(Command::new("iptables").args(["-t", table, "-X", chain]));
        }
    }
    let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", &s.ip_forward);
    leaks
}

/// The chains the firewall and portmap plugins create once and share.
const SHARED_CNI_CHAINS: &[&str] = &[
    "CNI-FORWARD",
    "CNI-ADMIN",
    "CNI-HOSTPORT-DNAT",
    "CNI-HOSTPORT-SNAT",
    "CNI-HOSTPORT-SETMARK",
    "CNI-HOSTPORT-MASQ",
];

/// `iptables -S` output split as a shell would (comments are in double quotes).
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            '\\' if quoted => cur.extend(chars.next()),
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

pub fn cleanup_suite_dir() {
    let _ = std::fs::remove_dir_all(&suite().dir);
}

// ------------------------------------------------------------------------------ terminals

/// `berth args` on a new terminal of `rows` x `cols` (see berth_testkit::terminal).
pub fn berth_on_terminal(args: &[&str], rows: u16, cols: u16) -> Terminal {
    Terminal::spawn(berth_cmd(&suite().root, args), rows, cols)
}
