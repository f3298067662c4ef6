//! JSON rendering of decoded RNDIS messages, for traces (feature `json`).

use serde_json::{Map, Value};

use crate::{FieldValue, RndisMessage};

/// One field as JSON: numbers as numbers, hex-ish values as "0x…" strings, bytes as hex.
pub fn field(v: FieldValue<'_>) -> Value {
    match v {
        FieldValue::U64(x) => x.into(),
        FieldValue::Hex(x) => format!("{x:#x}").into(),
        FieldValue::Str(s) => s.into(),
        FieldValue::Bytes(b) => b
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
            .into(),
    }
}

impl RndisMessage<'_> {
    /// The decoded fields as a JSON object.
    pub fn fields_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        self.visit_fields(&mut |name, v| {
            m.insert(name.into(), field(v));
        });
        m
    }
}

/// What a trace records of the RNDIS message at the start of `range`: its name and
/// fields, or "MALFORMED" with none; None for a PACKET unless `data` (per-packet data
/// messages are traced only on request).
pub fn trace_entry(range: &[u8], data: bool) -> Option<(&'static str, Map<String, Value>)> {
    match RndisMessage::parse(range) {
        Ok(m) if m.msg_type() == crate::header::PACKET && !data => None,
        Ok(m) => Some((m.name(), m.fields_json())),
        Err(_) => Some(("MALFORMED", Map::new())),
    }
}
