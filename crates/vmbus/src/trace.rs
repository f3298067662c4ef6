//! Message trace: every control message a side sends or receives, as JSON Lines.
//!
//! One object per line with `time` (RFC 3339, UTC, microseconds), `dir` (`tx`/`rx`),
//! `channel` (the relid, 0 for the VMBus control plane), `layer` (`vmbus`, `nvsp`,
//! `rndis`), `name` (as PROTOCOL.md names the message), `fields` (decoded) and `hex` (the
//! raw bytes as sent or received). It plays the part of the Linux driver's netvsc
//! tracepoints and lets anyone compare our bytes with another implementation.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// Direction of a traced message, from the tracing side's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Sent by this side.
    Tx,
    /// Received by this side.
    Rx,
}

impl Dir {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Dir::Tx => "tx",
            Dir::Rx => "rx",
        }
    }
}

/// A JSON Lines trace sink shared by all threads of a process.
pub struct Tracer {
    out: Mutex<BufWriter<File>>,
    data: bool,
}

impl Tracer {
    /// Creates (truncates) the trace file. With `data`, per-packet data messages
    /// (RNDIS PACKET and their NVSP/VMBus carriers) are traced too.
    pub fn create(path: &Path, data: bool) -> std::io::Result<Self> {
        Ok(Self {
            out: Mutex::new(BufWriter::new(File::create(path)?)),
            data,
        })
    }

    /// Whether per-packet data messages are traced.
    pub fn wants_data(&self) -> bool {
        self.data
    }

    /// Writes one record.
    pub fn record(
        &self,
        dir: Dir,
        channel: u32,
        layer: &str,
        name: &str,
        fields: Map<String, Value>,
        bytes: &[u8],
    ) {
        let mut obj = Map::new();
        obj.insert("time".into(), Value::String(now_rfc3339()));
        obj.insert("dir".into(), dir.as_str().into());
        obj.insert("channel".into(), channel.into());
        obj.insert("layer".into(), layer.into());
        obj.insert("name".into(), name.into());
        obj.insert("fields".into(), Value::Object(fields));
        obj.insert("hex".into(), Value::String(hex(bytes)));
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // Tracing must never take the data path down: write errors are dropped.
        let _ = serde_json::to_writer(&mut *out, &Value::Object(obj));
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
}

/// Lower-case hex of `bytes`, no separators.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The current time as RFC 3339 UTC with microseconds.
pub fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, dd) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_598), (2026, 5, 25));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn records_are_json_lines() {
        let dir = std::env::temp_dir().join(format!("hvnet-trace-{}", std::process::id()));
        let t = Tracer::create(&dir, false).unwrap();
        let mut f = Map::new();
        f.insert("version".into(), 0x50003.into());
        t.record(Dir::Tx, 0, "vmbus", "INITIATE_CONTACT", f, &[0x0e, 0, 0xab]);
        t.record(Dir::Rx, 1, "nvsp", "INIT_COMPLETE", Map::new(), &[]);
        let text = std::fs::read_to_string(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["hex"], "0e00ab");
        assert_eq!(lines[0]["dir"], "tx");
        assert_eq!(lines[0]["fields"]["version"], 0x50003);
        assert_eq!(lines[1]["layer"], "nvsp");
        assert!(lines[1]["time"].as_str().unwrap().ends_with('Z'));
    }
}
