//! What connections cost the kernel, which no process' RSS shows: the TCP
//! buffer memory of `/proc/net/sockstat` and the socket structures of
//! `/proc/slabinfo`.
//!
//! Both are machine-wide. On loopback both ends of every connection are
//! here, so a delta over N connections is two sockets' worth per connection,
//! and whatever else runs on the machine (other benchmarks, compilers) moves
//! the figures too; the slab object sizes are exact whatever runs.

use std::collections::BTreeMap;

/// Slab caches every TCP socket with a descriptor takes one object of: the
/// socket itself (`TCP`), its inode (`sock_inode_cache`), its open file
/// (`filp`), its pseudo-file's `dentry`, and its epoll registration
/// (`eventpoll_epi`).
const SOCKET_CACHES: [&str; 5] = ["TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi"];

/// The caches whose growth is counted as the connections' own: those that
/// only sockets use. `filp` and `dentry` move with every file a compiler
/// opens, so they are left out of the measured delta.
const COUNTED_CACHES: [&str; 2] = ["TCP", "sock_inode_cache"];

/// One reading of the kernel's socket figures.
#[derive(Clone, Debug, Default)]
pub struct Kernel {
    /// `sockets: used` (every socket of every kind).
    pub sockets_used: u64,
    /// `TCP: inuse` (TCP sockets, listening and established).
    pub tcp_inuse: u64,
    /// `TCP: mem`, in bytes: pages allocated to TCP socket buffers.
    pub tcp_mem: u64,
    /// Active objects and object size of the caches in [`SOCKET_CACHES`];
    /// empty when `/proc/slabinfo` cannot be read (it needs root).
    slabs: BTreeMap<String, (u64, u64)>,
}

impl Kernel {
    /// Reads `/proc/net/sockstat` and, if allowed, `/proc/slabinfo`.
    pub fn sample() -> Kernel {
        let mut kernel = std::fs::read_to_string("/proc/net/sockstat")
            .map(|text| parse_sockstat(&text, page_size()))
            .unwrap_or_default();
        if let Ok(text) = std::fs::read_to_string("/proc/slabinfo") {
            kernel.slabs = parse_slabinfo(&text);
        }
        kernel
    }

    /// Bytes of socket structures one TCP connection's end holds, from the
    /// object sizes of [`SOCKET_CACHES`]; `None` without `/proc/slabinfo`.
    pub fn slab_bytes_per_socket(&self) -> Option<u64> {
        let sizes: Option<Vec<u64>> = SOCKET_CACHES
            .iter()
            .map(|name| self.slabs.get(*name).map(|&(_, size)| size))
            .collect();
        sizes.map(|sizes| sizes.iter().sum())
    }

    /// Bytes in the [`COUNTED_CACHES`] objects now in use.
    fn counted_slab_bytes(&self) -> Option<u64> {
        COUNTED_CACHES
            .iter()
            .map(|name| self.slabs.get(*name).map(|&(objects, size)| objects * size))
            .sum()
    }

    /// Growth from `before` per connection: TCP buffer memory, and the
    /// counted slab caches; each over both ends of a loopback connection.
    pub fn per_connection(&self, before: &Kernel, connections: u64) -> PerConnection {
        let per = |after: u64, before: u64| {
            (connections > 0).then(|| (after as f64 - before as f64) / connections as f64)
        };
        PerConnection {
            tcp_mem: per(self.tcp_mem, before.tcp_mem),
            slab: self
                .counted_slab_bytes()
                .zip(before.counted_slab_bytes())
                .and_then(|(after, before)| per(after, before)),
        }
    }
}

/// [`Kernel::per_connection`]'s figures, in bytes.
pub struct PerConnection {
    pub tcp_mem: Option<f64>,
    pub slab: Option<f64>,
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |size| size as u64)
}

/// `sockets: used 123` and `TCP: inuse 5 orphan 0 tw 2 alloc 9 mem 3`.
fn parse_sockstat(text: &str, page_size: u64) -> Kernel {
    let mut kernel = Kernel::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let section = words.next().unwrap_or_default();
        let words: Vec<&str> = words.collect();
        let field = |name: &str| -> u64 {
            words
                .windows(2)
                .find(|pair| pair[0] == name)
                .and_then(|pair| pair[1].parse().ok())
                .unwrap_or(0)
        };
        match section {
            "sockets:" => kernel.sockets_used = field("used"),
            "TCP:" => {
                kernel.tcp_inuse = field("inuse");
                kernel.tcp_mem = field("mem") * page_size;
            }
            _ => {}
        }
    }
    kernel
}

/// `name active_objs num_objs objsize …` for each cache of [`SOCKET_CACHES`].
fn parse_slabinfo(text: &str) -> BTreeMap<String, (u64, u64)> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            if !SOCKET_CACHES.contains(&name) {
                return None;
            }
            let active: u64 = words.next()?.parse().ok()?;
            let _total = words.next()?;
            let size: u64 = words.next()?.parse().ok()?;
            Some((name.to_string(), (active, size)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sockstat_and_slabinfo() {
        let sockstat = "sockets: used 2040\n\
            TCP: inuse 2002 orphan 0 tw 7 alloc 2003 mem 12\n\
            UDP: inuse 1 mem 2\n";
        let kernel = parse_sockstat(sockstat, 4096);
        assert_eq!(kernel.sockets_used, 2040);
        assert_eq!(kernel.tcp_inuse, 2002);
        assert_eq!(kernel.tcp_mem, 12 * 4096);
        let slabinfo = "slabinfo - version: 2.1\n\
            # name <active_objs> <num_objs> <objsize> …\n\
            TCPv6 26 26 2496 13 8 : tunables 0 0 0 : slabdata 2 2 0\n\
            TCP 100 104 2368 13 8 : tunables 0 0 0 : slabdata 8 8 0\n\
            sock_inode_cache 120 133 832 19 4 : tunables 0 0 0 : slabdata 7 7 0\n\
            filp 300 315 192 21 1 : tunables 0 0 0 : slabdata 15 15 0\n\
            dentry 900 903 192 21 1 : tunables 0 0 0 : slabdata 43 43 0\n\
            eventpoll_epi 64 64 128 32 1 : tunables 0 0 0 : slabdata 2 2 0\n";
        let kernel = Kernel {
            slabs: parse_slabinfo(slabinfo),
            ..kernel
        };
        assert_eq!(
            kernel.slab_bytes_per_socket(),
            Some(2368 + 832 + 192 + 192 + 128)
        );
        assert_eq!(kernel.counted_slab_bytes(), Some(100 * 2368 + 120 * 832));
        let before = Kernel {
            tcp_mem: 0,
            slabs: parse_slabinfo("TCP 0 0 2368\nsock_inode_cache 20 20 832\n"),
            ..Kernel::default()
        };
        let per = kernel.per_connection(&before, 100);
        assert_eq!(per.tcp_mem, Some(12.0 * 4096.0 / 100.0));
        assert_eq!(per.slab, Some(2368.0 + 832.0));
    }
}
