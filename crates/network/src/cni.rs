//! CNI plugin invocation, per the CNI specification: each plugin of a configuration list is
//! executed from `CNI_PATH` with `CNI_COMMAND` (ADD, DEL, CHECK), `CNI_CONTAINERID`,
//! `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS` and `CNI_PATH` in its environment and its network
//! configuration on stdin: the list's `cniVersion` and `name`, the plugin's own keys,
//! `runtimeConfig` holding the capabilities the plugin declares (here `portMappings`), and
//! `prevResult`. ADD runs the plugins in order, each getting the previous one's result; the
//! final result is cached on disk with the configuration it was made with, and DEL (in reverse
//! order) and CHECK are given that cached result and configuration, so a container is torn
//! down as it was set up even when the network definition changed or vanished since.
//! A failing plugin's error object (`code`, `msg`, `details`) becomes the error message.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Map, Value};

use crate::ports::PortMapping;
use crate::{Error, Result};

pub struct Cni {
    pub plugin_dirs: Vec<PathBuf>,
    pub cache_dir: PathBuf,
}

/// One container interface on one network.
pub struct Attachment<'a> {
    pub container_id: &'a str,
    pub netns: &'a Path,
    pub ifname: &'a str,
    pub port_mappings: &'a [PortMapping],
}

impl Cni {
    pub fn new(plugin_dirs: Vec<PathBuf>, cache_dir: PathBuf) -> Cni {
        Cni { plugin_dirs, cache_dir }
    }

    fn cache_path(&self, network: &str, a: &Attachment) -> PathBuf {
        self.cache_dir.join(format!("{network}-{}-{}.json", a.container_id, a.ifname))
    }

