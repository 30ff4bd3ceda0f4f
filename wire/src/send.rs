//! Herald's frames leave with `sendmsg(2)`, not `writev(2)`: the same
//! vectored write without the file layer's part (`vfs_writev`, the
//! position-locking file lookup, `sock_write_iter`), which a profile of a
//! broadcast to 10,000 sockets showed as a tenth of the server's CPU per
//! delivery. `MSG_NOSIGNAL`: a peer gone is an error, never a signal.

use std::{
    io::{self, IoSlice},
    os::fd::AsRawFd,
    task::{Context, Poll, ready},
};

use nix::sys::socket::{MsgFlags, SockaddrStorage, sendmsg};
use tokio::{io::Interest, net::TcpStream};

/// Writes `slices` to `stream` as `AsyncWrite::poll_write_vectored` would.
pub(crate) fn poll_send_vectored(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    slices: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    loop {
        let sent = stream.try_io(Interest::WRITABLE, || {
            sendmsg::<SockaddrStorage>(
                stream.as_raw_fd(),
                slices,
                &[],
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map_err(io::Error::from)
        });
        match sent {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                // Not writable (or no longer): wait until it is, then retry.
                ready!(stream.poll_write_ready(cx))?;
            }
            sent => return Poll::Ready(sent),
        }
    }
}
