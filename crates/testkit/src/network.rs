//! Host network resources for the suites that make bridges.

/// A /24 that no host route overlaps: in 10.231.0.0/16, else (a route such as a VPN's
/// 10.0.0.0/8 covers all of it) in 172.31.0.0/16 or 192.168.0.0/16.
pub fn free_subnet(seed: u32) -> String {
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    for (a, b) in [(10u8, 231u8), (172, 31), (192, 168)] {
        for i in 0..256 {
            let third = ((seed + i) % 256) as u8;
            let net = u32::from_be_bytes([a, b, third, 0]);
            let clash = routes.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() < 8 {
                    return false;
                }
                let dst = u32::from_be_bytes(u32::from_str_radix(f[1], 16).unwrap_or(0).to_le_bytes());
                let mask = u32::from_be_bytes(u32::from_str_radix(f[7], 16).unwrap_or(0).to_le_bytes());
                mask != 0 && (dst & mask & 0xffff_ff00) == (net & mask & 0xffff_ff00)
            });
            if !clash {
                return format!("{a}.{b}.{third}.0/24");
            }
        }
    }
    panic!("no /24 free of host routes in 10.231/16, 172.31/16 or 192.168/16 for the test network");
}
