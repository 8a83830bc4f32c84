//! The network namespace's interfaces with their kind (veth, vxlan,
//! wireguard, ...), read from the kernel over rtnetlink: the kind is not in
//! getifaddrs(3), and /sys may be a mount of another namespace. The message
//! parser is pure; [`dump`] is the I/O.

use std::io;
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: Option<u32>,
    /// The rtnetlink kind: `veth`, `vxlan`, `geneve`, `wireguard`, `ipip`,
    /// `bridge`, `dummy`, ...; `None` for physical devices and loopback.
    pub kind: Option<String>,
    pub up: bool,
    /// The other end lives in another network namespace (a pod's veth).
    pub peer_in_other_netns: bool,
    /// The bridge or bond this interface is enslaved to.
    pub master: Option<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("rtnetlink: {0}")]
pub struct ParseError(pub String);

const NLMSG_HDR: usize = 16;
const IFINFOMSG: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_LINK_NETNSID: u16 = 37;

/// What one buffer of a dump held: the links, and whether the dump ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub links: Vec<Link>,
    pub done: bool,
}

/// Parses one `recv` of an RTM_GETLINK dump.
pub fn parse(buf: &[u8]) -> Result<Batch, ParseError> {
    let mut batch = Batch::default();
    let mut offset = 0;
    while offset + NLMSG_HDR <= buf.len() {
        let len = u32_at(buf, offset) as usize;
        let kind = u16_at(buf, offset + 4);
        if len < NLMSG_HDR || offset + len > buf.len() {
            return Err(ParseError(format!("message length {len} at {offset}")));
        }
        let body = &buf[offset + NLMSG_HDR..offset + len];
        match kind {
            NLMSG_DONE => {
                batch.done = true;
                return Ok(batch);
            }
            NLMSG_ERROR => {
                let code = body
                    .get(..4)
                    .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                return Err(ParseError(format!(
                    "error {}",
                    io::Error::from_raw_os_error(code.wrapping_neg())
                )));
            }
            RTM_NEWLINK => batch.links.push(parse_link(body)?),
            _ => {}
        }
        // The last message needs no padding after it (NLMSG_OK stops there).
        offset = (offset + align(len)).min(buf.len());
    }
    if offset != buf.len() {
        return Err(ParseError(format!("{} trailing bytes", buf.len() - offset)));
    }
    Ok(batch)
}

fn parse_link(body: &[u8]) -> Result<Link, ParseError> {
    if body.len() < IFINFOMSG {
        return Err(ParseError("short ifinfomsg".into()));
    }
    let index = u32_at(body, 4);
    let flags = u32_at(body, 8);
    let mut link = Link {
        index,
        name: String::new(),
        mtu: None,
        kind: None,
        up: flags & libc::IFF_UP as u32 != 0,
        peer_in_other_netns: false,
        master: None,
    };
    for (kind, value) in attributes(&body[IFINFOMSG..])? {
        match kind {
            IFLA_IFNAME => link.name = c_string(value),
            IFLA_MTU if value.len() >= 4 => link.mtu = Some(u32_at(value, 0)),
            IFLA_MASTER if value.len() >= 4 => link.master = Some(u32_at(value, 0)),
            IFLA_LINK_NETNSID => link.peer_in_other_netns = true,
            IFLA_LINKINFO => {
                for (info, data) in attributes(value)? {
                    if info == IFLA_INFO_KIND {
                        link.kind = Some(c_string(data));
                    }
                }
            }
            _ => {}
        }
    }
    if link.name.is_empty() {
        return Err(ParseError(format!("link {index} has no name")));
    }
    Ok(link)
}

/// The (type, value) pairs of a run of rtattrs; nested flags are masked off.
fn attributes(mut buf: &[u8]) -> Result<Vec<(u16, &[u8])>, ParseError> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16_at(buf, 0) as usize;
        let kind = u16_at(buf, 2) & 0x3fff;
        if len < 4 || len > buf.len() {
            return Err(ParseError(format!("attribute length {len}")));
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[align(len).min(buf.len())..];
    }
    Ok(out)
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

