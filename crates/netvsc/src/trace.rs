//! Conversion of decoded NVSP and RNDIS messages to trace records.

use vmbus::trace::{Dir, Tracer};

/// One NVSP field as JSON.
pub(crate) fn nvsp_field(v: nvsp::FieldValue<'_>) -> serde_json::Value {
    use nvsp::FieldValue as F;
    match v {
        F::U64(x) => x.into(),
        F::Hex(x) => format!("{x:#x}").into(),
        F::Str(s) => s.into(),
        F::Bytes(b) => vmbus::trace::hex(b).into(),
        F::U32List(l) => l.iter().map(|x| serde_json::Value::from(x.get())).collect(),
    }
}

/// Traces one RNDIS control message (PACKETs only when data tracing is on).
pub(crate) fn rndis(t: &Tracer, dir: Dir, channel: u32, msg: &[u8]) {
    let mut fields = serde_json::Map::new();
    let name = match rndis::RndisMessage::parse(msg) {
        Ok(m) => {
            if m.msg_type() == rndis::header::PACKET && !t.wants_data() {
                return;
            }
            m.visit_fields(&mut |name, v| {
                fields.insert(name.into(), rndis_field(v));
            });
            m.name()
        }
        Err(_) => "MALFORMED",
    };
    t.record(dir, channel, "rndis", name, fields, msg);
}

fn rndis_field(v: rndis::FieldValue<'_>) -> serde_json::Value {
    use rndis::FieldValue as F;
    match v {
        F::U64(x) => x.into(),
        F::Hex(x) => format!("{x:#x}").into(),
        F::Str(s) => s.into(),
        F::Bytes(b) => vmbus::trace::hex(b).into(),
        #[allow(unreachable_patterns)]
        _ => serde_json::Value::Null,
    }
}
