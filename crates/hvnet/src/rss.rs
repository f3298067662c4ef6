//! `hvnet rss hash`: the Toeplitz hash of a flow and the receive queue the host delivers it
//! on (PROTOCOL.md §9.1, §9.2).
//!
//! The flow is built into a minimal frame (TCP when ports are given, ICMP / ICMPv6 when
//! not) and hashed by netpkt's [`Toeplitz::rss_hash_typed`], the host's own rule for which
//! fields of a frame the enabled hash types cover; the queue is `table[hash & 127]`. Key,
//! table and hash types come from the command line (defaults: Microsoft's key, `i mod 8`,
//! Linux's 0x1701) or, with `--vm`, from the running guest's NIC (`{"cmd":"rss"}` on its
//! control socket).
//!
//! Parsing and formatting are pure and tested with the published verification vectors;
//! `run` only adds the socket and stdout.

use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use netpkt::frame::parse_frame;
use netpkt::toeplitz::{DEFAULT_KEY, FlowHashType, KEY_LEN, Toeplitz, hash_info};
use serde_json::{Value, json};

use crate::{RunDir, ctl};

/// Entries in the host's indirection table; a shorter table is repeated to this length.
pub const TABLE_ENTRIES: usize = 128;

/// Most queues a netvsc NIC has (Linux: `min(64, CPUs, host queues)`, PROTOCOL.md §9.3):
/// the bound on `equal:N`, `--queues` and the entries of a listed table.
pub const MAX_QUEUES: u32 = 64;

/// Queues of the default table (`i mod 8`).
const DEFAULT_QUEUES: u32 = 8;

/// Arguments of `hvnet rss`.
#[derive(Args, Debug)]
pub struct RssArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: RssCommand,
}

/// Subcommands of `hvnet rss`.
#[derive(Subcommand, Debug)]
pub enum RssCommand {
    /// Print a flow's Toeplitz hash and the receive queue the host delivers it on.
    Hash(HashArgs),
}

/// Arguments of `hvnet rss hash`.
#[derive(Args, Debug)]
pub struct HashArgs {
    /// The packet's source address (IPv4 or IPv6).
    #[arg(long, value_name = "IP")]
    pub src: IpAddr,
    /// The packet's destination address (same family as --src).
    #[arg(long, value_name = "IP")]
    pub dst: IpAddr,
    /// The packet's TCP source port (with --dport: the 4-tuple hash).
    #[arg(long, value_name = "N")]
    pub sport: Option<u16>,
    /// The packet's TCP destination port (with --sport).
    #[arg(long, value_name = "N")]
    pub dport: Option<u16>,
    /// The 40-byte RSS key: 80 hex digits, or colon-separated bytes as `ethtool -x` prints
    /// them (default: Microsoft's verification key, Linux's default).
    #[arg(long, value_name = "HEX", value_parser = parse_key)]
    pub key: Option<[u8; KEY_LEN]>,
    /// The indirection table: `equal:N` (entry i = i mod N) or a list of queues such as
    /// `0,1,2,3`, repeated to 128 entries (default: equal:8).
    #[arg(long, value_name = "SPEC", value_parser = parse_table, conflicts_with = "queues")]
    pub table: Option<Table>,
    /// Shorthand for `--table equal:N`.
    #[arg(long, value_name = "N", value_parser = parse_queue_count)]
    pub queues: Option<u32>,
    /// NDIS hash_info: hash function | enabled hash types, hex (default: 0x1701, Linux's:
    /// Toeplitz over IPV4, TCP_IPV4, IPV6, TCP_IPV6).
    #[arg(long, value_name = "HEX", value_parser = parse_hash_info)]
    pub hash_info: Option<u32>,
    /// Use this running VM's NIC's key, table and hash types instead.
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with_all = ["key", "table", "queues", "hash_info"]
    )]
    pub vm: Option<String>,
    #[command(flatten)]
    pub dir: RunDir,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// A 128-entry indirection table: entry i is the queue of the hashes whose low 7 bits are i.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table(pub Box<[u32; TABLE_ENTRIES]>);

impl Table {
    /// Entry i = i mod `queues` (`queues` ≥ 1).
    pub fn equal(queues: u32) -> Table {
        Table(Box::new(core::array::from_fn(|i| i as u32 % queues)))
    }

