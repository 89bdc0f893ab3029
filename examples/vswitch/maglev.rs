//! `vswitch maglev`: a Maglev table as operators inspect it (like `cilium bpf lb maglev
//! list`), computed exactly as the load balancer does.

use switchyard::lb::{Maglev, Permutation, TableSize};

/// The Maglev table of `backends` (`name` or `name:weight`), as text.
pub fn table(size: u32, backends: &[String]) -> Result<String, String> {
    let size = TableSize::new(size).map_err(|e| e.to_string())?;
    let mut members: Vec<(String, u32)> = backends
        .iter()
        .map(|b| split_weight(b))
        .collect::<Result<_, _>>()?;
    // Maglev's turns follow the byte-wise order of the names (as the load balancer does).
    members.sort();
    if let Some(w) = members.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(format!("backend {} is listed twice", w[0].0));
    }
    let permutations: Vec<(Permutation, u32)> = members
        .iter()
        .map(|(name, weight)| (Permutation::for_name(name.as_bytes(), size), *weight))
        .collect();
    let table = Maglev::build(size, &permutations).map_err(|e| e.to_string())?;
    let mut out = String::new();
    for (slot, &member) in table.slots().iter().enumerate() {
        let name = members
            .get(usize::from(member))
            .map_or("-", |(name, _)| name.as_str());
        out.push_str(&format!("{slot} {name}\n"));
    }
    Ok(out)
}

/// `ip:port` -> (name, 1); `ip:port:weight` and `[v6]:port:weight` -> (name, weight). The
/// name must be a socket address: it is what the load balancer hashes.
pub fn split_weight(text: &str) -> Result<(String, u32), String> {
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return Ok((backend_name(addr), 1));
    }
    let (name, weight) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} is not ip:port[:weight]"))?;
    let addr: std::net::SocketAddr = name
        .parse()
        .map_err(|_| format!("{text:?} is not ip:port[:weight]"))?;
    let weight = weight
        .parse()
        .map_err(|_| format!("{text:?}: weight {weight:?} is not a number"))?;
    Ok((backend_name(addr), weight))
}

/// The name the load balancer gives a backend at `addr`.
fn backend_name(addr: std::net::SocketAddr) -> String {
    switchyard::lb::Backend::new(addr).name()
}
