//! The emulated VMBus control plane's transport: a Unix `SOCK_SEQPACKET` socket.
//!
//! One datagram carries one VMBus channel message (PROTOCOL.md §3.1 E1); file
//! descriptors (the guest-memory memfd, a channel's eventfds) travel with it as
//! `SCM_RIGHTS`.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

/// Most file descriptors one message may carry (OPENCHANNEL carries two).
pub const MAX_FDS: usize = 4;

/// A connected control socket (either side).
#[derive(Debug)]
pub struct ControlSocket {
    fd: OwnedFd,
}

/// What one receive produced.
#[derive(Debug)]
pub enum Received {
    /// A message of this many bytes, with these descriptors.
    Message(usize, Vec<OwnedFd>),
    /// The peer closed the connection (or it failed).
    Closed,
}

impl ControlSocket {
    /// Connects to a host listening at `path`.
    pub fn connect(path: &Path) -> std::io::Result<Self> {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        rustix::net::connect(&fd, &SocketAddrUnix::new(path)?)?;
        Ok(Self { fd })
    }

    /// Sends one message with `fds` attached.
    pub fn send(&self, msg: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(std::io::Error::other(
                "too many descriptors for one message",
            ));
        }
        let n = rustix::net::sendmsg(
            &self.fd,
            &[IoSlice::new(msg)],
            &mut control,
            SendFlags::NOSIGNAL,
        )?;
        if n != msg.len() {
            return Err(std::io::Error::other("control message truncated on send"));
        }
        Ok(())
    }

    /// Receives one message into `buf` (blocking). A message longer than `buf` is
    /// reported with its full length so the caller can reject it.
    pub fn recv(&self, buf: &mut [u8]) -> std::io::Result<Received> {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let r = match rustix::net::recvmsg(
            &self.fd,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::TRUNC,
        ) {
            Ok(r) => r,
            Err(rustix::io::Errno::CONNRESET) => return Ok(Received::Closed),
            Err(e) => return Err(e.into()),
        };
        let mut fds = Vec::new();
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(iter) = msg {
                fds.extend(iter);
            }
        }
        if r.bytes == 0 && fds.is_empty() {
            return Ok(Received::Closed);
        }
        Ok(Received::Message(r.bytes, fds))
    }

    /// Waits until a message (or EOF) is ready, up to `timeout`; returns whether it is.
    pub fn wait_readable(&self, timeout: Option<Duration>) -> bool {
        crate::event::wait_any(&[self.fd.as_fd()], timeout).is_some_and(|m| m & 1 != 0)
    }
}

impl AsFd for ControlSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The host's listening socket for one VM's VMBus.
#[derive(Debug)]
pub struct ControlListener {
    fd: OwnedFd,
}

impl ControlListener {
    /// Binds and listens at `path`, replacing a stale socket file left by a dead host.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        if path.exists() {
            // Refuse to steal the socket of a live host.
            if ControlSocket::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running host", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
        rustix::net::listen(&fd, 4)?;
        Ok(Self { fd })
    }

    /// Accepts one guest connection (blocking).
    pub fn accept(&self) -> std::io::Result<ControlSocket> {
        let fd = rustix::net::accept_with(&self.fd, SocketFlags::CLOEXEC)?;
        Ok(ControlSocket { fd })
    }
}

impl AsFd for ControlListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventFd;

    #[test]
    fn messages_carry_descriptors() {
        let dir = std::env::temp_dir().join(format!("hvnet-sock-{}", std::process::id()));
        let listener = ControlListener::bind(&dir).unwrap();
        let client = ControlSocket::connect(&dir).unwrap();
        let server = listener.accept().unwrap();
        let e = EventFd::new().unwrap();
        client.send(b"hello", &[e.as_fd()]).unwrap();
        let mut buf = [0u8; 240];
        match server.recv(&mut buf).unwrap() {
            Received::Message(n, fds) => {
                assert_eq!(&buf[..n], b"hello");
                assert_eq!(fds.len(), 1);
                let peer = EventFd::from_fd(fds.into_iter().next().unwrap()).unwrap();
                peer.signal();
                assert!(e.wait(Some(Duration::from_secs(1))));
            }
            Received::Closed => panic!("closed"),
        }
        drop(client);
        assert!(matches!(server.recv(&mut buf).unwrap(), Received::Closed));
        std::fs::remove_file(&dir).unwrap();
    }
}
