//! Bytes waiting in the kernel between the server and the load generator,
//! sampled from `/proc/net/tcp` while a phase runs: what the server has
//! written that the clients' sockets have not taken yet (its send queues),
//! and what the clients' sockets hold that the load generator has not read
//! (their receive queues).
//!
//! Receipt latency counts both, and no server-side figure sees them. When
//! the load generator cannot read as fast as the server writes, the
//! difference piles up in its receive queues (on loopback a socket's
//! receive buffer grows to megabytes), and the latency measured is the
//! load generator's; this sampler says so with numbers.
//!
//! Only established IPv4 connections to or from the servers' ports count:
//! a socket whose local port is a server port is the server's end (its
//! send queue); one whose remote port is, the client's end (its receive
//! queue).

use std::time::Duration;

use crate::sampler::Sampler;

/// How often `/proc/net/tcp` is read (it lists every socket: twenty
/// thousand lines at 10,000 connections, some milliseconds of the load
/// generator's core each time, so not too often).
const EVERY: Duration = Duration::from_millis(500);

/// One reading, in bytes, summed over every connection.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Queued {
    /// Written by the servers, not yet taken by the clients' sockets.
    pub server_send: u64,
    /// In the clients' sockets, not yet read by the load generator.
    pub client_receive: u64,
}

/// Readings of the queues, every [`EVERY`].
pub type QueueSampler = Sampler<Queued>;

/// Starts sampling the connections of the servers listening on `addrs`
/// (`host:port` each; those without a port are skipped).
pub fn start(addrs: &[String]) -> QueueSampler {
    let ports: Vec<u16> = addrs
        .iter()
        .filter_map(|addr| addr.rsplit_once(':')?.1.parse().ok())
        .collect();
    Sampler::start(EVERY, ports, |ports| {
        // The kernel builds the table as it is read: off the runtime's
        // threads, so that the publisher is not held up.
        let ports = ports.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                std::fs::read_to_string("/proc/net/tcp").map(|table| sum(&table, &ports))
            })
            .await
            .ok()?
            .ok()
        })
    })
}

/// The mean of each queue over `samples`; `None` when there are none.
pub fn mean(samples: &[Queued]) -> Option<Queued> {
    if samples.is_empty() {
        return None;
    }
    let n = samples.len() as u64;
    Some(Queued {
        server_send: samples.iter().map(|s| s.server_send).sum::<u64>() / n,
        client_receive: samples.iter().map(|s| s.client_receive).sum::<u64>() / n,
    })
}

/// Sums the queues of established connections on `ports` in one
/// `/proc/net/tcp` table.
fn sum(table: &str, ports: &[u16]) -> Queued {
    let mut queued = Queued::default();
    for line in table.lines().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(_slot), Some(local), Some(remote), Some(state), Some(queues)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        // 01 is TCP_ESTABLISHED.
        if state != "01" {
            continue;
        }
        let Some((send, receive)) = queues.split_once(':') else {
            continue;
        };
        let (Ok(send), Ok(receive)) = (
            u64::from_str_radix(send, 16),
            u64::from_str_radix(receive, 16),
        ) else {
            continue;
        };
        if port(local).is_some_and(|p| ports.contains(&p)) {
            queued.server_send += send;
        } else if port(remote).is_some_and(|p| ports.contains(&p)) {
            queued.client_receive += receive;
        }
    }
    queued
}

/// The port of a `/proc/net/tcp` address (`0100007F:1F90`).
fn port(address: &str) -> Option<u16> {
    u16::from_str_radix(address.rsplit_once(':')?.1, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000005 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 0200007F:C350 01 00000100:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 0200007F:C350 0100007F:1F90 01 00000000:00002000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
   3: 0100007F:1F91 0200007F:C351 01 00000400:00000000 00:00000000 00000000     0        0 4 1 0 20 4 30 10 -1
   4: 0200007F:C351 0100007F:1F91 01 00000000:00000800 00:00000000 00000000     0        0 5 1 0 20 4 30 10 -1
   5: 0100007F:1F90 0300007F:C352 06 00000700:00000000 00:00000000 00000000     0        0 0 3 0 0 0 0 0 0
";

    #[test]
    fn sums_the_servers_send_queues_and_the_clients_receive_queues() {
        // Port 8080 (1F90): its listening socket's backlog (row 0) and a
        // closing socket (row 5) do not count; 8081 is another server's.
        let queued = sum(TABLE, &[8080]);
        assert_eq!(
            queued,
            Queued {
                server_send: 0x100,
                client_receive: 0x2000
            }
        );
        let both = sum(TABLE, &[8080, 8081]);
        assert_eq!(both.server_send, 0x500);
        assert_eq!(both.client_receive, 0x2800);
        assert_eq!(sum(TABLE, &[]), Queued::default());
    }

    #[test]
    fn means_of_no_samples_are_none() {
        assert_eq!(mean(&[]), None);
        let samples = [
            Queued {
                server_send: 10,
                client_receive: 100,
            },
            Queued {
                server_send: 30,
                client_receive: 300,
            },
        ];
        assert_eq!(
            mean(&samples),
            Some(Queued {
                server_send: 20,
                client_receive: 200
            })
        );
    }
}
