//! The TCP side of the listener: binding with a deep backlog, and the
//! options every accepted socket gets.
//!
//! Invariant: every option an accepted socket needs (keepalive and its
//! timings, `TCP_NODELAY`) is set once, on the listening socket, and Linux
//! copies it into each socket `accept` returns. A setsockopt per connection
//! is a system call per connection, and a reconnect storm is made of them.

use std::{net::SocketAddr, time::Duration};

use nix::sys::socket::{setsockopt, sockopt};
use tokio::net::{TcpListener, TcpSocket};

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
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // A restarted Herald must bind its port while the old connections linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    if reuseport {
        socket.set_reuseport(true)?;
    }
    inherited_options(&socket);
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The options every accepted socket inherits, whatever it turns out to be
/// (WebSocket, SSE, plain HTTP): TCP keepalive, and `TCP_NODELAY`, because
/// a push server's frames are small and must leave at once (Herald batches
/// its own writes). A failure only costs the probes or a delayed frame.
fn inherited_options(socket: &TcpSocket) {
    let set = || -> nix::Result<()> {
        setsockopt(socket, sockopt::TcpNoDelay, &true)?;
        setsockopt(socket, sockopt::KeepAlive, &true)?;
        setsockopt(
            socket,
            sockopt::TcpKeepIdle,
            &(KEEPALIVE_IDLE.as_secs() as u32),
        )?;
        setsockopt(
            socket,
            sockopt::TcpKeepInterval,
            &(KEEPALIVE_INTERVAL.as_secs() as u32),
        )?;
        setsockopt(socket, sockopt::TcpKeepCount, &KEEPALIVE_PROBES)
    };
    if let Err(error) = set() {
        tracing::warn!(%error, "cannot set TCP keepalive or TCP_NODELAY on the listener");
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::socket::{getsockopt, sockopt};

    /// What no accepted socket is given by hand, it must inherit.
    #[tokio::test]
    async fn accepted_sockets_inherit_keepalive_and_nodelay() {
        let listener = super::listen("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        assert!(getsockopt(&stream, sockopt::KeepAlive).unwrap());
        assert_eq!(getsockopt(&stream, sockopt::TcpKeepIdle).unwrap(), 60);
        assert_eq!(getsockopt(&stream, sockopt::TcpKeepInterval).unwrap(), 10);
        assert_eq!(getsockopt(&stream, sockopt::TcpKeepCount).unwrap(), 6);
        assert!(getsockopt(&stream, sockopt::TcpNoDelay).unwrap());
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