fn u16_at(buf: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([buf[at], buf[at + 1]])
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn c_string(value: &[u8]) -> String {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

/// Every link of the calling thread's network namespace.
pub fn dump(timeout: Duration) -> io::Result<Vec<Link>> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the fd is owned below.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: SO_RCVTIMEO takes a timeval of the size given.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    let mut request = Vec::with_capacity(NLMSG_HDR + IFINFOMSG);
    request.extend_from_slice(&((NLMSG_HDR + IFINFOMSG) as u32).to_ne_bytes());
    request.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
    request.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(&[0u8; IFINFOMSG]);
    // SAFETY: sending a buffer we own to the kernel (address 0 by default).
    let sent = unsafe { libc::send(fd.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut links = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: receiving into a buffer we own, up to its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let batch =
            parse(&buf[..n as usize]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        links.extend(batch.links);
        if batch.done || n == 0 {
            return Ok(links);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut out = ((NLMSG_HDR + body.len()) as u32).to_ne_bytes().to_vec();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&[0; 10]);
        out.extend_from_slice(body);
        out
    }

    fn link_body(index: u32, flags: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![0u8; 4];
        body.extend_from_slice(&index.to_ne_bytes());
        body.extend_from_slice(&flags.to_ne_bytes());
        body.extend_from_slice(&[0; 4]);
        for a in attrs {
            body.extend_from_slice(a);
        }
        body
    }

    #[test]
    fn links_with_kind_mtu_and_peer() {
        let veth = link_body(
            7,
            1,
            &[
                attr(IFLA_IFNAME, b"cali-client\0"),
                attr(IFLA_MTU, &1450u32.to_ne_bytes()),
                attr(IFLA_LINK_NETNSID, &3i32.to_ne_bytes()),
                attr(IFLA_LINKINFO | 0x8000, &attr(IFLA_INFO_KIND, b"veth\0")),
            ],
        );
        let mut buf = message(RTM_NEWLINK, &veth);
        buf.extend(message(
            RTM_NEWLINK,
            &link_body(1, 0, &[attr(IFLA_IFNAME, b"lo\0")]),
        ));
        buf.extend(message(NLMSG_DONE, &[0; 4]));
        let batch = parse(&buf).unwrap();
        assert!(batch.done);
        assert_eq!(
            batch.links[0],
            Link {
                index: 7,
                name: "cali-client".into(),
                mtu: Some(1450),
                kind: Some("veth".into()),
                up: true,
                peer_in_other_netns: true,
                master: None
            }
        );
        assert_eq!(batch.links[1].kind, None);
        assert!(!batch.links[1].up);
    }

    #[test]
    fn truncated_and_error_messages_are_errors() {
        let good = message(RTM_NEWLINK, &link_body(1, 0, &[attr(IFLA_IFNAME, b"lo\0")]));
        assert!(parse(&good[..good.len() - 2]).is_err());
        assert!(parse(&message(NLMSG_ERROR, &(-1i32).to_ne_bytes())).is_err());
        assert!(parse(&message(NLMSG_ERROR, &i32::MIN.to_ne_bytes())).is_err());
        assert!(parse(&message(RTM_NEWLINK, &[0; 3])).is_err());
        assert!(parse(&message(RTM_NEWLINK, &link_body(1, 0, &[]))).is_err());
    }

    /// Found by fuzzing (fuzz/fuzz_targets/netlink_links.rs): a message
    /// whose length is not a multiple of 4 ends the buffer.
    #[test]
    fn an_unpadded_last_message_ends_the_buffer() {
        let mut buf = message(0x71, &[0x71; 5]);
        assert_eq!(buf.len(), 21);
        assert_eq!(parse(&buf), Ok(Batch::default()));
        buf.push(0);
        assert!(parse(&buf).is_ok());
        let found = include_bytes!("../../fuzz/regressions/netlink_links/unpadded-last-message");
        assert_eq!(parse(found), Ok(Batch::default()));
    }

    #[test]
    fn the_running_namespace_has_loopback() {
        let links = dump(Duration::from_secs(2)).unwrap();
        assert!(links.iter().any(|l| l.name == "lo"), "{links:?}");
    }
}
