//! Receive-side scaling on the host (PROTOCOL.md §7.4, §7.5, §9.2): the RSS configuration
//! a guest set with OID_GEN_RECEIVE_SCALE_PARAMETERS, and the choice of queue for each
//! frame delivered to it.
//!
//! The configuration is an immutable snapshot ([`RssConfig`]) swapped whole under a
//! lock when the guest sets new parameters; delivery takes the snapshot once per frame
//! and never blocks a SET for longer than that clone. The Toeplitz hasher (36 KiB of
//! tables) is built when the key changes, not per frame, and kept across a
//! disable/enable pair with the same key (Linux sends the parameters twice, §7.5).

use std::sync::{Arc, Mutex, RwLock};

use netpkt::frame::FrameInfo;
use netpkt::toeplitz::{Toeplitz, hash_info};
use rndis::rss::{RSS_TABLE_ENTRIES, RssSettings};

/// Why a SET of the RSS parameters was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RssError {
    /// RSS comes with subchannels, from NVSP 5 (§9.3).
    #[error("RSS parameters need NVSP 5 or later (negotiated {version:#x})")]
    NvspTooOld {
        /// The negotiated NVSP version.
        version: u32,
    },
    /// The object broke the host's rules (§7.5).
    #[error("RSS parameters: {0}")]
    Parameters(#[from] rndis::RndisError),
}

/// An enabled RSS configuration, as delivery uses it.
pub struct RssConfig {
    /// Hash function | enabled types, as the guest set them.
    pub hash_info: u32,
    /// 128 queue numbers (`sub_channel_index` values), a shorter table repeated.
    pub table: [u8; RSS_TABLE_ENTRIES],
    /// The hasher for the guest's key.
    pub toeplitz: Arc<Toeplitz>,
}

/// Where one frame goes and what the guest is told about its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Steering {
    /// The Toeplitz hash (NBL_HASH_VALUE).
    pub hash: u32,
    /// Hash function | the type the frame was hashed as (NBL_HASH_INFO).
    pub hash_info: u32,
    /// The queue the indirection table names (`table[hash & 127]`); it may not be open.
    pub queue: usize,
}

impl RssConfig {
    /// Hashes a frame with the §9.2 rules: TCP not fragmented with a TCP type → 4-tuple;
    /// other IPv4/IPv6 (every fragment included) with the IP type → 2-tuple; UDP ports
    /// only with a UDP type. None: no enabled type covers the frame (queue 0, no hash).
    #[inline]
    pub fn steer(&self, info: &FrameInfo) -> Option<Steering> {
        let (hash, ty) = self.toeplitz.rss_hash(info, self.hash_info)?;
        Some(Steering {
            hash,
            hash_info: hash_info::TOEPLITZ | ty,
            queue: usize::from(self.table[hash as usize % RSS_TABLE_ENTRIES]),
        })
    }
}

/// A guest session's RSS state: off until the guest sets parameters that enable it.
#[derive(Default)]
pub struct Rss {
    current: RwLock<Option<Arc<RssConfig>>>,
    /// The last hasher built, reused while the key stays the same.
    hasher: Mutex<Option<Arc<Toeplitz>>>,
}

impl Rss {
    /// The configuration in force, None while RSS is off.
    #[inline]
    pub fn current(&self) -> Option<Arc<RssConfig>> {
        self.current.read().unwrap().clone()
    }

    /// Whether RSS is on.
    pub fn enabled(&self) -> bool {
        self.current.read().unwrap().is_some()
    }

    /// Applies NDIS_RECEIVE_SCALE_PARAMETERS (`data` as the guest sent it) for a NIC of
    /// `queues` queues: DISABLE_RSS or hash function 0 turn RSS off; otherwise the object
    /// must pass [`rndis::rss::parse_rss_parameters`]. On error nothing changes. Returns
    /// whether RSS is now on.
    pub fn apply(&self, data: &[u8], queues: u32) -> Result<bool, RssError> {
        match rndis::rss::parse_rss_parameters(data, queues)? {
            rndis::rss::RssConfig::Disabled => {
                *self.current.write().unwrap() = None;
                Ok(false)
            }
            rndis::rss::RssConfig::Enabled(s) => {
                let config = self.build(&s);
                *self.current.write().unwrap() = Some(Arc::new(config));
                Ok(true)
            }
        }
    }

