//! Trace records of RNDIS control messages (NVSP and VMBus ones are traced where sent).

use vmbus::trace::{Dir, Tracer};

/// Traces one RNDIS message (PACKETs only when data tracing is on).
pub(crate) fn rndis(tracer: Option<&Tracer>, dir: Dir, channel: u32, msg: &[u8]) {
    let Some(t) = tracer else { return };
    if let Some((name, fields)) = rndis::json::trace_entry(msg, t.wants_data()) {
        t.record(dir, channel, "rndis", name, fields, msg);
    }
}