    /// A table of 1 to 128 entries, repeated to 128 as the host does (entry i =
    /// `entries[i mod len]`).
    pub fn repeated(entries: &[u32]) -> Result<Table, String> {
        if entries.is_empty() {
            return Err("the table is empty: give at least one queue number".into());
        }
        if entries.len() > TABLE_ENTRIES {
            return Err(format!(
                "the table has {} entries; the host's holds at most {TABLE_ENTRIES}",
                entries.len()
            ));
        }
        Ok(Table(Box::new(core::array::from_fn(|i| {
            entries[i % entries.len()]
        }))))
    }
}

/// What the host hashes with: key, table and `hash_info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RssConfig {
    /// The Toeplitz key.
    pub key: [u8; KEY_LEN],
    /// The indirection table.
    pub table: Table,
    /// Hash function | enabled hash types (PROTOCOL.md §7.5).
    pub hash_info: u32,
}

impl Default for RssConfig {
    /// Microsoft's key, `i mod 8`, Linux's 0x1701.
    fn default() -> Self {
        RssConfig {
            key: DEFAULT_KEY,
            table: Table::equal(DEFAULT_QUEUES),
            hash_info: hash_info::LINUX_DEFAULT,
        }
    }
}

/// A flow as the host sees one of its packets: addresses of one family, and TCP ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// (source, destination) TCP ports; `None` for a packet without ports (hashed as ICMP).
    pub ports: Option<(u16, u16)>,
}

impl Flow {
    /// Checks the families match and the ports come both or neither.
    pub fn new(src: IpAddr, dst: IpAddr, sport: Option<u16>, dport: Option<u16>) -> Result<Flow> {
        if src.is_ipv4() != dst.is_ipv4() {
            bail!(
                "--src {src} is {} but --dst {dst} is {}: give two IPv4 or two IPv6 addresses",
                family(src),
                family(dst)
            );
        }
        let ports = match (sport, dport) {
            (Some(s), Some(d)) => Some((s, d)),
            (None, None) => None,
            (Some(_), None) => bail!(
                "--sport needs --dport: the 4-tuple hash covers both ports (give both, or \
                 neither for the 2-tuple hash)"
            ),
            (None, Some(_)) => bail!(
                "--dport needs --sport: the 4-tuple hash covers both ports (give both, or \
                 neither for the 2-tuple hash)"
            ),
        };
        Ok(Flow { src, dst, ports })
    }

    /// The smallest Ethernet frame of this flow the host's parser accepts: IPv4 or IPv6,
    /// then a 20-byte TCP header (with ports) or an 8-byte ICMP / ICMPv6 echo request.
    fn frame(&self) -> Vec<u8> {
        let v4 = self.src.is_ipv4();
        let (proto, l4) = match self.ports {
            Some((sp, dp)) => {
                let mut tcp = vec![0u8; 20];
                tcp[0..2].copy_from_slice(&sp.to_be_bytes());
                tcp[2..4].copy_from_slice(&dp.to_be_bytes());
                tcp[12] = 5 << 4; // data offset: 5 words
                tcp[13] = 0x10; // ACK
                (6, tcp)
            }
            None if v4 => (1, vec![8, 0, 0, 0, 0, 0, 0, 0]),
            None => (58, vec![128, 0, 0, 0, 0, 0, 0, 0]),
        };
        let l4_len = l4.len() as u16;
        let mut f = vec![0u8; 12]; // destination and source MAC
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                f.extend_from_slice(&[0x45, 0]);
                f.extend_from_slice(&(20 + l4_len).to_be_bytes());
                // id, flags/fragment offset 0 (not a fragment), TTL, protocol, checksum.
                f.extend_from_slice(&[0, 0, 0, 0, 64, proto, 0, 0]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&0x86DDu16.to_be_bytes());
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&l4_len.to_be_bytes());
                f.extend_from_slice(&[proto, 64]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
            }
            _ => unreachable!("Flow::new checks the families match"),
        }
        f.extend_from_slice(&l4);
        f
    }
}

fn family(a: IpAddr) -> &'static str {
    if a.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// Where a flow lands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The flow.
    pub flow: Flow,
    /// The `hash_info` it was hashed under.
    pub hash_info: u32,
    /// The hash and the type it was computed as; `None` when RSS is off or no enabled type
    /// covers the flow (the host then delivers it on queue 0, unhashed).
    pub hash: Option<(u32, FlowHashType)>,
    /// The receive queue.
    pub queue: u32,
}

impl Placement {
    /// The table index, `hash & 127`.
    pub fn index(&self) -> Option<usize> {
        self.hash.map(|(h, _)| h as usize & (TABLE_ENTRIES - 1))
    }
}

