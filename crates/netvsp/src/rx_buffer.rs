//! The receive buffer's sections, as the host lends them (PROTOCOL.md §4.6).
//!
//! The host owns the sections of the guest's receive buffer: it lends one for each RNDIS
//! message it posts and gets it back when the guest completes the transfer-page packet.
//! A few sections are held back for control replies and status indications so that a
//! flood of data can never starve the control path. A completion naming a section that
//! is not lent is ignored and counted, never trusted.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use vmbus::memory::GpadlMapping;

/// Sections held back for control replies and status (a host decision, §4.6).
pub const RESERVED_SECTIONS: u32 = 16;

/// Tag in the upper half of transaction ids of transfer-page packets, so that a
/// completion with a made-up id is unlikely to name a section.
const TRANSACTION_TAG: u64 = 0xCAFE << 32;

/// The guest's receive buffer as the host sees it.
pub struct ReceiveBuffer {
    mapping: Arc<GpadlMapping>,
    /// The GPADL handle the guest sent in NVSP 101.
    pub gpadl: u32,
    section_size: u32,
    count: u32,
    pool: Mutex<Pool>,
    /// Completions that named no lent section.
    pub bad_completions: AtomicU64,
}

struct Pool {
    free: Vec<u32>,
    lent: Vec<bool>,
    /// Sections lent by one transfer-page packet are chained: `next[s]` is the next
    /// section of the same packet, or `END`. The packet's id names the first.
    next: Vec<u32>,
    peak: u32,
}

const END: u32 = u32::MAX;

/// Whom a section is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A received frame: may not dip into the reserve.
    Data,
    /// A control reply or status indication: may use the reserve.
    Control,
}

impl ReceiveBuffer {
    /// Carves the mapped buffer into sections of `section_size`.
    pub fn new(mapping: Arc<GpadlMapping>, gpadl: u32, section_size: u32) -> Self {
        let count = (mapping.len() / section_size as usize) as u32;
        Self {
            mapping,
            gpadl,
            section_size,
            count,
            pool: Mutex::new(Pool {
                free: (0..count).rev().collect(),
                lent: vec![false; count as usize],
                next: vec![END; count as usize],
                peak: 0,
            }),
            bad_completions: AtomicU64::new(0),
        }
    }

    /// Section size in bytes.
    pub fn section_size(&self) -> u32 {
        self.section_size
    }

    /// Number of sections.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Lends a free section, or None if there is none for this purpose.
    pub fn lend(&self, purpose: Purpose) -> Option<u32> {
        let mut pool = self.pool.lock().unwrap();
        let floor = match purpose {
            Purpose::Data => RESERVED_SECTIONS as usize,
            Purpose::Control => 0,
        };
        if pool.free.len() <= floor {
            return None;
        }
        let s = pool.free.pop()?;
        pool.lent[s as usize] = true;
        let in_use = self.count - pool.free.len() as u32;
        pool.peak = pool.peak.max(in_use);
        Some(s)
    }

    /// Lends `n` sections for one packet, chained so that one completion returns them
    /// all; None (nothing lent) if there are not enough for this purpose.
    pub fn lend_group(&self, purpose: Purpose, out: &mut Vec<u32>, n: usize) -> Option<()> {
        let mut pool = self.pool.lock().unwrap();
        let floor = match purpose {
            Purpose::Data => RESERVED_SECTIONS as usize,
            Purpose::Control => 0,
        };
        if pool.free.len() < floor + n || n == 0 {
            return None;
        }
        out.clear();
        for _ in 0..n {
            let s = pool.free.pop()?;
            pool.lent[s as usize] = true;
            if let Some(&prev) = out.last() {
                pool.next[prev as usize] = s;
            }
            out.push(s);
        }
        let in_use = self.count - pool.free.len() as u32;
        pool.peak = pool.peak.max(in_use);
        Some(())
    }

    /// Takes a section (and the sections chained to it) back without the guest: the
    /// packet was never posted.
    pub fn unlend(&self, section: u32) {
        self.give_back(section);
    }

    fn give_back(&self, first: u32) -> bool {
        let mut pool = self.pool.lock().unwrap();
        if !pool.lent.get(first as usize).is_some_and(|l| *l) {
            return false;
        }
        let mut s = first;
        // The chain has at most `count` links; the bound guards against a corrupted one.
        for _ in 0..self.count {
            pool.lent[s as usize] = false;
            pool.free.push(s);
            let next = std::mem::replace(&mut pool.next[s as usize], END);
            if next == END || !pool.lent.get(next as usize).is_some_and(|l| *l) {
                break;
            }
            s = next;
        }
        true
    }

    /// The transaction id of a transfer-page packet lending `section`.
    pub fn transaction_id(section: u32) -> u64 {
        TRANSACTION_TAG | u64::from(section)
    }

    /// Handles the guest's completion of a transfer-page packet.
    pub fn complete(&self, transaction_id: u64) {
        let ok = transaction_id & !0xFFFF_FFFF == TRANSACTION_TAG
            && self.give_back(transaction_id as u32);
        if !ok {
            self.bad_completions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Byte offset of a section in the buffer.
    pub fn offset(&self, section: u32) -> u32 {
        section * self.section_size
    }

    /// Copies `parts` one after another into a section; false if they do not fit.
    pub fn fill(&self, section: u32, parts: &[&[u8]]) -> bool {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > self.section_size as usize || section >= self.count {
            return false;
        }
        let mut at = self.offset(section) as usize;
        for p in parts {
            if self.mapping.write(at, p).is_none() {
                return false;
            }
            at += p.len();
        }
        true
    }

    /// Sections lent now, and the most ever lent at once.
    pub fn usage(&self) -> (u32, u32) {
        let pool = self.pool.lock().unwrap();
        (self.count - pool.free.len() as u32, pool.peak)
    }

    /// The mapping, while the buffer lives.
    pub fn mapping(&self) -> &Arc<GpadlMapping> {
        &self.mapping
    }
}