    /// Turns RSS off and forgets the hasher (the session ends).
    pub fn clear(&self) {
        *self.current.write().unwrap() = None;
        *self.hasher.lock().unwrap() = None;
    }

    fn build(&self, s: &RssSettings) -> RssConfig {
        let toeplitz = {
            let mut cached = self.hasher.lock().unwrap();
            match cached.as_ref() {
                Some(t) if t.key() == &s.key => t.clone(),
                _ => {
                    let t = Arc::new(Toeplitz::new(&s.key));
                    *cached = Some(t.clone());
                    t
                }
            }
        };
        // The parser checked every entry < queues ≤ 64.
        let table = std::array::from_fn(|i| s.table[i] as u8);
        RssConfig {
            hash_info: s.hash_info,
            table,
            toeplitz,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rndis::rss::{DEFAULT_KEY, emit_rss_parameters, flags, hash};

    fn params(flags: u16, table: &[u32], key: &[u8; 40]) -> Vec<u8> {
        let mut buf = vec![0u8; 600];
        let n = emit_rss_parameters(&mut buf, flags, hash::LINUX, table, key).unwrap();
        buf.truncate(n);
        buf
    }

    fn tcp_v4(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, frag: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        f.extend_from_slice(&[0x45, 0, 0, 40, 0, 0]);
        f.extend_from_slice(&frag.to_be_bytes());
        f.extend_from_slice(&[64, 6, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&sp.to_be_bytes());
        f.extend_from_slice(&dp.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
        f
    }

    #[test]
    fn steering_follows_the_table_and_the_microsoft_vectors() {
        let rss = Rss::default();
        assert!(!rss.enabled());
        let table: Vec<u32> = (0..128).map(|i| i % 4).collect();
        assert_eq!(rss.apply(&params(0, &table, &DEFAULT_KEY), 4), Ok(true));
        let c = rss.current().unwrap();
        // 66.9.149.187:2794 → 161.142.100.80:1766 = 0x51ccc178 (4-tuple).
        let f = tcp_v4([66, 9, 149, 187], [161, 142, 100, 80], 2794, 1766, 0);
        let info = netpkt::parse_frame(&f).unwrap();
        let s = c.steer(&info).unwrap();
        assert_eq!(s.hash, 0x51ccc178);
        assert_eq!(s.hash_info, hash::FUNCTION_TOEPLITZ | hash::TCP_IPV4);
        assert_eq!(s.queue, (0x51ccc178usize & 127) % 4);
        // A fragment: 2-tuple, 0x323e8fc2.
        let f = tcp_v4([66, 9, 149, 187], [161, 142, 100, 80], 2794, 1766, 0x2000);
        let s = c.steer(&netpkt::parse_frame(&f).unwrap()).unwrap();
        assert_eq!(s.hash, 0x323e8fc2);
        assert_eq!(s.hash_info, hash::FUNCTION_TOEPLITZ | hash::IPV4);
        // Non-IP: no hash.
        let mut arp = vec![0u8; 60];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert_eq!(c.steer(&netpkt::parse_frame(&arp).unwrap()), None);
    }

    #[test]
    fn disable_then_enable_reuses_the_hasher_and_errors_change_nothing() {
        let rss = Rss::default();
        let table = [0u32, 1, 2, 3];
        assert_eq!(rss.apply(&params(0, &table, &DEFAULT_KEY), 4), Ok(true));
        let first = rss.current().unwrap().toeplitz.clone();
        assert_eq!(
            rss.apply(&params(flags::DISABLE_RSS, &table, &DEFAULT_KEY), 4),
            Ok(false)
        );
        assert!(rss.current().is_none());
        assert_eq!(rss.apply(&params(0, &table, &DEFAULT_KEY), 4), Ok(true));
        assert!(Arc::ptr_eq(&first, &rss.current().unwrap().toeplitz));
        // Entry 3 with 2 queues: refused, the old configuration stays.
        assert!(matches!(
            rss.apply(&params(0, &table, &DEFAULT_KEY), 2),
            Err(RssError::Parameters(
                rndis::RndisError::RssEntryOutOfRange { .. }
            ))
        ));
        assert!(rss.enabled());
        // A new key builds a new hasher.
        let mut key = DEFAULT_KEY;
        key[0] ^= 1;
        assert_eq!(rss.apply(&params(0, &table, &key), 4), Ok(true));
        assert!(!Arc::ptr_eq(&first, &rss.current().unwrap().toeplitz));
        rss.clear();
        assert!(!rss.enabled());
    }
}
