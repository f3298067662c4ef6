//! The guest's upper edge: a Linux TAP interface that stands for the VM's `eth0`.
//!
//! Frames the kernel sends on the interface are read here and transmitted by netvsc;
//! frames netvsc receives are written here for the kernel. The TAP is created in the
//! network namespace of the calling thread, with a `virtio_net_hdr` in front of every
//! frame (`IFF_VNET_HDR`), so that checksum and segmentation offloads can be carried
//! once they are negotiated.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Length of the virtio-net header the TAP puts in front of each frame
/// (`struct virtio_net_hdr_v1`, with `num_buffers`).
pub const VNET_HDR_LEN: usize = 12;

/// `virtio_net_hdr.flags`: the checksum is partial (start/offset given).
pub const VNET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `virtio_net_hdr.flags`: the checksum has been validated.
pub const VNET_HDR_F_DATA_VALID: u8 = 2;
/// `virtio_net_hdr.gso_type` values.
pub mod gso {
    /// Not a GSO frame.
    pub const NONE: u8 = 0;
    /// TCP over IPv4.
    pub const TCPV4: u8 = 1;
    /// UDP (fragmentation offload).
    pub const UDP: u8 = 3;
    /// TCP over IPv6.
    pub const TCPV6: u8 = 4;
    /// ECN bit.
    pub const ECN: u8 = 0x80;
}

/// The virtio-net header, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `VNET_HDR_F_*` flags.
    pub flags: u8,
    /// `gso::*` type.
    pub gso_type: u8,
    /// Length of the headers (Ethernet through L4).
    pub hdr_len: u16,
    /// Segment size for GSO frames.
    pub gso_size: u16,
    /// Where the checksum computation starts (NEEDS_CSUM).
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Parses the first `VNET_HDR_LEN` bytes (little-endian, as the TAP uses on x86).
    pub fn parse(b: &[u8; VNET_HDR_LEN]) -> Self {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }

    /// Encodes into `VNET_HDR_LEN` bytes.
    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

/// A TAP interface.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
}