/// Hashes `flow` as the host does under `cfg` and picks its queue (PROTOCOL.md §9.2).
pub fn place(cfg: &RssConfig, flow: Flow) -> Result<Placement> {
    let frame = flow.frame();
    let info = parse_frame(&frame)
        .map_err(|e| anyhow!("internal error: the frame built for {flow:?} does not parse: {e}"))?;
    let hasher = Box::new(Toeplitz::new(&cfg.key));
    let hash = hasher.rss_hash_typed(&info, cfg.hash_info);
    let queue = match hash {
        Some((h, _)) => cfg.table.0[h as usize & (TABLE_ENTRIES - 1)],
        None => 0,
    };
    Ok(Placement {
        flow,
        hash_info: cfg.hash_info,
        hash,
        queue,
    })
}

/// The name of a hash type, as NDIS spells it.
pub fn type_name(t: FlowHashType) -> &'static str {
    match t {
        FlowHashType::Ipv4 => "IPV4",
        FlowHashType::TcpIpv4 => "TCP_IPV4",
        FlowHashType::UdpIpv4 => "UDP_IPV4",
        FlowHashType::Ipv6 => "IPV6",
        FlowHashType::Ipv6Ex => "IPV6_EX",
        FlowHashType::TcpIpv6 => "TCP_IPV6",
        FlowHashType::TcpIpv6Ex => "TCP_IPV6_EX",
        FlowHashType::UdpIpv6 => "UDP_IPV6",
        FlowHashType::UdpIpv6Ex => "UDP_IPV6_EX",
    }
}

fn endpoint(a: IpAddr, port: Option<u16>) -> String {
    match (a, port) {
        (a, None) => a.to_string(),
        (IpAddr::V4(a), Some(p)) => format!("{a}:{p}"),
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
    }
}

/// Why a flow was not hashed.
fn unhashed_reason(hash_info: u32) -> String {
    if hash_info & hash_info::FUNCTION_MASK == 0 {
        "RSS is off: hash function 0".into()
    } else {
        format!("hash_info {hash_info:#06x} enables no hash type for this flow")
    }
}

/// The text report: flow, hash, type, table index, queue.
pub fn render_text(p: &Placement) -> String {
    let f = &p.flow;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "flow:  {} -> {}",
        endpoint(f.src, f.ports.map(|p| p.0)),
        endpoint(f.dst, f.ports.map(|p| p.1))
    );
    match p.hash {
        Some((h, t)) => {
            let _ = writeln!(s, "hash:  {h:#010x}");
            let _ = writeln!(s, "type:  {}", type_name(t));
            let _ = writeln!(s, "index: {} (hash & 127)", h & 127);
            let _ = writeln!(s, "queue: {}", p.queue);
        }
        None => {
            let _ = writeln!(s, "hash:  none ({})", unhashed_reason(p.hash_info));
            let _ = writeln!(s, "type:  none");
            let _ = writeln!(s, "index: none");
            let _ = writeln!(s, "queue: {} (unhashed packets go to queue 0)", p.queue);
        }
    }
    s
}

/// The JSON report: one object (`hash`, `hash_type` and `index` are null when unhashed).
pub fn render_json(p: &Placement) -> Value {
    let f = &p.flow;
    json!({
        "src": f.src.to_string(),
        "dst": f.dst.to_string(),
        "sport": f.ports.map(|p| p.0),
        "dport": f.ports.map(|p| p.1),
        "hash_info": format!("{:#06x}", p.hash_info),
        "hash": p.hash.map(|(h, _)| format!("{h:#010x}")),
        "hash_type": p.hash.map(|(_, t)| type_name(t)),
        "index": p.index(),
        "queue": p.queue,
    })
}

