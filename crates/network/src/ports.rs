//! `-p` port specifications, docker's syntax:
//! `[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp]`, with ranges `8000-8002:80-82`.
//! An empty or absent host port is chosen from the free ephemeral ports.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
    #[serde(rename = "hostIP", default)]
    pub host_ip: String,
}

fn port(s: &str, spec: &str) -> Result<u16> {
    s.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| Error::invalid(format!("port spec {spec:?}: {s:?} is not a port number (1-65535)")))
}

fn range(s: &str, spec: &str) -> Result<(u16, u16)> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a, spec)?, port(b, spec)?);
            if b < a {
                return Err(Error::invalid(format!("port spec {spec:?}: range {s:?} ends before it starts")));
            }
            Ok((a, b))
        }
        None => {
            let p = port(s, spec)?;
            Ok((p, p))
        }
    }
}

/// Parses one `-p` value. Host ports 0 mean "choose one".
pub fn parse(spec: &str) -> Result<Vec<PortMapping>> {
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, p)) => (b, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if proto != "tcp" && proto != "udp" {
        return Err(Error::invalid(format!("port spec {spec:?}: protocol {proto:?} is not tcp or udp")));
    }
    let parts: Vec<&str> = body.split(':').collect();
    let (ip, host, ctr) = match parts.as_slice() {
        [c] => ("", "", *c),
        [h, c] => ("", *h, *c),
        [i, h, c] => (*i, *h, *c),
        _ => {
            return Err(Error::msg(format!(
                "port spec {spec:?}: expected [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]"
            )))
        }
    };
    if !ip.is_empty() && ip.parse::<Ipv4Addr>().is_err() {
        return Err(Error::invalid(format!("port spec {spec:?}: {ip:?} is not an IPv4 address")));
    }
    let (c0, c1) = range(ctr, spec)?;
    let hosts = if host.is_empty() { None } else { Some(range(host, spec)?) };
    if let Some((h0, h1)) = hosts {
        if h1 - h0 != c1 - c0 {
            return Err(Error::invalid(format!("port spec {spec:?}: host and container ranges differ in length")));
        }
    }
    Ok((c0..=c1)
        .enumerate()
        .map(|(i, c)| PortMapping {
            host_port: hosts.map(|(h0, _)| h0 + i as u16).unwrap_or(0),
            container_port: c,
            protocol: proto.clone(),
            host_ip: ip.to_string(),
        })
        .collect())
}

/// A free port on the host for `protocol` (the kernel's choice of an ephemeral port).
pub fn free_port(protocol: &str) -> Result<u16> {
    let p = if protocol == "udp" {
        std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| s.local_addr())
    } else {
        std::net::TcpListener::bind("0.0.0.0:0").and_then(|s| s.local_addr())
    };
    p.map(|a| a.port()).map_err(|e| Error::msg(format!("choosing a free {protocol} port: {e}")))
}

/// A container port from an image's ExposedPorts key (`80/tcp`, `53/udp`, `8080`): a port
/// from 1 to 65535 and tcp or udp, the protocols `-p` publishes.
pub fn parse_exposed(s: &str) -> Result<(u16, String)> {
    let (p, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if proto != "tcp" && proto != "udp" {
        return Err(Error::invalid(format!("{s:?}: protocol {proto:?} is not tcp or udp")));
    }
    let port = p.parse::<u16>().ok().filter(|p| *p > 0);
    let port = port.ok_or_else(|| Error::invalid(format!("{s:?}: {p:?} is not a port number (1-65535)")))?;
    Ok((port, proto))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_ports() {
        assert_eq!(parse_exposed("80/tcp").unwrap(), (80, "tcp".to_string()));
        assert_eq!(parse_exposed("53/UDP").unwrap(), (53, "udp".to_string()));
        assert_eq!(parse_exposed("8080").unwrap(), (8080, "tcp".to_string()));
        for bad in ["0/tcp", "65536/tcp", "80/icmp", "x/tcp", "/tcp", "-1"] {
            assert!(parse_exposed(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn specs() {
        let m = parse("8080:80").unwrap();
        assert_eq!(
            m,
            vec![PortMapping { host_port: 8080, container_port: 80, protocol: "tcp".into(), host_ip: "".into() }]
        );
        let m = parse("127.0.0.1:9000-9001:90-91/udp").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[1].host_port, m[1].container_port, m[1].protocol.as_str(), m[1].host_ip.as_str()),
            (9001, 91, "udp", "127.0.0.1")
        );
        assert_eq!(parse("80").unwrap()[0].host_port, 0);
        assert_eq!(parse("127.0.0.1::80").unwrap()[0].host_port, 0);
        for bad in ["80/sctp", "x:80", "8080:0", "1-3:80", "1.2.3:8080:80", "a:b:c:d", "70000:80", ""] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("abc").unwrap_err().to_string().contains("\"abc\""));
    }
}
