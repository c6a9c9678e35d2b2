//! Container networking for berth: CNI plugins invoked as the CNI specification says
//! (`cni.rs`), network namespaces pinned by a bind mount (`netns.rs`), the bridge network
//! definitions the engine creates (`bridge_conflist`) and `-p` port specifications (`ports.rs`).

pub mod cni;
pub mod netns;
pub mod ports;

use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::{json, Value};

pub use cni::{Attachment, Cni};
pub use ports::PortMapping;

pub use berth_sys::{Error, Result};

/// An IPv4 subnet, `a.b.c.d/len`, with its host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Subnet {
    pub fn parse(s: &str) -> Result<Subnet> {
        let (a, l) =
            s.split_once('/').ok_or_else(|| Error::invalid(format!("subnet {s:?}: expected ADDRESS/LENGTH")))?;
        let addr: Ipv4Addr =
            a.parse().map_err(|_| Error::invalid(format!("subnet {s:?}: {a:?} is not an IPv4 address")))?;
        let len: u8 = l
            .parse()
            .ok()
            .filter(|l| (8..=30).contains(l))
            .ok_or_else(|| Error::invalid(format!("subnet {s:?}: prefix length {l:?} must be between 8 and 30")))?;
        let mask = u32::MAX << (32 - len);
        if u32::from(addr) & !mask != 0 {
            return Err(Error::invalid(format!(
                "subnet {s:?}: host bits are set (did you mean {}/{len}?)",
                Ipv4Addr::from(u32::from(addr) & mask)
            )));
        }
        Ok(Subnet { addr, len })
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.len);
        u32::from(ip) & mask == u32::from(self.addr)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        let len = self.len.min(other.len);
        let mask = u32::MAX << (32 - len);
        u32::from(self.addr) & mask == u32::from(other.addr) & mask
    }

    /// The first host address: the bridge's (gateway) address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Linux interface names: 1 to 15 bytes, no '/', ':' or whitespace.
pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The CNI configuration list of a berth bridge network: `bridge` (the host's gateway on the
/// bridge, masquerading outgoing traffic) with `host-local` addresses kept in `ipam_dir`,
/// `portmap` for published ports and `firewall` to admit the containers' traffic.
pub fn bridge_conflist(name: &str, bridge: &str, subnet: &Subnet, ipam_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": subnet.to_string(), "gateway": subnet.gateway().to_string() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": ipam_dir.join(name),
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
            { "type": "firewall" }
        ]
    })
}

/// The bridge and subnet of a berth bridge network's conflist.
pub fn bridge_of(conflist: &Value) -> Option<(String, String)> {
    let p = conflist["plugins"].as_array()?.iter().find(|p| p["type"] == "bridge")?;
    let bridge = p["bridge"].as_str()?.to_string();
    let subnet = p["ipam"]["ranges"][0][0]["subnet"].as_str()?.to_string();
    Some((bridge, subnet))
}

/// Removes a bridge interface (after the network's last container is gone).
pub fn delete_link(name: &str) -> Result<()> {
    if !valid_ifname(name) {
        return Err(Error::msg(format!("invalid interface name {name:?}")));
    }
    if !Path::new("/sys/class/net").join(name).exists() {
        return Ok(());
    }
    let out = std::process::Command::new("ip")
        .args(["link", "delete", name])
        .output()
        .map_err(|e| Error::msg(format!("ip link delete {name}: {e} (is iproute2 installed?)")))?;
    if !out.status.success() {
        return Err(Error::msg(format!("ip link delete {name}: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let s = Subnet::parse("10.88.0.0/16").unwrap();
        assert_eq!(s.gateway().to_string(), "10.88.0.1");
        assert!(s.contains("10.88.3.4".parse().unwrap()));
        assert!(!s.contains("10.89.0.1".parse().unwrap()));
        assert!(s.overlaps(&Subnet::parse("10.88.5.0/24").unwrap()));
        assert!(!s.overlaps(&Subnet::parse("10.89.0.0/24").unwrap()));
        assert!(Subnet::parse("10.88.0.1/16").unwrap_err().to_string().contains("host bits"));
        assert!(Subnet::parse("10.88.0.0").is_err());
        assert!(Subnet::parse("10.88.0.0/31").is_err());
        assert!(Subnet::parse("300.1.1.0/24").is_err());
    }
}
