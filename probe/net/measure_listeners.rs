//! I/O for `net.listeners`: the sockets this network namespace listens on,
//! from /proc/net/{tcp,tcp6,udp,udp6} (what `ss -tulpn` reads), and the
//! processes that own them, from /proc/PID/fd where they are visible.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One socket bound for others to reach: a TCP socket in LISTEN, or an
/// unconnected UDP socket (what `ss -ul` shows as UNCONN).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// `tcp` or `udp`; `tcp6`/`udp6` sockets say so by their address.
    pub proto: String,
    pub address: IpAddr,
    pub port: u16,
    /// The socket's owner as the kernel recorded it.
    pub uid: u32,
    pub inode: u64,
    /// The processes holding the socket, when their fds could be read.
    pub processes: Vec<Owner>,
    /// True when no visible process holds it but some processes' fds could
    /// not be read: its owner is hidden (another user's, without
    /// CAP_SYS_PTRACE), not absent.
    pub owner_hidden: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    pub comm: String,
}

/// Evidence of `net.listeners`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenersEvidence {
    pub listeners: Vec<Listener>,
    /// Processes of this pod whose fds could not be read (another user's).
    pub hidden_processes: usize,
    /// /proc/net files that could not be read, with the reason.
    pub unreadable: Vec<String>,
}

/// A socket line of /proc/net/{tcp,udp}{,6}, as the kernel prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketLine {
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
    pub state: u8,
    pub uid: u32,
    pub inode: u64,
}

/// TCP_LISTEN in the kernel's numbering.
const TCP_LISTEN: u8 = 0x0A;
/// TCP_CLOSE: an unconnected UDP socket.
const UDP_UNCONNECTED: u8 = 0x07;

/// Parses one /proc/net/{tcp,tcp6,udp,udp6} file: a header, then one line
/// per socket, `sl: local remote st tx:rx tr:when retrnsmt uid timeout
/// inode ...`. Addresses are the kernel's words in host byte order as hex,
/// ports plain hex. A line that does not parse is an error: a partial
/// table would hide a listener.
pub fn parse_proc_net(text: &str) -> Result<Vec<SocketLine>, String> {
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| parse_line(line).ok_or_else(|| format!("unreadable socket line: {line:?}")))
        .collect()
}

fn parse_line(line: &str) -> Option<SocketLine> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if !fields.first()?.ends_with(':') {
        return None;
    }
    Some(SocketLine {
        local: parse_endpoint(fields.get(1)?)?,
        remote: parse_endpoint(fields.get(2)?)?,
        state: u8::from_str_radix(fields.get(3)?, 16).ok()?,
        uid: fields.get(7)?.parse().ok()?,
        inode: fields.get(9)?.parse().ok()?,
    })
}

/// `0100007F:1F90` or 32 hex digits for IPv6, then the port.
fn parse_endpoint(text: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some((ip, port))
}

/// The listening sockets among one file's lines.
pub fn listening(proto: &str, lines: &[SocketLine]) -> Vec<Listener> {
    let wanted = if proto == "tcp" {
        TCP_LISTEN
    } else {
        UDP_UNCONNECTED
    };
    lines
        .iter()
        .filter(|l| l.state == wanted && l.remote.1 == 0)
        .map(|l| Listener {
            proto: proto.to_string(),
            address: l.local.0,
            port: l.local.1,
            uid: l.uid,
            inode: l.inode,
            processes: Vec::new(),
            owner_hidden: false,
        })
        .collect()
}

/// Reads the namespace's listeners under a proc root and finds their
/// processes.
pub fn listeners(proc_root: &Path) -> ListenersEvidence {
    let mut listeners = Vec::new();
    let mut unreadable = Vec::new();
    for (file, proto) in [
        ("net/tcp", "tcp"),
        ("net/tcp6", "tcp"),
        ("net/udp", "udp"),
        ("net/udp6", "udp"),
    ] {
        match super::measure::read_proc(proc_root, file).and_then(|t| parse_proc_net(&t)) {
            Ok(lines) => listeners.extend(listening(proto, &lines)),
            // A kernel without IPv6 has no tcp6: nothing listens there.
            Err(e) if file.ends_with('6') && e.contains("No such file") => {}
            Err(e) => unreadable.push(e),
        }
    }
    let (owners, hidden_processes) = socket_owners(proc_root);
    for listener in &mut listeners {
        listener.processes = owners.get(&listener.inode).cloned().unwrap_or_default();
        listener.owner_hidden = listener.processes.is_empty() && hidden_processes > 0;
    }
    listeners.sort_by(|a, b| (&a.proto, a.port, a.address).cmp(&(&b.proto, b.port, b.address)));
    ListenersEvidence {
        listeners,
        hidden_processes,
        unreadable,
    }
}

