//! Networks: CNI configuration lists under `<root>/networks/<name>.conflist` (bridge +
//! host-local + portmap + firewall), the default one created on first use; and each
//! container's attachment: its pinned network namespace, loopback, CNI ADD with its port
//! mappings, and DEL (from the cached result) when it stops, is removed or is found dead.

use std::fs;
use std::path::{Path, PathBuf};

use berth_network::{bridge_conflist, bridge_of, Attachment, Cni, PortMapping, Subnet};
use serde::Serialize;
use serde_json::Value;

use crate::error::{bail, Context, Error, Result};
use crate::Engine;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkInfo {
    pub name: String,
    pub driver: String,
    pub bridge: String,
    pub subnet: String,
    pub gateway: String,
    pub default: bool,
    pub containers: Vec<String>,
    pub config: Value,
}

pub fn valid_network_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Destinations of the host's IPv4 routes (except the default route), to keep new subnets
/// clear of networks the host already reaches.
fn host_routes() -> Vec<Subnet> {
    let text = fs::read_to_string("/proc/net/route").unwrap_or_default();
    let mut out = Vec::new();
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Ok(dst), Ok(mask)) = (u32::from_str_radix(f[1], 16), u32::from_str_radix(f[7], 16)) else { continue };
        // Addresses in network byte order, printed as a host-order (little-endian) number.
        let (dst, mask) = (std::net::Ipv4Addr::from(dst.to_le_bytes()), u32::from_be_bytes(mask.to_le_bytes()));
        if mask == 0 {
            continue;
        }
        out.push(Subnet { addr: dst, len: mask.count_ones() as u8 });
    }
    out
}

impl Engine {
    pub fn networks_dir(&self) -> PathBuf {
        self.root.join("networks")
    }

    pub(crate) fn cni(&self) -> Cni {
        // On disk that outlives a reboot: DEL after one still needs what ADD made (host-local's
        // allocations stay in their data directory; iptables rules may be persisted).
        Cni::new(self.config.cni_dirs(), self.root.join("cni"))
    }

    fn conflist_path(&self, name: &str) -> PathBuf {
        self.networks_dir().join(format!("{name}.conflist"))
    }

    fn network_lock(&self) -> Result<fs::File> {
        fs::create_dir_all(self.networks_dir()).ctx(self.networks_dir().display())?;
        let p = self.networks_dir().join(".lock");
        let f = fs::File::options().create(true).truncate(false).write(true).open(&p).ctx(p.display())?;
        berth_sys::file::lock_exclusive(&f).ctx(format!("lock {}", p.display()))?;
        Ok(f)
    }

