//! The TCP side of the listener: binding with a deep backlog, and the
//! options every accepted socket gets.

use std::{net::SocketAddr, time::Duration};

use nix::sys::socket::{setsockopt, sockopt};
use tokio::net::{TcpListener, TcpStream};

/// Pending connections the kernel may queue (it caps this at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// TCP keepalive: the first probe after this long without a packet from
/// the peer, then one every [`KEEPALIVE_INTERVAL`], and the connection is
/// given up after [`KEEPALIVE_PROBES`] unanswered ones. An SSE client is
/// never heard from after its request, so without probes a peer that
/// vanished (a phone that lost its network, a NAT that forgot the flow)
/// would hold its connection until a heartbeat's retransmissions time out.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 6;

/// Binds the listening socket with a backlog that absorbs reconnect storms:
/// the usual 128 overflows when a few hundred clients come back at once, and
/// each overflowed client waits a whole second for its SYN to be retried.
///
/// With `reuseport`, `SO_REUSEPORT` is set before the bind, so that other
/// processes (of the same user, with it set too) may bind the same address,
/// and the kernel spreads new connections over their listeners by a hash of
/// each connection's addresses and ports.
pub(crate) fn listen(addr: SocketAddr, reuseport: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // A restarted Herald must bind its port while the old connections linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    if reuseport {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Turns on TCP keepalive for an accepted connection, whatever it turns
/// out to be (WebSocket, SSE, plain HTTP). A failure only costs the probes.
pub(crate) fn keep_alive(stream: &TcpStream) {
    let set = || -> nix::Result<()> {
        setsockopt(stream, sockopt::KeepAlive, &true)?;
        setsockopt(
            stream,
            sockopt::TcpKeepIdle,
            &(KEEPALIVE_IDLE.as_secs() as u32),
        )?;
        setsockopt(
            stream,
            sockopt::TcpKeepInterval,
            &(KEEPALIVE_INTERVAL.as_secs() as u32),
        )?;
        setsockopt(stream, sockopt::TcpKeepCount, &KEEPALIVE_PROBES)
    };
    if let Err(error) = set() {
        tracing::debug!(%error, "cannot turn on TCP keepalive");
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::socket::{getsockopt, sockopt};

    #[tokio::test]
    async fn accepted_sockets_keep_alive() {
        let listener = super::listen("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        assert!(!getsockopt(&stream, sockopt::KeepAlive).unwrap());
        super::keep_alive(&stream);
        assert!(getsockopt(&stream, sockopt::KeepAlive).unwrap());
        assert_eq!(getsockopt(&stream, sockopt::TcpKeepIdle).unwrap(), 60);
    }

    #[tokio::test]
    async fn a_port_is_shared_only_with_reuseport() {
        let first = super::listen("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = first.local_addr().unwrap();
        assert!(getsockopt(&first, sockopt::ReusePort).unwrap());
        let second = super::listen(addr, true).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
        let error = super::listen(addr, false).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse, "{error}");
    }
}
