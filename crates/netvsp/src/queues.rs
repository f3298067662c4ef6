//! A NIC's queues (PROTOCOL.md §3.5, §4.11, §4.12): how many subchannels a guest's
//! NVSP SUBCHANNEL request gets, the table of open queues indexed by
//! `sub_channel_index`, and the send indirection table sent once they are all open.
//!
//! Offers may be opened in any order, and a subchannel may close while the primary
//! stays: the table has one slot per granted channel and delivery falls back to queue 0
//! for an empty one.

use std::sync::Arc;

use nvsp::wire::SEND_TABLE_ENTRIES;

/// Queues a NIC offers unless configured otherwise (PROTOCOL.md §4.1 decision).
pub const DEFAULT_QUEUES: u16 = 8;

pub use crate::stats::MAX_QUEUES;

/// Why a SUBCHANNEL request (133) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubchannelError {
    /// Subchannels exist from NVSP 5.
    #[error("SUBCHANNEL needs NVSP 5 or later (negotiated {version:#x})")]
    NvspTooOld {
        /// The negotiated NVSP version.
        version: u32,
    },
    /// Only ALLOCATE (1) exists.
    #[error("SUBCHANNEL operation {op} is not ALLOCATE")]
    UnknownOperation {
        /// The operation the guest named.
        op: u32,
    },
    /// A request for no subchannels (Linux only asks with ≥ 2 queues).
    #[error("SUBCHANNEL asks for 0 subchannels")]
    NoneRequested,
    /// One grant per session: the guest re-initialises to change its queue count.
    #[error("second SUBCHANNEL request: {granted} already granted to this session")]
    AlreadyGranted {
        /// What the first request got.
        granted: u16,
    },
}

/// Decides a SUBCHANNEL request (§4.12): `min(requested, queues − 1)` subchannels, or
/// why none. `already` is what this session was granted before, if anything.
pub fn grant_subchannels(
    nvsp_version: u32,
    op: u32,
    requested: u32,
    queues: u16,
    already: Option<u16>,
) -> Result<u16, SubchannelError> {
    if nvsp_version < nvsp::version::V5 {
        return Err(SubchannelError::NvspTooOld {
            version: nvsp_version,
        });
    }
    if op != nvsp::wire::SUBCHANNEL_OP_ALLOCATE {
        return Err(SubchannelError::UnknownOperation { op });
    }
    if let Some(granted) = already {
        return Err(SubchannelError::AlreadyGranted { granted });
    }
    if requested == 0 {
        return Err(SubchannelError::NoneRequested);
    }
    let most = queues.clamp(1, MAX_QUEUES as u16) - 1;
    Ok(requested.min(u32::from(most)) as u16)
}

/// Why a subchannel could not take its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueOpenError {
    /// The index is beyond what was granted (or nothing was).
    #[error("subchannel {index} was not granted ({granted} granted)")]
    NotGranted {
        /// The subchannel's index.
        index: u16,
        /// Subchannels granted.
        granted: u16,
    },
    /// The slot is taken.
    #[error("subchannel {index} is already open")]
    AlreadyOpen {
        /// The subchannel's index.
        index: u16,
    },
}

/// One guest session's queues, slot `i` for `sub_channel_index` `i` (0 = the primary).
pub struct QueueTable<Q> {
    slots: Vec<Option<Arc<Q>>>,
    granted: Option<u16>,
}

impl<Q> QueueTable<Q> {
    /// A table with only the primary's queue.
    pub fn new(primary: Arc<Q>) -> Self {
        Self {
            slots: vec![Some(primary)],
            granted: None,
        }
    }

    /// Makes room for `count` subchannels (called once, when they are granted).
    pub fn grant(&mut self, count: u16) {
        self.granted = Some(count);
        self.slots.resize_with(1 + usize::from(count), || None);
    }

    /// What the session was granted, if it asked.
    pub fn granted(&self) -> Option<u16> {
        self.granted
    }

    /// Channels the session may have: 1 + subchannels granted.
    pub fn channels(&self) -> usize {
        self.slots.len()
    }

    /// Puts an opened subchannel's queue in its slot; returns whether every granted
    /// channel is now open.
    pub fn open(&mut self, index: u16, queue: Arc<Q>) -> Result<bool, QueueOpenError> {
        let granted = self.granted.unwrap_or(0);
        if index == 0 || index > granted {
            return Err(QueueOpenError::NotGranted { index, granted });
        }
        let slot = &mut self.slots[usize::from(index)];
        if slot.is_some() {
            return Err(QueueOpenError::AlreadyOpen { index });
        }
        *slot = Some(queue);
        Ok(self.slots.iter().all(Option::is_some))
    }

