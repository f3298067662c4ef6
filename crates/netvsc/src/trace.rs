//! Trace records of RNDIS control messages (NVSP and VMBus ones are traced where sent).

use vmbus::trace::{Dir, Tracer};

/// Traces one RNDIS message (PACKETs only when data tracing is on).
pub(crate) fn rndis(t: &Tracer, dir: Dir, channel: u32, msg: &[u8]) {
    if let Some((name, fields)) = rndis::json::trace_entry(msg, t.wants_data()) {
        t.record(dir, channel, "rndis", name, fields, msg);
    }
}