/// Parses an RSS key: 80 hex digits (optionally `0x`-prefixed) or 40 colon-separated
/// two-digit bytes (`6d:5a:56:...`, as `ethtool -x` prints it).
pub fn parse_key(s: &str) -> Result<[u8; KEY_LEN], String> {
    let s = s.trim();
    let bytes: Vec<u8> = if s.contains(':') {
        s.split(':')
            .enumerate()
            .map(|(i, g)| {
                if g.len() == 2 && g.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(u8::from_str_radix(g, 16).expect("two hex digits"))
                } else {
                    Err(format!(
                        "key byte {} is {g:?}, not two hex digits (colon form: 6d:5a:56:...)",
                        i + 1
                    ))
                }
            })
            .collect::<Result<_, _>>()?
    } else {
        let h = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        if let Some((i, c)) = h.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(format!(
                "key has {c:?} at position {}, not a hex digit (give 80 hex digits, or \
                 colon-separated bytes)",
                i + 1
            ));
        }
        if !h.len().is_multiple_of(2) {
            return Err(format!(
                "key has an odd number of hex digits ({}); give 80 (two per byte)",
                h.len()
            ));
        }
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex digits"))
            .collect()
    };
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
        let n = bytes.len();
        format!(
            "key is {n} byte{}; an RSS key is {KEY_LEN} bytes (80 hex digits, or 40 \
             colon-separated bytes)",
            if n == 1 { "" } else { "s" }
        )
    })
}

/// Parses a queue count for `equal:N` or `--queues N`: 1 to [`MAX_QUEUES`].
pub fn parse_queue_count(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_QUEUES).contains(&n) => Ok(n),
        _ => Err(format!(
            "queue count {s:?} is not a number from 1 to {MAX_QUEUES} (a netvsc NIC has at \
             most {MAX_QUEUES} queues)"
        )),
    }
}

/// Parses a table spec: `equal:N`, or a comma-separated list of 1 to 128 queue numbers
/// (each below [`MAX_QUEUES`]) repeated to 128 entries.
pub fn parse_table(spec: &str) -> Result<Table, String> {
    let spec = spec.trim();
    if let Some(n) = spec.strip_prefix("equal:") {
        return Ok(Table::equal(parse_queue_count(n)?));
    }
    if spec.is_empty() {
        return Err("the table is empty: give equal:N or a list such as 0,1,2,3".into());
    }
    let entries = spec
        .split(',')
        .enumerate()
        .map(|(i, e)| match e.trim().parse::<u32>() {
            Ok(q) if q < MAX_QUEUES => Ok(q),
            _ => Err(format!(
                "table entry {} is {e:?}, not a queue number from 0 to {} (give equal:N or \
                 a list such as 0,1,2,3)",
                i + 1,
                MAX_QUEUES - 1
            )),
        })
        .collect::<Result<Vec<u32>, String>>()?;
    Table::repeated(&entries)
}

/// Parses `hash_info` as hex (`0x1701` or `1701`); the function must be Toeplitz (1) or 0
/// (RSS off), the only ones the host accepts.
pub fn parse_hash_info(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let h = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let v = u32::from_str_radix(h, 16)
        .map_err(|_| format!("hash info {s:?} is not a hex number such as 0x1701"))?;
    match v & hash_info::FUNCTION_MASK {
        0 | hash_info::TOEPLITZ => Ok(v),
        f => Err(format!(
            "hash info {v:#06x} names hash function {f}; the host accepts only Toeplitz (1) \
             or 0 (RSS off), e.g. 0x1701"
        )),
    }
}

/// The configuration in a guest's reply to `{"cmd":"rss"}`:
/// `{"key": "<hex>", "table": [queue, ...], "hash_info": N}`.
pub fn config_from_reply(vm: &str, reply: &Value) -> Result<RssConfig> {
    let bad = |what: &str| anyhow!("VM {vm}'s reply to {{\"cmd\":\"rss\"}} has {what}: {reply}");
    let key = reply
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no \"key\" string"))?;
    let key = parse_key(key).map_err(|e| bad(&format!("a bad key ({e})")))?;
    let entries = reply
        .get("table")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no \"table\" array"))?
        .iter()
        .map(|v| v.as_u64().and_then(|q| u32::try_from(q).ok()))
        .collect::<Option<Vec<u32>>>()
        .ok_or_else(|| bad("a table entry that is not a queue number"))?;
    let table = Table::repeated(&entries).map_err(|e| bad(&format!("a bad table ({e})")))?;
    let hash_info = reply
        .get("hash_info")
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| bad("no \"hash_info\" number"))?;
    Ok(RssConfig {
        key,
        table,
        hash_info,
    })
}