#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn ioctl_err(what: &str) -> std::io::Error {
    let e = std::io::Error::last_os_error();
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl Tap {
    /// Creates TAP `name` with `queues` queues (one handle each; several queues need
    /// `IFF_MULTI_QUEUE`), in the calling thread's network namespace.
    pub fn create_queues(name: &str, queues: usize) -> std::io::Result<Vec<Self>> {
        if queues <= 1 {
            return Ok(vec![Self::open(name, false)?]);
        }
        (0..queues).map(|_| Self::open(name, true)).collect()
    }

    /// Creates (or attaches to) TAP `name` in the calling thread's network namespace,
    /// non-blocking, with a virtio-net header on every frame.
    pub fn create(name: &str) -> std::io::Result<Self> {
        Self::open(name, false)
    }

    /// Opens one queue of TAP `name` (creating it if needed).
    fn open(name: &str, multi_queue: bool) -> std::io::Result<Self> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("interface name {name:?} must be 1 to 15 bytes"),
            ));
        }
        // SAFETY: plain open(2) of a path we own as a C string.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(ioctl_err(
                "open /dev/net/tun (is the tun module loaded and are you root?)",
            ));
        }
        // SAFETY: raw is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReqFlags {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TAP
                | libc::IFF_NO_PI
                | libc::IFF_VNET_HDR
                | if multi_queue {
                    libc::IFF_MULTI_QUEUE
                } else {
                    0
                }) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF takes a struct ifreq, which `req` lays out.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            return Err(ioctl_err(&format!("create TAP {name}")));
        }
        let hdr = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ takes a pointer to int.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr) } < 0 {
            return Err(ioctl_err("set TAP vnet header size"));
        }
        let tap = Self {
            fd,
            name: name.to_owned(),
        };
        tap.set_offload(0)?;
        Ok(tap)
    }

    /// A second handle on the same TAP (e.g. for a control thread's ioctls).
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(Self {
            fd: rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)?,
            name: self.name.clone(),
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Tells the kernel which offloads (`TUN_F_*`) it may hand us.
    pub fn set_offload(&self, flags: u32) -> std::io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes the flags by value.
        if unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                flags as libc::c_ulong,
            )
        } < 0
        {
            return Err(ioctl_err("set TAP offloads"));
        }
        Ok(())
    }

    /// Sets the carrier (link) state the kernel sees.
    pub fn set_carrier(&self, up: bool) -> std::io::Result<()> {
        let v: libc::c_int = up.into();
        // SAFETY: TUNSETCARRIER takes a pointer to int.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TUNSETCARRIER, &v) } < 0 {
            return Err(ioctl_err("set TAP carrier"));
        }
        Ok(())
    }

    /// Sets the interface's MAC address.
    pub fn set_mac(&self, mac: [u8; 6]) -> std::io::Result<()> {
        with_ifreq(&self.name, |sock, req| {
            // SAFETY: ifr_hwaddr is the sockaddr member of the union.
            unsafe {
                req.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
                for (d, s) in req.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
                    *d = s as libc::c_char;
                }
                ioctl_checked(sock, libc::SIOCSIFHWADDR, req, "set MAC address")
            }
        })
    }

    /// Sets the interface's MTU.
    pub fn set_mtu(&self, mtu: u32) -> std::io::Result<()> {
        with_ifreq(&self.name, |sock, req| {
            req.ifr_ifru.ifru_mtu = mtu as libc::c_int;
            // SAFETY: SIOCSIFMTU reads ifru_mtu.
            unsafe { ioctl_checked(sock, libc::SIOCSIFMTU, req, "set MTU") }
        })
    }

    /// Brings the interface administratively up or down.
    pub fn set_up(&self, up: bool) -> std::io::Result<()> {
        with_ifreq(&self.name, |sock, req| {
            // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS use ifru_flags.
            unsafe {
                ioctl_checked(sock, libc::SIOCGIFFLAGS, req, "get interface flags")?;
                let mut flags = req.ifr_ifru.ifru_flags;
                if up {
                    flags |= libc::IFF_UP as libc::c_short;
                } else {
                    flags &= !(libc::IFF_UP as libc::c_short);
                }
                req.ifr_ifru.ifru_flags = flags;
                ioctl_checked(sock, libc::SIOCSIFFLAGS, req, "set interface flags")
            }
        })
    }

    /// Reads one frame (with its virtio-net header) into `buf`; `Ok(None)` if none is
    /// waiting.
    pub fn read(&self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        match rustix::io::read(&self.fd, buf) {
            Ok(n) => Ok(Some(n)),
            Err(rustix::io::Errno::AGAIN) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes one frame given as pieces (virtio-net header first). Returns false if the
    /// kernel's queue is full and the frame was not taken.
    pub fn write(&self, parts: &[IoSlice<'_>]) -> std::io::Result<bool> {
        match rustix::io::writev(&self.fd, parts) {
            Ok(_) => Ok(true),
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::NOBUFS) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Runs `f` with a control socket and an `ifreq` naming `name`.
fn with_ifreq(
    name: &str,
    f: impl FnOnce(BorrowedFd<'_>, &mut libc::ifreq) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let sock = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *d = *s as libc::c_char;
    }
    f(sock.as_fd(), &mut req)
}

/// # Safety
/// `req` must be what `op` expects.
unsafe fn ioctl_checked(
    sock: BorrowedFd<'_>,
    op: libc::Ioctl,
    req: &mut libc::ifreq,
    what: &str,
) -> std::io::Result<()> {
    // SAFETY: forwarded to the caller.
    if unsafe { libc::ioctl(sock.as_raw_fd(), op, req as *mut libc::ifreq) } < 0 {
        return Err(ioctl_err(what));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnet_hdr_round_trip() {
        let h = VnetHdr {
            flags: VNET_HDR_F_NEEDS_CSUM,
            gso_type: gso::TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let b = h.encode();
        assert_eq!(b, [1, 1, 66, 0, 0xa8, 5, 34, 0, 16, 0, 0, 0]);
        assert_eq!(VnetHdr::parse(&b), h);
    }
}