/// Socket inode -> processes holding it, from every /proc/PID/fd this
/// process may read; and how many processes it may not.
fn socket_owners(proc_root: &Path) -> (BTreeMap<u64, Vec<Owner>>, usize) {
    let mut owners: BTreeMap<u64, Vec<Owner>> = BTreeMap::new();
    let mut hidden = 0;
    let pids = std::fs::read_dir(proc_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok());
    for pid in pids {
        let dir = proc_root.join(pid.to_string());
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
            // Gone meanwhile, or not ours to read.
            if dir.exists() {
                hidden += 1;
            }
            continue;
        };
        let comm = std::fs::read_to_string(dir.join("comm"))
            .map(|c| c.trim().to_string())
            .unwrap_or_default();
        let mut seen = Vec::new();
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = socket_inode(&target.to_string_lossy()) else {
                continue;
            };
            if !seen.contains(&inode) {
                seen.push(inode);
                owners.entry(inode).or_default().push(Owner {
                    pid,
                    comm: comm.clone(),
                });
            }
        }
    }
    (owners, hidden)
}

/// `socket:[2641645]` -> 2641645.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured on x86_64 (Linux 6.x) in a namespace with: TCP listeners on
    /// 127.0.0.1:8080 (root) and 0.0.0.0:8081 (uid 65532), one connection
    /// to 8080, a dual-stack TCP listener on [::]:9090, UDP on
    /// 0.0.0.0:5353 and on [::1]:53.
    const TCP: &str = include_str!("../../tests/fixtures/proc-net/tcp");
    const TCP6: &str = include_str!("../../tests/fixtures/proc-net/tcp6");
    const UDP: &str = include_str!("../../tests/fixtures/proc-net/udp");
    const UDP6: &str = include_str!("../../tests/fixtures/proc-net/udp6");

    fn listening_in(proto: &str, text: &str) -> Vec<(IpAddr, u16, u32)> {
        listening(proto, &parse_proc_net(text).unwrap())
            .into_iter()
            .map(|l| (l.address, l.port, l.uid))
            .collect()
    }

    #[test]
    fn real_proc_net_tables_give_the_listeners_ss_shows() {
        assert_eq!(
            listening_in("tcp", TCP),
            vec![
                ("127.0.0.1".parse().unwrap(), 8080, 0),
                ("0.0.0.0".parse().unwrap(), 8081, 65532)
            ]
        );
        assert_eq!(parse_proc_net(TCP).unwrap().len(), 4);
        assert_eq!(
            listening_in("tcp", TCP6),
            vec![("::".parse().unwrap(), 9090, 0)]
        );
        assert_eq!(
            listening_in("udp", UDP),
            vec![("0.0.0.0".parse().unwrap(), 5353, 0)]
        );
        assert_eq!(
            listening_in("udp", UDP6),
            vec![("::1".parse().unwrap(), 53, 0)]
        );
    }

    #[test]
    fn connected_sockets_are_not_listeners() {
        let lines = parse_proc_net(TCP).unwrap();
        let established: Vec<_> = lines.iter().filter(|l| l.state == 1).collect();
        assert_eq!(established.len(), 2);
        assert!(established.iter().any(|l| l.remote.1 == 8080));
    }

    #[test]
    fn garbage_is_an_error_not_a_shorter_table() {
        assert_eq!(parse_proc_net("header only\n").unwrap(), vec![]);
        assert!(parse_proc_net("h\n   0: 0100007F:1F90 nonsense\n").is_err());
        assert!(
            parse_proc_net("h\n   0: 0100007F:ZZZZ 00000000:0000 0A 0:0 0:0 0 0 0 1\n").is_err()
        );
        assert!(parse_proc_net("h\n   0: 01007F:1F90 00000000:0000 0A 0:0 0:0 0 0 0 1\n").is_err());
    }

    #[test]
    fn socket_links_name_their_inode() {
        assert_eq!(socket_inode("socket:[2641645]"), Some(2641645));
        assert_eq!(socket_inode("pipe:[12]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    proptest::proptest! {
        #[test]
        fn random_text_never_panics(text in ".{0,400}") {
            let _ = parse_proc_net(&text);
        }
    }
}