    /// The CNI configuration list of network `name` (`bridge` is the default network).
    pub fn network_config(&self, name: &str) -> Result<Value> {
        let name = if name == "bridge" { self.config.default_network().to_string() } else { name.to_string() };
        let p = self.conflist_path(&name);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).ctx(p.display()),
            Err(_) if name == self.config.default_network() => self.ensure_default_network(),
            Err(_) => bail!(NotFound, "no such network: {name}"),
        }
    }

    /// The network configuration pods attach to when a CNI configuration directory is given
    /// (as a cluster's network add-on installs it, e.g. /etc/cni/net.d/10-flannel.conflist):
    /// the first by file name of its `.conflist`, `.conf` and `.json` files, as kubelet's
    /// runtimes choose; a single plugin's configuration (`.conf`) becomes a one-plugin list.
    /// None when there is none yet; an unreadable or invalid file is an error naming it.
    pub fn pod_network_config(dir: &Path) -> Result<Option<(PathBuf, Value)>> {
        let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
            Ok(d) => d
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("conflist" | "conf" | "json"))
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx(dir.display()),
        };
        files.sort();
        let Some(path) = files.into_iter().next() else { return Ok(None) };
        let bytes = fs::read(&path).ctx(path.display())?;
        let mut conf: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid(format!("CNI configuration {}: {e}", path.display())))?;
        if conf.get("plugins").is_none() && conf.get("type").is_some() {
            conf = serde_json::json!({
                "cniVersion": conf.get("cniVersion").cloned().unwrap_or(Value::Null),
                "name": conf.get("name").cloned().unwrap_or(Value::Null),
                "plugins": [conf],
            });
        }
        let named = conf.get("name").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
        let plugins = conf.get("plugins").and_then(Value::as_array).map_or(0, Vec::len);
        if !named || plugins == 0 || conf.get("cniVersion").and_then(Value::as_str).is_none() {
            bail!(
                InvalidInput,
                "CNI configuration {}: needs a name, a cniVersion and at least one plugin",
                path.display()
            );
        }
        Ok(Some((path, conf)))
    }

    /// Creates the default bridge network if it does not exist yet.
    pub fn ensure_default_network(&self) -> Result<Value> {
        let name = self.config.default_network().to_string();
        let p = self.conflist_path(&name);
        if let Ok(b) = fs::read(&p) {
            return serde_json::from_slice(&b).ctx(p.display());
        }
        let subnet = self.config.network.default_subnet.clone().unwrap_or_else(|| crate::config::DEFAULT_SUBNET.into());
        let bridge = self.config.network.default_bridge.clone().unwrap_or_else(|| crate::config::DEFAULT_BRIDGE.into());
        match self.network_create(&name, Some(&subnet), Some(&bridge)) {
            Ok(n) => Ok(n.config),
            Err(e) if e.is(crate::Kind::AlreadyExists) && p.exists() => {
                serde_json::from_slice(&fs::read(&p).ctx(p.display())?).ctx(p.display())
            }
            Err(e) => Err(e.context("creating the default network")),
        }
    }

    /// `network create NAME [--subnet CIDR] [--bridge IFNAME]`
    pub fn network_create(&self, name: &str, subnet: Option<&str>, bridge: Option<&str>) -> Result<NetworkInfo> {
        if !valid_network_name(name) || matches!(name, "host" | "none" | "bridge") {
            bail!(InvalidInput, "invalid network name {name:?}");
        }
        let _l = self.network_lock()?;
        if self.conflist_path(name).exists() {
            bail!(AlreadyExists, "network {name} already exists");
        }
        let existing = self.network_list()?;
        let subnet = match subnet {
            Some(s) => Subnet::parse(s).map_err(|e| Error::invalid(e.to_string()))?,
            None => {
                // The first free 10.90.N.0/24.
                let mut pick = None;
                for n in 0..=255u32 {
                    let s = Subnet { addr: std::net::Ipv4Addr::from(0x0a5a_0000 | (n << 8)), len: 24 };
                    let taken =
                        existing.iter().any(|e| Subnet::parse(&e.subnet).map(|x| x.overlaps(&s)).unwrap_or(false))
                            || host_routes().iter().any(|r| r.overlaps(&s));
                    if !taken {
                        pick = Some(s);
                        break;
                    }
                }
                pick.ok_or_else(|| {
                    Error::new(crate::Kind::ResourceExhausted, "no free subnet in 10.90.0.0/16: give one with --subnet")
                })?
            }
        };
        for e in &existing {
            if Subnet::parse(&e.subnet).map(|x| x.overlaps(&subnet)).unwrap_or(false) {
                bail!(AlreadyExists, "subnet {subnet} overlaps network {} ({})", e.name, e.subnet);
            }
        }
        let bridge = match bridge {
            Some(b) => b.to_string(),
            None => {
                let mut n = 1;
                loop {
                    let b = format!("berth{n}");
                    if !existing.iter().any(|e| e.bridge == b)
                        && !std::path::Path::new("/sys/class/net").join(&b).exists()
                    {
                        break b;
                    }
                    n += 1;
                }
            }
        };
        if !berth_network::valid_ifname(&bridge) {
            bail!(InvalidInput, "bridge name {bridge:?} is not a valid interface name (1-15 characters)");
        }
        if let Some(e) = existing.iter().find(|e| e.bridge == bridge) {
            bail!(AlreadyExists, "bridge {bridge} is already used by network {}", e.name);
        }
        if host_routes().iter().any(|r| r.overlaps(&subnet))
            && !std::path::Path::new("/sys/class/net").join(&bridge).exists()
        {
            bail!(AlreadyExists, "subnet {subnet} overlaps a network this host already routes to");
        }
        let conf = bridge_conflist(name, &bridge, &subnet, &self.networks_dir().join("ipam"));
        // Written whole to a temporary file, then linked into place: readers never see a
        // partial file, and of two creators racing, one wins.
        let p = self.conflist_path(name);
        let tmp = self.networks_dir().join(format!(".tmp-{name}-{}", std::process::id()));
        fs::write(&tmp, serde_json::to_vec_pretty(&conf).unwrap_or_default()).ctx(tmp.display())?;
        let linked = fs::hard_link(&tmp, &p);
        let _ = fs::remove_file(&tmp);
        if let Err(e) = linked {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                bail!(AlreadyExists, "network {name} already exists");
            }
            return Err(e).ctx(p.display());
        }
        self.network_inspect(name)
    }

    pub fn network_list(&self) -> Result<Vec<NetworkInfo>> {
        let mut out = Vec::new();
        let dir = self.networks_dir();
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(name) = n.strip_suffix(".conflist") {
                if let Ok(i) = self.network_inspect(name) {
                    out.push(i);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn network_inspect(&self, name: &str) -> Result<NetworkInfo> {
        let name = if name == "bridge" { self.config.default_network() } else { name };
        let p = self.conflist_path(name);
        let conf: Value = match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).ctx(p.display())?,
            Err(_) => bail!(NotFound, "no such network: {name}"),
        };
        let (bridge, subnet) = bridge_of(&conf).unwrap_or_default();
        let gateway = Subnet::parse(&subnet).map(|s| s.gateway().to_string()).unwrap_or_default();
        let mut containers: Vec<String> = self
            .load_all()?
            .into_iter()
            .filter(|c| c.network_name(self).as_deref() == Some(name))
            .map(|c| c.name)
            .collect();
        // Pods are attached too (their containers share the pod's attachment).
        containers.extend(
            self.sandbox_list()?
                .into_iter()
                .filter(|s| s.state.network_attached && s.state.network == name)
                .map(|s| format!("pod {}", s.name)),
        );
        Ok(NetworkInfo {
            name: name.to_string(),
            driver: "bridge".into(),
            bridge,
            subnet,
            gateway,
            default: name == self.config.default_network(),
            containers,
            config: conf,
        })
    }

    /// Removes a network no container uses, and its bridge.
    pub fn network_remove(&self, name: &str) -> Result<()> {
        let info = self.network_inspect(name)?;
        if !info.containers.is_empty() {
            bail!(InvalidState, "network {name} is in use by container(s) {}", info.containers.join(", "));
        }
        let _l = self.network_lock()?;
        fs::remove_file(self.conflist_path(&info.name)).ctx(format!("remove network {name}"))?;
        let _ = fs::remove_dir_all(self.networks_dir().join("ipam").join(&info.name));
        if !info.bridge.is_empty() {
            berth_network::delete_link(&info.bridge)?;
        }
        Ok(())
    }

    /// Pins a new network namespace for the container, brings up its loopback and, on a
    /// bridge network, attaches it (CNI ADD with the port mappings). Returns the ADD result.
    pub(crate) fn network_setup(
        &self,
        id: &str,
        network: Option<&str>,
        ports: &[PortMapping],
        owner: Option<&Path>,
    ) -> Result<Option<Value>> {
        let conf = network.map(|n| self.network_config(n)).transpose()?;
        self.network_setup_with(id, conf.as_ref(), ports, owner)
    }

    /// `network_setup` with the network's configuration (a conflist) given.
    pub(crate) fn network_setup_with(
        &self,
        id: &str,
        conf: Option<&Value>,
        ports: &[PortMapping],
        owner: Option<&Path>,
    ) -> Result<Option<Value>> {
        let ns = self.netns_path(id);
        if ns.exists() {
            self.network_teardown(id);
        }
        match owner {
            // A pod's own user namespace owns its network namespace: its containers' root may
            // then mount sysfs and set its net.* sysctls, as root of a namespace it owns.
            Some(userns) => {
                let userns = berth_sys::file::open(userns, libc::O_RDONLY).ctx("the pod's user namespace")?;
                let fds = berth_sys::userns::unshare_in(&userns, &[libc::CLONE_NEWNET], None)
                    .ctx("a network namespace in the pod's user namespace")?;
                berth_sys::userns::pin(&fds[0], &ns)
            }
            None => berth_network::netns::create(&ns),
        }
        .ctx(format!("create network namespace {}", ns.display()))?;
        let cni = self.cni();
        let att = Attachment { container_id: id, netns: &ns, ifname: "eth0", port_mappings: ports };
        let r = (|| -> Result<Option<Value>> {
            cni.loopback("ADD", &att)?;
            match conf {
                Some(conf) => Ok(Some(cni.add(conf, &att)?)),
                None => Ok(None),
            }
        })();
        if r.is_err() {
            self.network_teardown(id);
        }
        r
    }

    /// CNI CHECK of a running container's attachments: the plugins verify that its interface,
    /// addresses, routes and port mappings are still as they set them up.
    pub fn network_check(&self, name_or_id: &str) -> Result<Vec<String>> {
        let c = self.get(name_or_id)?;
        if !c.running() {
            bail!(InvalidState, "container {} is not running", c.name);
        }
        let ns = self.netns_path(&c.id);
        let cni = self.cni();
        let mut checked = Vec::new();
        for (network, ifname) in cni.cached(&c.id) {
            let att = Attachment { container_id: &c.id, netns: &ns, ifname: &ifname, port_mappings: &[] };
            cni.check(&network, &att)?;
            checked.push(network);
        }
        Ok(checked)
    }

    /// CNI DEL of every cached attachment, then the namespace's pin. Best effort: errors are
    /// returned as text (the caller goes on cleaning up).
    pub(crate) fn network_teardown(&self, id: &str) -> Vec<String> {
        let mut errors = Vec::new();
        let ns = self.netns_path(id);
        let cni = self.cni();
        for (network, ifname) in cni.cached(id) {
            let att = Attachment { container_id: id, netns: &ns, ifname: &ifname, port_mappings: &[] };
            if let Err(e) = cni.del(&network, &att) {
                errors.push(e.to_string());
            }
        }
        if let Err(e) = berth_network::netns::remove(&ns) {
            errors.push(format!("remove network namespace {}: {e}", ns.display()));
        }
        errors
    }
}