/// Asks the guest of `vm` for its NIC's RSS configuration. An error reply (today's guests
/// answer `unknown command`) means the NIC has no RSS configuration: a single queue.
pub fn fetch_config(dir: &RunDir, vm: &str) -> Result<RssConfig> {
    let path = ctl::guest_socket(&dir.run_dir, &dir.lab, vm);
    let reply = match ctl::request(&path, &json!({"cmd": "rss"})) {
        Ok(r) => r,
        // Socket and parse failures carry their io / serde_json error; what is left is the
        // guest's own {"error": ...} reply.
        Err(e)
            if e.downcast_ref::<std::io::Error>().is_none()
                && e.downcast_ref::<serde_json::Error>().is_none() =>
        {
            bail!(
                "VM {vm}'s NIC has no RSS configuration yet (its guest answered: {e}): it has \
                 a single queue, so every flow lands on queue 0; drop --vm to compute with \
                 --key/--table/--hash-info instead"
            )
        }
        Err(e) => return Err(e.context(format!("ask VM {vm} for its RSS configuration"))),
    };
    config_from_reply(vm, &reply)
}

/// The configuration `args` ask for: the VM's, or the command line's over the defaults.
fn config(args: &HashArgs) -> Result<RssConfig> {
    if let Some(vm) = &args.vm {
        return fetch_config(&args.dir, vm);
    }
    let d = RssConfig::default();
    Ok(RssConfig {
        key: args.key.unwrap_or(d.key),
        table: match (&args.table, args.queues) {
            (Some(t), _) => t.clone(),
            (None, Some(n)) => Table::equal(n),
            (None, None) => d.table,
        },
        hash_info: args.hash_info.unwrap_or(d.hash_info),
    })
}

/// Computes `hvnet rss hash` and renders its output.
pub fn hash_output(args: &HashArgs) -> Result<String> {
    let flow = Flow::new(args.src, args.dst, args.sport, args.dport)?;
    let p = place(&config(args)?, flow)?;
    Ok(if args.json {
        let mut s = serde_json::to_string_pretty(&render_json(&p))?;
        s.push('\n');
        s
    } else {
        render_text(&p)
    })
}