    /// Empties slot `index` (a subchannel closed); the primary's slot is not touched.
    pub fn close(&mut self, index: u16) {
        if index != 0
            && let Some(slot) = self.slots.get_mut(usize::from(index))
        {
            *slot = None;
        }
    }

    /// Empties every slot (the primary closed).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.granted = None;
    }

    /// The queue to post on for queue number `q`: `q` if open, else queue 0. Returns the
    /// index used with the queue.
    #[inline]
    pub fn pick(&self, q: usize) -> Option<(usize, &Arc<Q>)> {
        match self.slots.get(q) {
            Some(Some(queue)) => Some((q, queue)),
            _ => self.slots.first()?.as_ref().map(|queue| (0, queue)),
        }
    }

    /// Every open queue.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Q>> {
        self.slots.iter().flatten()
    }
}

/// The send indirection table message (134) for `channels` channels: Windows layout,
/// 104 bytes, table at 40, entries `i mod channels` (§4.11 decision).
pub fn send_table_message(channels: u32) -> [u8; nvsp::send_table::MESSAGE_SIZE] {
    let table: [u32; SEND_TABLE_ENTRIES] = nvsp::send_table::default_table(channels);
    let mut buf = [0u8; nvsp::send_table::MESSAGE_SIZE];
    nvsp::emit_send_indirection_table(&table, &mut buf).expect("sized for the message");
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvsp::version::{V4, V5, V6_1};

    #[test]
    fn grants_follow_the_rules() {
        let alloc = nvsp::wire::SUBCHANNEL_OP_ALLOCATE;
        assert_eq!(grant_subchannels(V6_1, alloc, 3, 4, None), Ok(3));
        assert_eq!(grant_subchannels(V5, alloc, 7, 4, None), Ok(3));
        assert_eq!(grant_subchannels(V6_1, alloc, u32::MAX, 8, None), Ok(7));
        assert_eq!(grant_subchannels(V6_1, alloc, 5, 1, None), Ok(0));
        assert_eq!(grant_subchannels(V6_1, alloc, 5, 0, None), Ok(0));
        assert_eq!(grant_subchannels(V6_1, alloc, 500, 1000, None), Ok(63));
        assert_eq!(
            grant_subchannels(V4, alloc, 3, 4, None),
            Err(SubchannelError::NvspTooOld { version: V4 })
        );
        assert_eq!(
            grant_subchannels(V6_1, 2, 3, 4, None),
            Err(SubchannelError::UnknownOperation { op: 2 })
        );
        assert_eq!(
            grant_subchannels(V6_1, alloc, 0, 4, None),
            Err(SubchannelError::NoneRequested)
        );
        assert_eq!(
            grant_subchannels(V6_1, alloc, 3, 4, Some(3)),
            Err(SubchannelError::AlreadyGranted { granted: 3 })
        );
    }

    #[test]
    fn table_takes_out_of_order_opens_and_falls_back_to_queue_0() {
        let mut t = QueueTable::new(Arc::new(0u32));
        assert_eq!(
            t.open(1, Arc::new(1)),
            Err(QueueOpenError::NotGranted {
                index: 1,
                granted: 0
            })
        );
        t.grant(3);
        assert_eq!(t.channels(), 4);
        assert_eq!(t.open(3, Arc::new(3)), Ok(false));
        assert_eq!(t.open(1, Arc::new(1)), Ok(false));
        assert_eq!(
            t.open(1, Arc::new(1)),
            Err(QueueOpenError::AlreadyOpen { index: 1 })
        );
        assert_eq!(t.pick(2).map(|(i, q)| (i, **q)), Some((0, 0)));
        assert_eq!(t.open(2, Arc::new(2)), Ok(true));
        assert_eq!(t.pick(2).map(|(i, q)| (i, **q)), Some((2, 2)));
        assert_eq!(t.pick(9).map(|(i, _)| i), Some(0));
        assert!(t.open(4, Arc::new(4)).is_err());
        assert!(t.open(0, Arc::new(4)).is_err());
        t.close(2);
        t.close(0);
        assert_eq!(t.pick(2).map(|(i, _)| i), Some(0));
        assert_eq!(t.iter().count(), 3);
        t.clear();
        assert!(t.pick(0).is_none());
    }

    #[test]
    fn send_table_is_the_windows_layout() {
        let m = send_table_message(4);
        assert_eq!(m.len(), 104);
        let t = nvsp::parse_send_indirection_table(&m, V6_1).unwrap();
        assert_eq!(t, nvsp::send_table::default_table(4));
        assert_eq!(u32::from_le_bytes(m[8..12].try_into().unwrap()), 40);
    }
}