    fn find_plugin(&self, kind: &str) -> Result<PathBuf> {
        if kind.is_empty() || kind.contains('/') || kind.starts_with('.') {
            return Err(Error::msg(format!("invalid CNI plugin type {kind:?}")));
        }
        for d in &self.plugin_dirs {
            let p = d.join(kind);
            if p.is_file() {
                return Ok(p);
            }
        }
        Err(Error::msg(format!(
            "CNI plugin {kind:?} not found in {} (install containernetworking-plugins)",
            self.plugin_dirs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":")
        )))
    }

    fn exec(&self, command: &str, list: &Value, plugin: &Value, a: &Attachment, prev: Option<&Value>) -> Result<Value> {
        let kind = plugin["type"].as_str().unwrap_or("");
        let path = self.find_plugin(kind)?;
        let mut conf: Map<String, Value> = plugin.as_object().cloned().unwrap_or_default();
        conf.insert("cniVersion".into(), list["cniVersion"].clone());
        conf.insert("name".into(), list["name"].clone());
        conf.remove("capabilities");
        if plugin["capabilities"]["portMappings"] == true && !a.port_mappings.is_empty() {
            conf.insert("runtimeConfig".into(), json!({ "portMappings": a.port_mappings }));
        }
        if let Some(p) = prev {
            conf.insert("prevResult".into(), p.clone());
        }
        let input = serde_json::to_vec(&Value::Object(conf)).unwrap_or_default();
        let cni_path = std::env::join_paths(&self.plugin_dirs).unwrap_or_default();
        let _serialised = plugin_lock()?;
        let mut child = Command::new(&path)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", a.container_id)
            .env("CNI_NETNS", a.netns)
            .env("CNI_IFNAME", a.ifname)
            .env("CNI_ARGS", "IgnoreUnknown=1")
            .env("CNI_PATH", cni_path)
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::msg(format!("CNI plugin {}: {e}", path.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(&input);
        }
        let out = child.wait_with_output().map_err(|e| Error::msg(format!("CNI plugin {kind}: {e}")))?;
        let network = list["name"].as_str().unwrap_or("?");
        if !out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let mut msg = match v["msg"].as_str() {
                Some(m) => m.to_string(),
                None => String::from_utf8_lossy(&out.stdout).trim().to_string(),
            };
            if let Some(d) = v["details"].as_str().filter(|d| !d.is_empty()) {
                msg.push_str(&format!(" ({d})"));
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            if msg.is_empty() {
                msg = stderr.trim().to_string();
            }
            return Err(Error::msg(format!("network {network}: CNI {command} with plugin {kind}: {msg}")));
        }
        if command != "ADD" {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| Error::msg(format!("network {network}: CNI plugin {kind} returned an invalid result: {e}")))
    }

    /// ADD: attaches the container and returns the result (interfaces, ips, routes, dns).
    /// A plugin failing halfway is undone by a DEL of the plugins that ran (as the spec asks).
    pub fn add(&self, list: &Value, a: &Attachment) -> Result<Value> {
        let plugins = list["plugins"]
            .as_array()
            .ok_or_else(|| Error::msg(format!("network {}: configuration has no plugins", list["name"])))?;
        let mut result: Option<Value> = None;
        let cache = self.cache_path(list["name"].as_str().unwrap_or(""), a);
        std::fs::create_dir_all(&self.cache_dir)
            .map_err(|e| Error::msg(format!("{}: {e}", self.cache_dir.display())))?;
        // Cached before the first plugin runs, so a crash midway still lets DEL undo it.
        let record = |r: &Option<Value>| {
            let v =
                json!({ "kind": "berth-cni-cache-v1", "config": list, "portMappings": a.port_mappings, "result": r });
            std::fs::write(&cache, serde_json::to_vec(&v).unwrap_or_default())
                .map_err(|e| Error::msg(format!("{}: {e}", cache.display())))
        };
        record(&None)?;
        for (i, p) in plugins.iter().enumerate() {
            match self.exec("ADD", list, p, a, result.as_ref()) {
                Ok(r) => result = Some(r),
                Err(e) => {
                    for q in plugins[..=i].iter().rev() {
                        let _ = self.exec("DEL", list, q, a, result.as_ref());
                    }
                    let _ = std::fs::remove_file(&cache);
                    return Err(e);
                }
            }
        }
        record(&result)?;
        Ok(result.unwrap_or(Value::Null))
    }

    /// DEL with the cached configuration and result; without a cache entry, nothing was set
    /// up (or it was already removed). Returns whether anything was torn down.
    pub fn del(&self, network: &str, a: &Attachment) -> Result<bool> {
        let cache = self.cache_path(network, a);
        let Ok(bytes) = std::fs::read(&cache) else { return Ok(false) };
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let list = &v["config"];
        let ports: Vec<PortMapping> = serde_json::from_value(v["portMappings"].clone()).unwrap_or_default();
        let att = Attachment { port_mappings: &ports, ..*a };
        let prev = if v["result"].is_null() { None } else { Some(&v["result"]) };
        let mut first_err = None;
        for p in list["plugins"].as_array().into_iter().flatten().rev() {
            if let Err(e) = self.exec("DEL", list, p, &att, prev) {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        std::fs::remove_file(&cache).map_err(|e| Error::msg(format!("{}: {e}", cache.display())))?;
        Ok(true)
    }

    /// CHECK: the plugins verify that the container's networking is still as set up.
    pub fn check(&self, network: &str, a: &Attachment) -> Result<()> {
        let cache = self.cache_path(network, a);
        let bytes = std::fs::read(&cache)
            .map_err(|_| Error::msg(format!("network {network}: container {} is not attached", a.container_id)))?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let ports: Vec<PortMapping> = serde_json::from_value(v["portMappings"].clone()).unwrap_or_default();
        let att = Attachment { port_mappings: &ports, ..*a };
        for p in v["config"]["plugins"].as_array().into_iter().flatten() {
            self.exec("CHECK", &v["config"], p, &att, Some(&v["result"]))?;
        }
        Ok(())
    }

    /// The networks a container has cached attachments on.
    pub fn cached(&self, container_id: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let suffix_len = container_id.len();
        for e in std::fs::read_dir(&self.cache_dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".json") else { continue };
            // <network>-<id>-<ifname>
            if let Some(pos) = stem.find(&format!("-{container_id}-")) {
                let network = stem[..pos].to_string();
                let ifname = stem[pos + 2 + suffix_len..].to_string();
                out.push((network, ifname));
            }
        }
        out
    }

    /// The loopback interface of a new namespace, brought up by the `loopback` plugin.
    pub fn loopback(&self, command: &str, a: &Attachment) -> Result<()> {
        let list = json!({ "cniVersion": "1.0.0", "name": "lo", "plugins": [{ "type": "loopback" }] });
        let att = Attachment { ifname: "lo", port_mappings: &[], ..*a };
        self.exec(command, &list, &list["plugins"][0], &att, None).map(|_| ())
    }
}

/// Held while a plugin runs. The plugins check for their host-wide iptables chains
/// (CNI-ADMIN, CNI-HOSTPORT-*) and then create them, so two run at once by concurrent `berth`
/// invocations can both see a chain missing and one fail with "chain already exists"
/// (containernetworking/plugins#335): one plugin at a time on the host.
/// In /run itself, which only root writes: /run/lock is world-writable, where any local user
/// could create the file first (or open ours, since flock needs only a readable descriptor)
/// and hold the lock, stalling every container's networking.
const PLUGIN_LOCK: &str = "/run/berth-cni.lock";

/// Locks PLUGIN_LOCK; the lock is held while the returned file is open.
fn plugin_lock() -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(PLUGIN_LOCK)
        .map_err(|e| Error::msg(format!("{PLUGIN_LOCK}: {e}")))?;
    // Released when the file is closed.
    berth_sys::file::lock_exclusive(&file).map_err(|e| Error::msg(format!("locking {PLUGIN_LOCK}: {e}")))?;
    Ok(file)
}