/// Runs `hvnet rss`; returns the exit status.
pub fn run(args: RssArgs) -> Result<i32> {
    match args.command {
        RssCommand::Hash(a) => {
            print!("{}", hash_output(&a).context("rss hash")?);
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::sync::Arc;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        rss: RssArgs,
    }

    fn parse(line: &str) -> Result<HashArgs, clap::Error> {
        let argv = std::iter::once("rss").chain(line.split_whitespace());
        Cli::try_parse_from(argv).map(|c| match c.rss.command {
            RssCommand::Hash(a) => a,
        })
    }

    /// `hvnet rss LINE` as printed.
    fn out(line: &str) -> String {
        hash_output(&parse(line).unwrap()).unwrap()
    }

    /// `hvnet rss LINE --json`, parsed back.
    fn out_json(line: &str) -> Value {
        serde_json::from_str(&out(&format!("{line} --json"))).unwrap()
    }

    /// The error of `hvnet rss LINE`, from clap or from the computation.
    fn err(line: &str) -> String {
        match parse(line) {
            Err(e) => e.to_string(),
            Ok(a) => format!("{:#}", hash_output(&a).unwrap_err()),
        }
    }

    /// PROTOCOL.md §9.1: (src, sport, dst, dport, L3 hash, L4 hash).
    const VECTORS: [(&str, u16, &str, u16, u32, u32); 3] = [
        (
            "66.9.149.187",
            2794,
            "161.142.100.80",
            1766,
            0x323e8fc2,
            0x51ccc178,
        ),
        (
            "199.92.111.2",
            14230,
            "65.69.140.83",
            4739,
            0xd718262a,
            0xc626b0ea,
        ),
        (
            "3ffe:2501:200:1fff::7",
            2794,
            "3ffe:2501:200:3::1",
            1766,
            0x2cc18cd5,
            0x40207d3d,
        ),
    ];

    #[test]
    fn rss_published_vectors_json() {
        for (s, sp, d, dp, l3, l4) in VECTORS {
            let v6 = s.contains(':');
            let j = out_json(&format!("hash --src {s} --dst {d}"));
            assert_eq!(j["hash"], format!("{l3:#010x}"), "{s} -> {d}");
            assert_eq!(j["hash_type"], if v6 { "IPV6" } else { "IPV4" });
            assert_eq!(j["index"], l3 & 127);
            assert_eq!(j["queue"], (l3 & 127) % 8);
            assert_eq!(j["sport"], Value::Null);
            let j = out_json(&format!(
                "hash --src {s} --dst {d} --sport {sp} --dport {dp}"
            ));
            assert_eq!(j["hash"], format!("{l4:#010x}"), "{s}:{sp} -> {d}:{dp}");
            assert_eq!(j["hash_type"], if v6 { "TCP_IPV6" } else { "TCP_IPV4" });
            assert_eq!(j["index"], l4 & 127);
            assert_eq!(j["queue"], (l4 & 127) % 8);
            assert_eq!(j["sport"], sp);
            assert_eq!(j["dport"], dp);
            assert_eq!(j["hash_info"], "0x1701");
        }
    }

    #[test]
    fn rss_published_vectors_text() {
        assert_eq!(
            out("hash --src 66.9.149.187 --dst 161.142.100.80 --sport 2794 --dport 1766"),
            "flow:  66.9.149.187:2794 -> 161.142.100.80:1766\n\
             hash:  0x51ccc178\n\
             type:  TCP_IPV4\n\
             index: 120 (hash & 127)\n\
             queue: 0\n"
        );
        assert_eq!(
            out("hash --src 66.9.149.187 --dst 161.142.100.80"),
            "flow:  66.9.149.187 -> 161.142.100.80\n\
             hash:  0x323e8fc2\n\
             type:  IPV4\n\
             index: 66 (hash & 127)\n\
             queue: 2\n"
        );
        assert_eq!(
            out(
                "hash --src 3ffe:2501:200:1fff::7 --dst 3ffe:2501:200:3::1 --sport 2794 \
                 --dport 1766 --queues 4"
            ),
            "flow:  [3ffe:2501:200:1fff::7]:2794 -> [3ffe:2501:200:3::1]:1766\n\
             hash:  0x40207d3d\n\
             type:  TCP_IPV6\n\
             index: 61 (hash & 127)\n\
             queue: 1\n"
        );
    }

    #[test]
    fn rss_key_and_table_and_hash_info_options() {
        let flow = "hash --src 66.9.149.187 --dst 161.142.100.80 --sport 2794 --dport 1766";
        let colon = DEFAULT_KEY.map(|b| format!("{b:02x}")).join(":");
        let plain = DEFAULT_KEY.map(|b| format!("{b:02X}")).concat();
        for key in [colon, plain.clone(), format!("0x{plain}")] {
            assert_eq!(
                out_json(&format!("{flow} --key {key}"))["hash"],
                "0x51ccc178"
            );
        }
        // Another key changes the hash.
        let other = "ff".repeat(KEY_LEN);
        assert_ne!(
            out_json(&format!("{flow} --key {other}"))["hash"],
            "0x51ccc178"
        );
        // Index 120: equal:7 → 1; list 0,1,2 repeated → 120 mod 3 = 0; 5,6 → 5.
        assert_eq!(out_json(&format!("{flow} --table equal:7"))["queue"], 1);
        assert_eq!(out_json(&format!("{flow} --queues 7"))["queue"], 1);
        assert_eq!(out_json(&format!("{flow} --table 0,1,2"))["queue"], 0);
        assert_eq!(out_json(&format!("{flow} --table 5,6"))["queue"], 5);
        // TCP type off → 2-tuple IPV4 hash (0x323e8fc2, index 66).
        let j = out_json(&format!("{flow} --hash-info 0x0101"));
        assert_eq!(j["hash"], "0x323e8fc2");
        assert_eq!(j["hash_type"], "IPV4");
        // Only IPv6 types → unhashed, queue 0.
        let j = out_json(&format!("{flow} --hash-info 0x1401 --table 3"));
        assert_eq!(j["hash"], Value::Null);
        assert_eq!(j["hash_type"], Value::Null);
        assert_eq!(j["index"], Value::Null);
        assert_eq!(j["queue"], 0);
        assert_eq!(
            out(&format!("{flow} --hash-info 0 --table 3")),
            "flow:  66.9.149.187:2794 -> 161.142.100.80:1766\n\
             hash:  none (RSS is off: hash function 0)\n\
             type:  none\n\
             index: none\n\
             queue: 0 (unhashed packets go to queue 0)\n"
        );
        // _EX types only: IPv6 hashed with them.
        let j = out_json(
            "hash --src 3ffe:2501:200:1fff::7 --dst 3ffe:2501:200:3::1 --sport 2794 \
             --dport 1766 --hash-info 0x2801",
        );
        assert_eq!(j["hash"], "0x40207d3d");
        assert_eq!(j["hash_type"], "TCP_IPV6_EX");
    }

    #[test]
    fn rss_table_parsing() {
        assert_eq!(parse_table("equal:8").unwrap(), Table::equal(8));
        assert_eq!(*parse_table("equal:1").unwrap().0, [0; 128]);
        let t = parse_table(" 0, 1,2 ,3").unwrap();
        assert!(t.0.iter().enumerate().all(|(i, &q)| q == i as u32 % 4));
        let t = parse_table("3,1,2").unwrap();
        assert_eq!(&t.0[..7], &[3, 1, 2, 3, 1, 2, 3]);
        assert_eq!(t.0[127], 1); // 127 mod 3 = 1: the second entry
        let full: Vec<String> = (0..128).map(|i| (i % 64).to_string()).collect();
        assert_eq!(parse_table(&full.join(",")).unwrap(), Table::equal(64));
        for (bad, says) in [
            ("", "empty"),
            ("equal:0", "from 1 to 64"),
            ("equal:65", "from 1 to 64"),
            ("equal:x", "\"x\""),
            ("0,1,,2", "entry 3"),
            ("0,64", "entry 2 is \"64\""),
            ("a", "entry 1"),
            ("-1", "entry 1"),
        ] {
            let e = parse_table(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        let long: Vec<&str> = vec!["0"; 129];
        assert!(
            parse_table(&long.join(","))
                .unwrap_err()
                .contains("129 entries")
        );
        // Through the CLI: the argument is named.
        let e = err("hash --src 1.2.3.4 --dst 5.6.7.8 --table 0,x");
        assert!(e.contains("--table") && e.contains("entry 2"), "{e}");
        let e = err("hash --src 1.2.3.4 --dst 5.6.7.8 --queues 0");
        assert!(e.contains("--queues") && e.contains("from 1 to 64"), "{e}");
        let e = err("hash --src 1.2.3.4 --dst 5.6.7.8 --queues 2 --table 0,1");
        assert!(e.contains("cannot be used with"), "{e}");
    }

    #[test]
    fn rss_key_parsing() {
        let plain =
            "6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa";
        assert_eq!(parse_key(plain).unwrap(), DEFAULT_KEY);
        let colon = "6d:5a:56:da:25:5b:0e:c2:41:67:25:3d:43:a3:8f:b0:d0:ca:2b:cb:ae:7b:30:b4:\
                     77:cb:2d:a3:80:30:f2:0c:6a:42:b7:3b:be:ac:01:fa";
        assert_eq!(parse_key(colon).unwrap(), DEFAULT_KEY);
        assert_eq!(
            parse_key(&plain.to_uppercase()).unwrap(),
            DEFAULT_KEY,
            "upper case"
        );
        let e = parse_key(&plain[..78]).unwrap_err();
        assert!(
            e.contains("key is 39 bytes") && e.contains("40 bytes"),
            "{e}"
        );
        let e = parse_key(&format!("{plain}00")).unwrap_err();
        assert!(e.contains("key is 41 bytes"), "{e}");
        let e = parse_key(&colon[..colon.len() - 3]).unwrap_err();
        assert!(e.contains("key is 39 bytes"), "{e}");
        let e = parse_key(&plain[..79]).unwrap_err();
        assert!(e.contains("odd number of hex digits (79)"), "{e}");
        let e = parse_key(&plain.replace('6', "g")).unwrap_err();
        assert!(e.contains("'g' at position 1"), "{e}");
        let e = parse_key(&colon.replacen(":5a:", ":5:", 1)).unwrap_err();
        assert!(e.contains("key byte 2 is \"5\""), "{e}");
        let e = parse_key("").unwrap_err();
        assert!(e.contains("key is 0 bytes"), "{e}");
        let e = err(&format!(
            "hash --src 1.2.3.4 --dst 5.6.7.8 --key {}",
            &plain[..70]
        ));
        assert!(e.contains("--key") && e.contains("key is 35 bytes"), "{e}");
    }

    #[test]
    fn rss_hash_info_parsing() {
        assert_eq!(parse_hash_info("0x1701").unwrap(), 0x1701);
        assert_eq!(parse_hash_info("1701").unwrap(), 0x1701);
        assert_eq!(parse_hash_info("0").unwrap(), 0);
        assert!(
            parse_hash_info("0x1702")
                .unwrap_err()
                .contains("function 2")
        );
        assert!(
            parse_hash_info("zz")
                .unwrap_err()
                .contains("not a hex number")
        );
    }

    #[test]
    fn rss_flow_errors() {
        let e = err("hash --src 66.9.149.187 --dst 3ffe:2501:200:3::1");
        assert_eq!(
            e,
            "--src 66.9.149.187 is IPv4 but --dst 3ffe:2501:200:3::1 is IPv6: give two IPv4 \
             or two IPv6 addresses"
        );
        let e = err("hash --src ::1 --dst 10.0.0.1 --sport 1 --dport 2");
        assert!(e.contains("is IPv6 but --dst 10.0.0.1 is IPv4"), "{e}");
        let e = err("hash --src 66.9.149.187 --dst 161.142.100.80 --sport 2794");
        assert!(e.starts_with("--sport needs --dport"), "{e}");
        let e = err("hash --src 66.9.149.187 --dst 161.142.100.80 --dport 1766");
        assert!(e.starts_with("--dport needs --sport"), "{e}");
        let e = err("hash --src 66.9.149.300 --dst 161.142.100.80");
        assert!(e.contains("--src"), "{e}");
        let e = err("hash --src 1.2.3.4 --dst 5.6.7.8 --sport 70000 --dport 1");
        assert!(e.contains("--sport"), "{e}");
        let e = err(&format!(
            "hash --src 1.2.3.4 --dst 5.6.7.8 --vm vm1 --key {}",
            "00".repeat(KEY_LEN)
        ));
        assert!(e.contains("cannot be used with"), "{e}");
    }

    /// A guest control socket in a fresh directory answering `rss` with `reply`.
    fn fake_guest(name: &str, reply: Value) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("hvnet-rss-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = ctl::guest_socket(&dir, "lab", "vm1");
        ctl::serve(
            &path,
            Arc::new(move |req: &Value| {
                assert_eq!(req, &json!({"cmd": "rss"}));
                reply.clone()
            }),
        )
        .unwrap();
        dir
    }

    #[test]
    fn rss_vm_live_config() {
        let key = "ff".repeat(KEY_LEN);
        let dir = fake_guest(
            "ok",
            json!({"key": key, "table": [3, 2, 1], "hash_info": 0x0101}),
        );
        let flow = "hash --src 66.9.149.187 --dst 161.142.100.80 --sport 2794 --dport 1766";
        let j = out_json(&format!("{flow} --vm vm1 --run-dir {}", dir.display()));
        // TCP type off in the VM's hash_info → IPV4 2-tuple under the all-ones key.
        let cfg = RssConfig {
            key: [0xff; KEY_LEN],
            table: Table::repeated(&[3, 2, 1]).unwrap(),
            hash_info: 0x0101,
        };
        let flow_v = Flow::new(
            "66.9.149.187".parse().unwrap(),
            "161.142.100.80".parse().unwrap(),
            Some(2794),
            Some(1766),
        )
        .unwrap();
        let expect = place(&cfg, flow_v).unwrap();
        assert_eq!(j, render_json(&expect));
        assert_eq!(j["hash_type"], "IPV4");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rss_vm_without_rss() {
        // What today's guest answers.
        let dir = fake_guest("none", json!({"error": "unknown command Some(\"rss\")"}));
        let e = err(&format!(
            "hash --src 1.2.3.4 --dst 5.6.7.8 --vm vm1 --run-dir {}",
            dir.display()
        ));
        assert!(
            e.contains("VM vm1's NIC has no RSS configuration yet")
                && e.contains("unknown command")
                && e.contains("single queue"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
        // No guest at all: the socket error, not "no RSS".
        let e = err(&format!(
            "hash --src 1.2.3.4 --dst 5.6.7.8 --vm vm1 --run-dir {}",
            dir.display()
        ));
        assert!(e.contains("connect to") && !e.contains("no RSS"), "{e}");
    }

    #[test]
    fn rss_reply_errors() {
        let good = json!({"key": "00".repeat(KEY_LEN), "table": [0, 1], "hash_info": 0x1701});
        let cfg = config_from_reply("vm1", &good).unwrap();
        assert_eq!(cfg.table, Table::equal(2));
        for (field, value, says) in [
            ("key", json!("00"), "a bad key (key is 1 byte;"),
            ("key", Value::Null, "no \"key\" string"),
            ("table", json!([]), "a bad table (the table is empty"),
            ("table", json!([0, -1]), "not a queue number"),
            ("hash_info", json!("0x1701"), "no \"hash_info\" number"),
        ] {
            let mut r = good.clone();
            r[field] = value;
            let e = config_from_reply("vm1", &r).unwrap_err().to_string();
            assert!(e.contains(says), "{field}: {e}");
        }
    }
}
