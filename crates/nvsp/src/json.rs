//! JSON rendering of decoded NVSP messages, for traces (feature `json`).

use serde_json::{Map, Value};

use crate::{FieldValue, NvspMessage};

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
        FieldValue::U32List(l) => l.iter().map(|x| Value::from(x.get())).collect(),
    }
}

impl NvspMessage<'_> {
    /// The decoded fields as a JSON object.
    pub fn fields_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        self.visit_fields(&mut |name, v| {
            m.insert(name.into(), field(v));
        });
        m
    }
}