/// The container's IPv4 address (without prefix) and gateway from an ADD result.
pub fn ipv4_of(result: &Value) -> Option<(String, Option<String>)> {
    for ip in result["ips"].as_array()? {
        let addr = ip["address"].as_str()?;
        if let Some((a, _)) = addr.split_once('/') {
            if a.parse::<std::net::Ipv4Addr>().is_ok() {
                return Some((a.to_string(), ip["gateway"].as_str().map(str::to_string)));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two concurrent ADDs never run plugins at the same time. The fake plugin claims a
    /// directory while it runs, and fails if another holds it already.
    #[test]
    fn plugins_run_one_at_a_time() {
        let dir = std::env::temp_dir().join(format!("berth-cni-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plugin = dir.join("claim");
        let busy = dir.join("busy");
        std::fs::write(
            &plugin,
            format!(
                "#!/bin/sh\ncat >/dev/null\nmkdir {busy} || {{ echo '{{\"code\":999,\"msg\":\"overlap\"}}'; exit 1; }}\n\
                 sleep 0.05\nrmdir {busy}\necho '{{\"cniVersion\":\"1.0.0\"}}'\n",
                busy = busy.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let cni = Cni::new(vec![dir.clone()], dir.join("cache"));
        let list = json!({ "cniVersion": "1.0.0", "name": "locktest", "plugins": [{ "type": "claim" }] });
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|w| {
                    let (cni, list) = (&cni, &list);
                    s.spawn(move || {
                        let id = format!("c{w}");
                        let a = Attachment {
                            container_id: &id,
                            netns: Path::new("/nonexistent"),
                            ifname: "eth0",
                            port_mappings: &[],
                        };
                        for _ in 0..5 {
                            cni.add(list, &a).unwrap();
                        }
                    })
                })
                .collect();
            workers.into_iter().for_each(|w| w.join().unwrap());
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
