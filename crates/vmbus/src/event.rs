//! Channel signals of the emulated transport: one eventfd per direction (PROTOCOL.md §1.7).
//!
//! Signalling writes 1; a waiter reads to reset. Wake-ups may be spurious, so every
//! waiter re-checks its ring after waking.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{EventfdFlags, PollFd, PollFlags};

/// One direction's signal: an eventfd.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// Creates a new, unsignalled eventfd.
    pub fn new() -> std::io::Result<Self> {
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Self { fd })
    }

    /// Wraps an eventfd received from the peer. It is switched to non-blocking mode.
    pub fn from_fd(fd: OwnedFd) -> std::io::Result<Self> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        Ok(Self { fd })
    }

    /// Signals the peer.
    pub fn signal(&self) {
        // A full counter (2^64 - 2 pending signals) can only mean a peer that never
        // reads; the signal is then redundant, so the error is ignored.
        let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
    }

    /// Consumes pending signals; returns whether there were any.
    pub fn consume(&self) -> bool {
        let mut buf = [0u8; 8];
        matches!(rustix::io::read(&self.fd, &mut buf), Ok(8))
    }

    /// Waits until signalled or `timeout` passes (None: forever); consumes the signal.
    /// Returns whether a signal arrived.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        wait_any(&[self.fd.as_fd()], timeout).is_some_and(|r| r & 1 != 0) && self.consume()
    }

    /// Duplicates the fd, e.g. to pass to the peer.
    pub fn try_clone_fd(&self) -> std::io::Result<OwnedFd> {
        Ok(rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)?)
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Waits until any of `fds` is readable (or hung up), up to `timeout` (None: forever).
///
/// Returns a bit mask of which were ready (bit i for `fds[i]`, at most 8 fds), or None on
/// timeout. Interrupted waits return 0 so the caller re-checks its state.
pub fn wait_any(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> Option<u32> {
    assert!(fds.len() <= 8, "wait_any takes at most 8 fds");
    let mut pfds: [PollFd<'_>; 8] = std::array::from_fn(|i| {
        PollFd::from_borrowed_fd(fds[i.min(fds.len().max(1) - 1)], PollFlags::IN)
    });
    let pfds = &mut pfds[..fds.len()];
    let ts = timeout.map(|t| rustix::time::Timespec {
        tv_sec: t.as_secs() as i64,
        tv_nsec: t.subsec_nanos() as _,
    });
    match rustix::event::poll(pfds, ts.as_ref()) {
        Ok(0) => None,
        Ok(_) => Some(
            pfds.iter()
                .enumerate()
                .filter(|(_, p)| !p.revents().is_empty())
                .fold(0, |m, (i, _)| m | 1 << i),
        ),
        Err(_) => Some(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_then_wait_consumes() {
        let e = EventFd::new().unwrap();
        assert!(!e.wait(Some(Duration::from_millis(1))));
        e.signal();
        e.signal();
        assert!(e.wait(Some(Duration::from_secs(1))));
        assert!(!e.consume());
    }
}
