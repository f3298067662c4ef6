//! `hvnet ethtool`: ethtool for the synthetic NIC of a running `hvnet guest`.
//!
//! It takes ethtool's own arguments (`-k eth0`, `-K eth0 lro off`, `-i eth0`,
//! `-S eth0`), asks the guest over its control socket and prints what the real `ethtool`
//! prints for an `hv_netvsc` NIC in the same state: the same lines, the same messages on
//! standard error and the same exit status. The reference is ethtool 6.1 talking netlink
//! to a Linux 6.18 kernel: the list of netdev features `-k` shows is the kernel's, so a
//! different kernel shows a few names more or fewer (6.18 has `tx-tcp-accecn-segmentation`
//! and no longer has `tx-lockless`, `netns-local` and `fcoe-mtu`).
//!
//! What the guest answers (one JSON object per request, see `guest_cmd.rs`):
//! `info` (driver, version, bus, protocol versions, ifname), `features` (ifname and, per
//! feature, `on` and `fixed`), `set_features` (`{"set": {feature: bool}}`) and `stats`
//! (counter name → value, in the order to print).
//!
//! How hv_netvsc's features map onto the kernel's (Linux `rndis_netdev_set_hwcaps()` and
//! `netvsc_probe()`, then `register_netdevice()`): RX checksum, scatter-gather and RX hash
//! are always changeable; TX checksum and TSO per address family as the host offers them
//! (`fixed` otherwise); LRO if the host does RSC; VLAN tag insertion/stripping and
//! `highdma` are on and fixed; GSO and GRO are the kernel's software features, on and
//! changeable; the kernel also lets the user toggle `tx-tcp-mangleid-segmentation` (when
//! TSO is possible), `tx-nocache-copy`, `rx-gro-list` and `rx-udp-gro-forwarding` on any
//! device. Everything else is `off [fixed]`.
//!
//! The formatters are pure (guest JSON in, text out) and tested byte for byte; `run`
//! only adds the socket.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Map, Value, json};

use crate::{RunDir, ctl};

/// Arguments of `hvnet ethtool`: where the guest is, then ethtool's own arguments.
#[derive(Args, Clone, Debug)]
#[command(disable_help_flag = true)]
pub struct EthtoolArgs {
    #[command(flatten)]
    pub dir: RunDir,
    /// The VM whose NIC to use (default: the only guest running in RUN_DIR/LAB/).
    #[arg(long, value_name = "NAME")]
    pub vm: Option<String>,
    /// ethtool's arguments, e.g. `-k eth0`, `-K eth0 lro off`, `-i eth0`, `-S eth0`
    /// (`hvnet ethtool -h` lists what is supported).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ETHTOOL ARGS"
    )]
    pub args: Vec<String>,
}

/// Runs one ethtool command against the guest; returns ethtool's exit status.
pub fn run(args: EthtoolArgs) -> Result<i32> {
    let out = match parse(&args.args) {
        Err(out) => out,
        Ok(Command::Help) => Output::ok(help()),
        Ok(Command::Version) => Output::ok(format!(
            "hvnet ethtool {} (output as ethtool version {ETHTOOL_VERSION} on Linux {KERNEL})\n",
            env!("CARGO_PKG_VERSION")
        )),
        Ok(cmd) => {
            let vm = match args.vm {
                Some(vm) => vm,
                None => only_vm(&args.dir.run_dir, &args.dir.lab)?,
            };
            let mut guest = CtlGuest(ctl::guest_socket(&args.dir.run_dir, &args.dir.lab, &vm));
            execute(&mut guest, &cmd)?
        }
    };
    out.print();
    Ok(out.code)
}

/// The ethtool whose messages and formats we follow.
const ETHTOOL_VERSION: &str = "6.1";
/// The kernel whose feature list `-k` shows.
const KERNEL: &str = "6.18";

/// Exit status for an ethtool operation hvnet does not implement yet (EOPNOTSUPP).
const EXIT_NOT_SUPPORTED: i32 = 95;

/// What to print, and the exit status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Exit status.
    pub code: i32,
}

impl Output {
    fn ok(stdout: String) -> Self {
        Output {
            stdout,
            ..Default::default()
        }
    }

    fn fail(stderr: impl Into<String>, code: i32) -> Self {
        Output {
            stdout: String::new(),
            stderr: stderr.into(),
            code,
        }
    }

    fn print(&self) {
        use std::io::Write;
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(self.stdout.as_bytes());
        let _ = o.flush();
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(self.stderr.as_bytes());
        let _ = e.flush();
    }
}

// ---------------------------------------------------------------------------------------
// Arguments

/// A parsed ethtool command line.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Command {
    Help,
    Version,
    /// `-k DEVNAME` (`json`: `--json -k`).
    ShowFeatures {
        dev: String,
        json: bool,
    },
    /// `-K DEVNAME FEATURE on|off ...`, in the order given.
    SetFeatures {
        dev: String,
        changes: Vec<(String, bool)>,
    },
    /// `-i DEVNAME`.
    Driver {
        dev: String,
    },
    /// `-S DEVNAME`.
    Stats {
        dev: String,
    },
}

/// What an ethtool option does here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    ShowFeatures,
    SetFeatures,
    Driver,
    Stats,
    Help,
    Version,
    /// A real ethtool option hvnet does not implement yet.
    Unsupported,
}

/// ethtool's options (`ethtool -h`), with the ones implemented here.
const OPTIONS: &[(&[&str], Op)] = &[
    (
        &["-k", "--show-features", "--show-offload"],
        Op::ShowFeatures,
    ),
    (&["-K", "--features", "--offload"], Op::SetFeatures),
    (&["-i", "--driver"], Op::Driver),
    (&["-S", "--statistics"], Op::Stats),
    (&["-h", "--help"], Op::Help),
    (&["--version"], Op::Version),
    (&["-s", "--change"], Op::Unsupported),
    (&["-a", "--show-pause"], Op::Unsupported),
    (&["-A", "--pause"], Op::Unsupported),
    (&["-c", "--show-coalesce"], Op::Unsupported),
    (&["-C", "--coalesce"], Op::Unsupported),
    (&["-g", "--show-ring"], Op::Unsupported),
    (&["-G", "--set-ring"], Op::Unsupported),
    (&["-d", "--register-dump"], Op::Unsupported),
    (&["-e", "--eeprom-dump"], Op::Unsupported),
    (&["-E", "--change-eeprom"], Op::Unsupported),
    (&["-r", "--negotiate"], Op::Unsupported),
    (&["-p", "--identify"], Op::Unsupported),
    (&["-t", "--test"], Op::Unsupported),
    (&["--phy-statistics"], Op::Unsupported),
    (
        &["-n", "-u", "--show-nfc", "--show-ntuple"],
        Op::Unsupported,
    ),
    (
        &["-N", "-U", "--config-nfc", "--config-ntuple"],
        Op::Unsupported,
    ),
    (&["-T", "--show-time-stamping"], Op::Unsupported),
    (&["-x", "--show-rxfh-indir", "--show-rxfh"], Op::Unsupported),
    (&["-X", "--set-rxfh-indir", "--rxfh"], Op::Unsupported),
    (&["-f", "--flash"], Op::Unsupported),
    (&["-P", "--show-permaddr"], Op::Unsupported),
    (&["-w", "--get-dump"], Op::Unsupported),
    (&["-W", "--set-dump"], Op::Unsupported),
    (&["-l", "--show-channels"], Op::Unsupported),
    (&["-L", "--set-channels"], Op::Unsupported),
    (&["--show-priv-flags"], Op::Unsupported),
    (&["--set-priv-flags"], Op::Unsupported),
    (
        &["-m", "--dump-module-eeprom", "--module-info"],
        Op::Unsupported,
    ),
    (&["--show-eee"], Op::Unsupported),
    (&["--set-eee"], Op::Unsupported),
    (&["--set-phy-tunable"], Op::Unsupported),
    (&["--get-phy-tunable"], Op::Unsupported),
    (&["--get-tunable"], Op::Unsupported),
    (&["--set-tunable"], Op::Unsupported),
    (&["--reset"], Op::Unsupported),
    (&["--show-fec"], Op::Unsupported),
    (&["--set-fec"], Op::Unsupported),
    (&["-Q", "--per-queue"], Op::Unsupported),
    (&["--cable-test"], Op::Unsupported),
    (&["--cable-test-tdr"], Op::Unsupported),
    (&["--show-tunnels"], Op::Unsupported),
    (&["--show-module"], Op::Unsupported),
    (&["--set-module"], Op::Unsupported),
    (&["--monitor"], Op::Unsupported),
    (&["--disable-netlink"], Op::Unsupported),
];

fn bad_args() -> Output {
    Output::fail(
        "ethtool: bad command line argument(s)\nFor more information run ethtool -h\n",
        1,
    )
}

fn not_supported(what: &str) -> Output {
    Output::fail(
        format!("hvnet ethtool: {what} is not supported yet\n"),
        EXIT_NOT_SUPPORTED,
    )
}

/// `strtoul(s, &end, 0)` accepting all of `s` (ethtool's `--debug` argument).
fn is_c_ulong(s: &str) -> bool {
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    !digits.is_empty() && u64::from_str_radix(digits, radix).is_ok()
}

/// Parses ethtool's command line as ethtool 6.1 does; an error is what ethtool prints.
fn parse(args: &[String]) -> Result<Command, Output> {
    let mut i = 0;
    let mut json = false;
    // Global flags, before the option.
    loop {
        match args.get(i).map(String::as_str) {
            Some("--debug") => {
                match args.get(i + 1) {
                    Some(v) if is_c_ulong(v) => {}
                    _ => return Err(bad_args()),
                }
                i += 2;
            }
            Some("--json") => {
                json = true;
                i += 1;
            }
            Some("-I" | "--include-statistics") => i += 1,
            _ => break,
        }
    }
    let Some(first) = args.get(i) else {
        return Err(bad_args());
    };
    i += 1;
    let Some(op) = OPTIONS
        .iter()
        .find(|(names, _)| names.contains(&first.as_str()))
        .map(|&(_, op)| op)
    else {
        if first.starts_with('-') {
            return Err(bad_args());
        }
        // `ethtool DEVNAME`: the link settings.
        return Err(not_supported("showing link settings (ethtool DEVNAME)"));
    };
    match op {
        Op::Help => return Ok(Command::Help),
        Op::Version => return Ok(Command::Version),
        Op::Unsupported => return Err(not_supported(first)),
        _ => {}
    }
    if json && op != Op::ShowFeatures {
        return Err(bad_args());
    }
    let Some(dev) = args.get(i).cloned() else {
        return Err(bad_args());
    };
    let rest = &args[i + 1..];
    match op {
        Op::ShowFeatures => match rest.first() {
            Some(p) => Err(Output::fail(
                format!("ethtool: unexpected parameter '{p}'\n"),
                1,
            )),
            None => Ok(Command::ShowFeatures { dev, json }),
        },
        Op::Driver => match rest.first() {
            Some(_) => Err(bad_args()),
            None => Ok(Command::Driver { dev }),
        },
        Op::Stats => match rest.first().map(String::as_str) {
            Some(p @ ("--all-groups" | "--groups" | "--src")) => {
                Err(not_supported(&format!("-S {p}")))
            }
            Some(p) => Err(Output::fail(
                format!("ethtool (-S): unknown parameter '{p}'\n"),
                1,
            )),
            None => Ok(Command::Stats { dev }),
        },
        Op::SetFeatures => {
            let mut changes = Vec::new();
            let mut rest = rest;
            while let Some(name) = rest.first() {
                if name == "--" {
                    break;
                }
                let value = rest.get(1).map(String::as_str);
                let on = match value {
                    Some("on") => true,
                    Some("off") => false,
                    _ => {
                        return Err(Output::fail(
                            format!(
                                "ethtool (-K): flag '{}' for parameter '(null)' is not followed by \
                                 'on' or 'off'\n",
                                value.unwrap_or("(null)")
                            ),
                            1,
                        ));
                    }
                };
                changes.push((name.clone(), on));
                rest = &rest[2..];
            }
            Ok(Command::SetFeatures { dev, changes })
        }
        Op::Help | Op::Version | Op::Unsupported => unreachable!("handled above"),
    }
}

fn help() -> String {
    format!(
        "hvnet ethtool {v}: ethtool for the synthetic NIC of a running `hvnet guest`\n\
         Output, messages and exit status are ethtool {ETHTOOL_VERSION}'s for an hv_netvsc NIC \
         on Linux {KERNEL}.\n\
         Usage:\n\
         \thvnet ethtool [--vm NAME] [--lab LAB] [--run-dir DIR] [ FLAGS ] OPTION DEVNAME ...\n\
         \n\
         OPTION:\n\
         \t-k|--show-features|--show-offload DEVNAME\tGet state of protocol offload and other features\n\
         \t-K|--features|--offload DEVNAME\tSet protocol offload and other features\n\
         \t\tFEATURE on|off ...\n\
         \t-i|--driver DEVNAME\tShow driver information\n\
         \t-S|--statistics DEVNAME\tShow adapter statistics\n\
         \t-h|--help\tShow this help\n\
         \t--version\tShow version number\n\
         \n\
         FLAGS:\n\
         \t--debug MASK\taccepted, ignored\n\
         \t--json\t\tJSON output (-k only, as in ethtool {ETHTOOL_VERSION})\n\
         \t-I|--include-statistics\taccepted, ignored\n\
         \n\
         --vm defaults to the only guest with a control socket in RUN_DIR/LAB/.\n\
         -i prints hvnet's own lines after ethtool's: nvsp-version, ndis-version, \
         vmbus-version, host-profile.\n\
         Other ethtool options are not supported yet (exit status {EXIT_NOT_SUPPORTED}).\n",
        v = env!("CARGO_PKG_VERSION")
    )
}

// ---------------------------------------------------------------------------------------
// Netdev features

/// Where a kernel feature's state comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    /// The guest's feature of this name; set through the same name.
    Key(&'static str),
    /// One address family of a group: state from the first name (the group's if the
    /// guest does not report families); set through the group (the second name).
    Family(&'static str, &'static str),
    /// A software feature the kernel lets the user toggle on any device: state (and
    /// setting) through the guest's feature of this name if it reports one, else shown as
    /// Linux has it by default (`on`, changeable; changeable only while `needs` is
    /// possible, if given) without hvnet being able to change it.
    Generic {
        key: &'static str,
        on: bool,
        needs: Option<(&'static str, &'static str)>,
    },
    /// On and fixed.
    FixedOn,
    /// Off and fixed.
    FixedOff,
    /// `vlan-challenged`: fixed, and a request to change it is an error.
    NeverChange,
}

/// The kernel's netdev features (`netdev_features_strings`, Linux 6.18), in bit order,
/// unnamed bits left out, with hv_netvsc's state.
const FEATURES: &[(&str, Src)] = &[
    ("tx-scatter-gather", Src::Key("sg")),
    ("tx-checksum-ipv4", Src::Family("tx_csum_ipv4", "tx_csum")),
    ("tx-checksum-ip-generic", Src::FixedOff),
    ("tx-checksum-ipv6", Src::Family("tx_csum_ipv6", "tx_csum")),
    ("highdma", Src::FixedOn),
    ("tx-scatter-gather-fraglist", Src::FixedOff),
    ("tx-vlan-hw-insert", Src::FixedOn),
    ("rx-vlan-hw-parse", Src::FixedOn),
    ("rx-vlan-filter", Src::FixedOff),
    ("vlan-challenged", Src::NeverChange),
    (
        "tx-generic-segmentation",
        Src::Generic {
            key: "gso",
            on: true,
            needs: None,
        },
    ),
    ("rx-gro", Src::Key("gro")),
    ("rx-lro", Src::Key("lro")),
    ("tx-tcp-segmentation", Src::Family("tso_v4", "tso")),
    ("tx-gso-robust", Src::FixedOff),
    ("tx-tcp-ecn-segmentation", Src::FixedOff),
    (
        "tx-tcp-mangleid-segmentation",
        Src::Generic {
            key: "tso_mangleid",
            on: false,
            needs: Some(("tso_v4", "tso")),
        },
    ),
    ("tx-tcp6-segmentation", Src::Family("tso_v6", "tso")),
    ("tx-fcoe-segmentation", Src::FixedOff),
    ("tx-gre-segmentation", Src::FixedOff),
    ("tx-gre-csum-segmentation", Src::FixedOff),
    ("tx-ipxip4-segmentation", Src::FixedOff),
    ("tx-ipxip6-segmentation", Src::FixedOff),
    ("tx-udp_tnl-segmentation", Src::FixedOff),
    ("tx-udp_tnl-csum-segmentation", Src::FixedOff),
    ("tx-gso-partial", Src::FixedOff),
    ("tx-tunnel-remcsum-segmentation", Src::FixedOff),
    ("tx-sctp-segmentation", Src::FixedOff),
    ("tx-esp-segmentation", Src::FixedOff),
    ("tx-udp-segmentation", Src::FixedOff),
    ("tx-gso-list", Src::FixedOff),
    ("tx-tcp-accecn-segmentation", Src::FixedOff),
    ("tx-checksum-fcoe-crc", Src::FixedOff),
    ("tx-checksum-sctp", Src::FixedOff),
    ("rx-ntuple-filter", Src::FixedOff),
    ("rx-hashing", Src::Key("rxhash")),
    ("rx-checksum", Src::Key("rx_csum")),
    (
        "tx-nocache-copy",
        Src::Generic {
            key: "tx_nocache_copy",
            on: false,
            needs: None,
        },
    ),
    ("loopback", Src::FixedOff),
    ("rx-fcs", Src::FixedOff),
    ("rx-all", Src::FixedOff),
    ("tx-vlan-stag-hw-insert", Src::FixedOff),
    ("rx-vlan-stag-hw-parse", Src::FixedOff),
    ("rx-vlan-stag-filter", Src::FixedOff),
    ("l2-fwd-offload", Src::FixedOff),
    ("hw-tc-offload", Src::FixedOff),
    ("esp-hw-offload", Src::FixedOff),
    ("esp-tx-csum-hw-offload", Src::FixedOff),
    ("rx-udp_tunnel-port-offload", Src::FixedOff),
    ("tls-hw-tx-offload", Src::FixedOff),
    ("tls-hw-rx-offload", Src::FixedOff),
    ("rx-gro-hw", Src::FixedOff),
    ("tls-hw-record", Src::FixedOff),
    (
        "rx-gro-list",
        Src::Generic {
            key: "gro_list",
            on: false,
            needs: None,
        },
    ),
    ("macsec-hw-offload", Src::FixedOff),
    (
        "rx-udp-gro-forwarding",
        Src::Generic {
            key: "udp_gro_fwd",
            on: false,
            needs: None,
        },
    ),
    ("hsr-tag-ins-offload", Src::FixedOff),
    ("hsr-tag-rm-offload", Src::FixedOff),
    ("hsr-fwd-offload", Src::FixedOff),
    ("hsr-dup-offload", Src::FixedOff),
];

/// ethtool's legacy offload flags (`off_flag_def`): short name, long name, the kernel
/// feature names they stand for.
const LEGACY: &[(&str, &str, &str)] = &[
    ("rx", "rx-checksumming", "rx-checksum"),
    ("tx", "tx-checksumming", "tx-checksum-*"),
    ("sg", "scatter-gather", "tx-scatter-gather*"),
    ("tso", "tcp-segmentation-offload", "tx-tcp*-segmentation"),
    ("ufo", "udp-fragmentation-offload", "tx-udp-fragmentation"),
    (
        "gso",
        "generic-segmentation-offload",
        "tx-generic-segmentation",
    ),
    ("gro", "generic-receive-offload", "rx-gro"),
    ("lro", "large-receive-offload", "rx-lro"),
    ("rxvlan", "rx-vlan-offload", "rx-vlan-hw-parse"),
    ("txvlan", "tx-vlan-offload", "tx-vlan-hw-insert"),
    ("ntuple", "ntuple-filters", "rx-ntuple-filter"),
    ("rxhash", "receive-hashing", "rx-hashing"),
];

/// ethtool's `flag_pattern_match`: at most one `*`, matching any (possibly empty) run.
fn pattern_match(name: &str, pattern: &str) -> bool {
    match pattern.split_once('*') {
        Some((pre, post)) => {
            name.len() + 1 >= pattern.len() && name.starts_with(pre) && name.ends_with(post)
        }
        None => name == pattern,
    }
}

/// The legacy flag each feature belongs to (the first whose pattern matches).
fn legacy_of(feature: &str) -> Option<usize> {
    LEGACY
        .iter()
        .position(|&(_, _, pattern)| pattern_match(feature, pattern))
}

/// One netdev feature as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FeatureState {
    /// In `dev->features` (also taken as `wanted`: the guest reports one state).
    active: bool,
    /// In `dev->hw_features` (changeable).
    hw: bool,
    /// In `NETIF_F_NEVER_CHANGE`.
    nochange: bool,
    /// The guest's feature to send in `set_features` to change it, if hvnet can.
    setter: Option<&'static str>,
}

impl FeatureState {
    fn fixed(&self) -> bool {
        !self.hw || self.nochange
    }
}

/// A NIC's features, parallel to [`FEATURES`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct NetDevice {
    ifname: String,
    states: Vec<FeatureState>,
}

/// `(on, fixed)` of a feature the guest reports.
fn reported(features: &Map<String, Value>, key: &str) -> Option<(bool, bool)> {
    let f = features.get(key)?;
    let on = f.get("on")?.as_bool()?;
    let fixed = f.get("fixed").and_then(Value::as_bool).unwrap_or(false);
    Some((on, fixed))
}

impl NetDevice {
    /// From the guest's `features` reply.
    fn from_reply(reply: &Value) -> Result<NetDevice> {
        let ifname = reply
            .get("ifname")
            .and_then(Value::as_str)
            .context("the guest's features reply has no ifname")?
            .to_owned();
        let features = reply
            .get("features")
            .and_then(Value::as_object)
            .context("the guest's features reply has no features")?;
        let states = FEATURES
            .iter()
            .map(|&(_, src)| state_of(src, features))
            .collect();
        Ok(NetDevice { ifname, states })
    }
}

fn state_of(src: Src, features: &Map<String, Value>) -> FeatureState {
    let fixed = |active: bool| FeatureState {
        active,
        hw: false,
        nochange: false,
        setter: None,
    };
    let from = |r: Option<(bool, bool)>, setter: &'static str| match r {
        Some((on, is_fixed)) => FeatureState {
            active: on,
            hw: !is_fixed,
            nochange: false,
            setter: (!is_fixed).then_some(setter),
        },
        None => fixed(false),
    };
    match src {
        Src::Key(key) => from(reported(features, key), key),
        Src::Family(key, group) => from(
            reported(features, key).or_else(|| reported(features, group)),
            group,
        ),
        Src::Generic { key, on, needs } => match reported(features, key) {
            Some(r) => from(Some(r), key),
            None => {
                let possible = needs.is_none_or(|(key, group)| {
                    reported(features, key)
                        .or_else(|| reported(features, group))
                        .is_some_and(|(_, is_fixed)| !is_fixed)
                });
                FeatureState {
                    active: on && possible,
                    hw: possible,
                    nochange: false,
                    setter: None,
                }
            }
        },
        Src::FixedOn => fixed(true),
        Src::FixedOff => fixed(false),
        Src::NeverChange => FeatureState {
            nochange: true,
            ..fixed(false)
        },
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// The lines of `ethtool -k`: (name, indented, state) for features, (name, false, None)
/// for a legacy flag standing for several features (on if any of them is).
fn feature_lines(dev: &NetDevice) -> Vec<(&'static str, bool, Result<FeatureState, bool>)> {
    let flags: Vec<Option<usize>> = FEATURES.iter().map(|&(n, _)| legacy_of(n)).collect();
    let mut lines = Vec::new();
    for (l, &(short, long, _)) in LEGACY.iter().enumerate() {
        // No kernel with the netlink interface has UFO.
        if short == "ufo" {
            continue;
        }
        let members: Vec<usize> = (0..FEATURES.len())
            .filter(|&i| flags[i] == Some(l))
            .collect();
        if members.len() != 1 {
            let any = members.iter().any(|&i| dev.states[i].active);
            lines.push((long, false, Err(any)));
        }
        for &i in &members {
            if members.len() == 1 {
                lines.push((long, false, Ok(dev.states[i])));
            } else {
                lines.push((FEATURES[i].0, true, Ok(dev.states[i])));
            }
        }
    }
    for (i, &(name, _)) in FEATURES.iter().enumerate() {
        if flags[i].is_none() {
            lines.push((name, false, Ok(dev.states[i])));
        }
    }
    lines
}

/// `ethtool -k DEVNAME`.
fn format_features(dev: &NetDevice) -> String {
    let mut out = format!("Features for {}:\n", dev.ifname);
    for (name, indented, st) in feature_lines(dev) {
        let tab = if indented { "\t" } else { "" };
        let _ = match st {
            Err(any) => writeln!(out, "{name}: {}", on_off(any)),
            Ok(st) => writeln!(
                out,
                "{tab}{name}: {}{}",
                on_off(st.active),
                if st.fixed() { " [fixed]" } else { "" }
            ),
        };
    }
    out
}

/// `ethtool --json -k DEVNAME` (ethtool's JSON writer layout).
fn format_features_json(dev: &NetDevice) -> String {
    let mut out = String::from("[ {\n");
    let _ = write!(
        out,
        "        \"ifname\": {}",
        Value::from(dev.ifname.as_str())
    );
    for (name, _, st) in feature_lines(dev) {
        let (active, fixed, requested) = match st {
            Err(any) => (any, "null".to_owned(), "null".to_owned()),
            Ok(st) => (st.active, st.fixed().to_string(), st.active.to_string()),
        };
        let _ = write!(
            out,
            ",\n        \"{name}\": {{\n            \"active\": {active},\n            \
             \"fixed\": {fixed},\n            \"requested\": {requested}\n        }}"
        );
    }
    out.push_str("\n    } ]\n");
    out
}

/// `ethtool -K`'s summary (ethtool's `show_feature_changes` on the kernel's
/// FEATURES_SET reply) for the features requested (`req`, parallel to [`FEATURES`]) and
/// the states before and after.
fn feature_changes(before: &NetDevice, after: &NetDevice, req: &[Option<bool>]) -> Output {
    let mut nothing_changed = true;
    let mut diff = false;
    let mut lines = String::new();
    for (i, &(name, _)) in FEATURES.iter().enumerate() {
        let now = after.states[i].active;
        let missed = req[i].is_some_and(|r| r != now);
        let changed = before.states[i].active != now;
        if missed != req[i].is_some() {
            nothing_changed = false;
        }
        if missed || (changed && req[i].is_none()) {
            diff = true;
        }
        if !missed && !changed {
            continue;
        }
        let _ = if missed {
            writeln!(
                lines,
                "{name}: {} [requested {}]",
                on_off(now),
                on_off(!now)
            )
        } else if req[i].is_none() {
            writeln!(lines, "{name}: {} [not requested]", on_off(now))
        } else {
            writeln!(lines, "{name}: {}", on_off(now))
        };
    }
    let mut out = Output::default();
    if diff {
        out.stdout = format!("Actual changes:\n{lines}");
    }
    if nothing_changed {
        out.stderr = "Could not change any device features\n".into();
        out.code = 1;
    }
    out
}

/// Size of a netlink attribute with `payload` bytes.
fn nla_size(payload: usize) -> usize {
    4 + payload.div_ceil(4) * 4
}

/// The requested features (parallel to [`FEATURES`]), or ethtool's error for a name the
/// kernel does not know (with the offset of the attribute in ethtool's FEATURES_SET
/// message, as the kernel reports it) or for a feature ethtool may not change.
fn resolve_request(dev: &str, changes: &[(String, bool)]) -> Result<Vec<Option<bool>>, Output> {
    let mut req = vec![None; FEATURES.len()];
    // genetlink header, then the request header nest (device name, flags), then the
    // WANTED and BITS nests and the first BIT nest.
    let mut offset = 20 + (4 + nla_size(dev.len() + 1) + nla_size(4)) + 12;
    let entry = |name: &str, on: bool| 4 + nla_size(name.len() + 1) + if on { 4 } else { 0 };
    for (name, on) in changes {
        if let Some(&(_, _, pattern)) = LEGACY
            .iter()
            .find(|&&(short, long, _)| name == short || name == long)
        {
            for (i, &(feature, _)) in FEATURES.iter().enumerate() {
                if pattern_match(feature, pattern) {
                    req[i] = Some(*on);
                    offset += entry(feature, *on);
                }
            }
        } else if let Some(i) = FEATURES.iter().position(|&(f, _)| f == name) {
            req[i] = Some(*on);
            offset += entry(name, *on);
        } else {
            return Err(Output::fail(
                format!(
                    "netlink error: bit name not found (offset {offset})\n\
                     netlink error: Operation not supported\n"
                ),
                92,
            ));
        }
    }
    if FEATURES
        .iter()
        .zip(&req)
        .any(|(&(_, src), r)| src == Src::NeverChange && r.is_some())
    {
        return Err(Output::fail(
            "netlink error: attempt to change non-ethtool features\n\
             netlink error: Invalid argument\n",
            92,
        ));
    }
    Ok(req)
}

/// The guest's `set` object for a request, or why hvnet cannot do it.
fn set_request(before: &NetDevice, req: &[Option<bool>]) -> Result<Map<String, Value>, Output> {
    let mut set = Map::new();
    let mut groups: Vec<(&'static str, Vec<usize>)> = Vec::new();
    for (i, &(_, src)) in FEATURES.iter().enumerate() {
        let st = before.states[i];
        let Some(key) = st.setter else { continue };
        if let Src::Family(_, group) = src {
            match groups.iter_mut().find(|(g, _)| *g == group) {
                Some((_, members)) => members.push(i),
                None => groups.push((group, vec![i])),
            }
        } else if let Some(on) = req[i]
            && on != st.active
        {
            set.insert(key.into(), on.into());
        }
    }
    for (group, members) in groups {
        if members.iter().all(|&i| req[i].is_none()) {
            continue;
        }
        let want: Vec<bool> = members
            .iter()
            .map(|&i| req[i].unwrap_or(before.states[i].active))
            .collect();
        if want.iter().any(|&w| w != want[0]) {
            let names: Vec<&str> = members.iter().map(|&i| FEATURES[i].0).collect();
            let flag = legacy_of(FEATURES[members[0]].0).map_or(group, |l| LEGACY[l].0);
            return Err(Output::fail(
                format!(
                    "hvnet ethtool: {} can only be switched together for now (use '{flag} on|off')\n",
                    names.join(" and ")
                ),
                EXIT_NOT_SUPPORTED,
            ));
        }
        if members.iter().any(|&i| before.states[i].active != want[0]) {
            set.insert(group.into(), want[0].into());
        }
    }
    Ok(set)
}

// ---------------------------------------------------------------------------------------
// Driver information and statistics

/// A string field of `struct ethtool_drvinfo` (32 bytes, NUL-terminated by the kernel).
fn drvinfo_field(info: &Value, key: &str) -> String {
    let s = info.get(key).and_then(Value::as_str).unwrap_or("");
    let mut end = s.len().min(31);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// `ethtool -i DEVNAME`, then hvnet's own lines (the protocol versions negotiated and
/// the host profile), which the real ethtool does not print.
fn format_driver_info(info: &Value) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "driver: {}\nversion: {}\nfirmware-version: {}\nexpansion-rom-version: \nbus-info: {}\n\
         supports-statistics: yes\nsupports-test: no\nsupports-eeprom-access: no\n\
         supports-register-dump: no\nsupports-priv-flags: no\n",
        drvinfo_field(info, "driver"),
        drvinfo_field(info, "version"),
        drvinfo_field(info, "firmware"),
        drvinfo_field(info, "bus_info"),
    );
    for (key, label) in [
        ("nvsp_version", "nvsp-version"),
        ("ndis_version", "ndis-version"),
        ("vmbus_version", "vmbus-version"),
        ("host_profile", "host-profile"),
    ] {
        if let Some(v) = info.get(key).and_then(Value::as_str) {
            let _ = writeln!(out, "{label}: {v}");
        }
    }
    out
}

/// `ethtool -S DEVNAME` from the guest's counters (in the reply's order).
fn format_stats(stats: &Value) -> Result<Output> {
    let map = stats
        .as_object()
        .context("the guest's stats reply is not an object")?;
    if map.is_empty() {
        return Ok(Output::fail("no stats available\n", 94));
    }
    let mut out = String::from("NIC statistics:\n");
    for (name, v) in map {
        let v = v
            .as_u64()
            .with_context(|| format!("the guest's counter {name} is not a u64: {v}"))?;
        let _ = writeln!(out, "     {name}: {v}");
    }
    Ok(Output::ok(out))
}

// ---------------------------------------------------------------------------------------
// Execution

/// The guest's control socket (a trait so tests can stand in for the guest).
trait Guest {
    fn request(&mut self, req: &Value) -> Result<Value>;
}

struct CtlGuest(std::path::PathBuf);

impl Guest for CtlGuest {
    fn request(&mut self, req: &Value) -> Result<Value> {
        ctl::request(&self.0, req)
    }
}

/// ethtool's error for a device that does not exist, from netlink (FEATURES_GET/SET).
fn no_device_netlink(code: i32) -> Output {
    Output::fail(
        "netlink error: no device matches name (offset 24)\nnetlink error: No such device\n",
        code,
    )
}

fn ifname_of(reply: &Value) -> Result<&str> {
    reply
        .get("ifname")
        .and_then(Value::as_str)
        .context("the guest's reply has no ifname")
}

/// Runs a parsed command against the guest.
fn execute(guest: &mut dyn Guest, cmd: &Command) -> Result<Output> {
    match cmd {
        Command::Help | Command::Version => bail!("not a device command"),
        Command::ShowFeatures { dev, json } => {
            let d = NetDevice::from_reply(&guest.request(&json!({"cmd": "features"}))?)?;
            if &d.ifname != dev {
                return Ok(no_device_netlink(1));
            }
            Ok(Output::ok(if *json {
                format_features_json(&d)
            } else {
                format_features(&d)
            }))
        }
        Command::SetFeatures { dev, changes } => {
            let before = NetDevice::from_reply(&guest.request(&json!({"cmd": "features"}))?)?;
            if &before.ifname != dev {
                return Ok(no_device_netlink(92));
            }
            let req = match resolve_request(dev, changes) {
                Ok(req) => req,
                Err(out) => return Ok(out),
            };
            let set = match set_request(&before, &req) {
                Ok(set) => set,
                Err(out) => return Ok(out),
            };
            if !set.is_empty()
                && let Err(e) = guest.request(&json!({"cmd": "set_features", "set": set}))
            {
                // Linux logs a driver's refusal to the kernel log, not to ethtool; the
                // summary below shows what did not change.
                let set = Value::Object(set);
                tracing::warn!("the guest did not apply {set}: {e:#}");
            }
            let after = NetDevice::from_reply(&guest.request(&json!({"cmd": "features"}))?)?;
            Ok(feature_changes(&before, &after, &req))
        }
        Command::Driver { dev } => {
            if dev.len() > 15 {
                return Ok(Output::fail(
                    "ethtool netlink support for subcommand missing, device name longer than \
                     15 not supported\n",
                    1,
                ));
            }
            let info = guest.request(&json!({"cmd": "info"}))?;
            if ifname_of(&info)? != dev {
                return Ok(Output::fail(
                    "Cannot get driver information: No such device\n",
                    71,
                ));
            }
            Ok(Output::ok(format_driver_info(&info)))
        }
        Command::Stats { dev } => {
            if dev.len() > 15 {
                return Ok(Output::fail(
                    "ioctl-only request, device name longer than 15 not supported\n",
                    1,
                ));
            }
            let info = guest.request(&json!({"cmd": "info"}))?;
            if ifname_of(&info)? != dev {
                return Ok(Output::fail(
                    "Cannot get stats strings information: No such device\n",
                    96,
                ));
            }
            format_stats(&guest.request(&json!({"cmd": "stats"}))?)
        }
    }
}

/// The VM of the only guest control socket in RUN_DIR/LAB/.
fn only_vm(run_dir: &Path, lab: &str) -> Result<String> {
    let dir = ctl::lab_dir(run_dir, lab);
    let mut vms: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let vm = name.strip_suffix(".ctl")?;
                (vm != "host").then(|| vm.to_owned())
            })
            .collect()
        })
        .unwrap_or_default();
    vms.sort();
    match vms.len() {
        0 => bail!(
            "no guest is running in {}/ (no VM.ctl control socket there); start one \
             (`hvnet lab --keep`, or `hvnet guest`) or give --lab/--run-dir",
            dir.display()
        ),
        1 => Ok(vms.remove(0)),
        _ => bail!(
            "{} guests are running in {}/ ({}): choose one with --vm NAME",
            vms.len(),
            dir.display(),
            vms.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn p(s: &str) -> Result<Command, Output> {
        parse(&args(s))
    }

    fn err(s: &str) -> Output {
        p(s).expect_err(s)
    }

    const BAD: &str =
        "ethtool: bad command line argument(s)\nFor more information run ethtool -h\n";

    #[test]
    fn parses_show_features() {
        for opt in ["-k", "--show-features", "--show-offload"] {
            assert_eq!(
                p(&format!("{opt} eth0")),
                Ok(Command::ShowFeatures {
                    dev: "eth0".into(),
                    json: false
                })
            );
        }
        for s in [
            "--json -k eth0",
            "-I --json -k eth0",
            "--debug 0x3 --json -k eth0",
        ] {
            assert_eq!(
                p(s),
                Ok(Command::ShowFeatures {
                    dev: "eth0".into(),
                    json: true
                }),
                "{s}"
            );
        }
        let e = err("-k eth0 extra");
        assert_eq!(e.stderr, "ethtool: unexpected parameter 'extra'\n");
        assert_eq!((e.code, e.stdout.as_str()), (1, ""));
        assert_eq!(
            err("-k eth0 -k").stderr,
            "ethtool: unexpected parameter '-k'\n"
        );
        assert_eq!(err("-k"), Output::fail(BAD, 1));
        assert_eq!(
            err("-k eth0 --json").stderr,
            "ethtool: unexpected parameter '--json'\n"
        );
    }

    #[test]
    fn parses_set_features() {
        for opt in ["-K", "--features", "--offload"] {
            assert_eq!(
                p(&format!(
                    "{opt} eth0 lro off gro on large-receive-offload on rx-gro off"
                )),
                Ok(Command::SetFeatures {
                    dev: "eth0".into(),
                    changes: vec![
                        ("lro".into(), false),
                        ("gro".into(), true),
                        ("large-receive-offload".into(), true),
                        ("rx-gro".into(), false),
                    ]
                })
            );
        }
        // Nothing after the device, and `--` ends the list.
        assert_eq!(
            p("-K eth0"),
            Ok(Command::SetFeatures {
                dev: "eth0".into(),
                changes: vec![]
            })
        );
        assert_eq!(
            p("-K eth0 tso on -- lro on"),
            Ok(Command::SetFeatures {
                dev: "eth0".into(),
                changes: vec![("tso".into(), true)]
            })
        );
        // Unknown names are the kernel's business (after the device check).
        assert_eq!(
            p("-K eth0 bogus on"),
            Ok(Command::SetFeatures {
                dev: "eth0".into(),
                changes: vec![("bogus".into(), true)]
            })
        );
        assert_eq!(
            err("-K eth0 gro"),
            Output::fail(
                "ethtool (-K): flag '(null)' for parameter '(null)' is not followed by 'on' or 'off'\n",
                1
            )
        );
        assert_eq!(
            err("-K eth0 gro on lro ON").stderr,
            "ethtool (-K): flag 'ON' for parameter '(null)' is not followed by 'on' or 'off'\n"
        );
        assert_eq!(err("-K"), Output::fail(BAD, 1));
        assert_eq!(err("--json -K eth0 gro on"), Output::fail(BAD, 1));
    }

    #[test]
    fn parses_driver_and_stats() {
        for opt in ["-i", "--driver"] {
            assert_eq!(
                p(&format!("{opt} eth0")),
                Ok(Command::Driver { dev: "eth0".into() })
            );
        }
        for opt in ["-S", "--statistics"] {
            assert_eq!(
                p(&format!("{opt} eth0")),
                Ok(Command::Stats { dev: "eth0".into() })
            );
        }
        assert_eq!(p("-I -i eth0"), Ok(Command::Driver { dev: "eth0".into() }));
        assert_eq!(err("-i eth0 extra"), Output::fail(BAD, 1));
        assert_eq!(err("--json -i eth0"), Output::fail(BAD, 1));
        assert_eq!(err("--json -S eth0"), Output::fail(BAD, 1));
        assert_eq!(
            err("-S eth0 zzz"),
            Output::fail("ethtool (-S): unknown parameter 'zzz'\n", 1)
        );
        assert_eq!(err("-S eth0 --all-groups").code, EXIT_NOT_SUPPORTED);
    }

    #[test]
    fn rejects_what_ethtool_rejects() {
        for s in [
            "",
            "-Z eth0",
            "--foo eth0",
            "--json",
            "--debug",
            "--debug x -k eth0",
            "--debug -k eth0",
            "-i",
            "-S",
        ] {
            assert_eq!(err(s), Output::fail(BAD, 1), "{s:?}");
        }
    }

    #[test]
    fn options_not_implemented_yet() {
        for (s, opt) in [
            ("-G eth0 rx 512", "-G"),
            ("-g eth0", "-g"),
            ("-N eth0 rx-flow-hash udp4 sd", "-N"),
            ("-n eth0 rx-flow-hash udp4", "-n"),
            ("-x eth0", "-x"),
            ("-X eth0 equal 2", "-X"),
            ("-L eth0 combined 2", "-L"),
            ("--show-channels eth0", "--show-channels"),
            ("-l eth0", "-l"),
            ("--json -c eth0", "-c"),
        ] {
            assert_eq!(
                err(s),
                Output::fail(
                    format!("hvnet ethtool: {opt} is not supported yet\n"),
                    EXIT_NOT_SUPPORTED
                ),
                "{s}"
            );
        }
        assert_eq!(err("eth0").code, EXIT_NOT_SUPPORTED);
        assert_eq!(p("-h"), Ok(Command::Help));
        assert_eq!(p("--help"), Ok(Command::Help));
        assert_eq!(p("--version"), Ok(Command::Version));
    }

    #[test]
    fn c_ulong() {
        for s in ["0", "7", "0x1f", "0X1F", "017"] {
            assert!(is_c_ulong(s), "{s}");
        }
        for s in ["", "x", "0x", "08", "1a", "-1"] {
            assert!(!is_c_ulong(s), "{s}");
        }
    }

    #[test]
    fn legacy_patterns() {
        assert!(pattern_match("tx-tcp-segmentation", "tx-tcp*-segmentation"));
        assert!(pattern_match(
            "tx-tcp6-segmentation",
            "tx-tcp*-segmentation"
        ));
        assert!(pattern_match(
            "tx-tcp-accecn-segmentation",
            "tx-tcp*-segmentation"
        ));
        assert!(!pattern_match(
            "tx-udp-segmentation",
            "tx-tcp*-segmentation"
        ));
        assert!(pattern_match("tx-scatter-gather", "tx-scatter-gather*"));
        assert!(pattern_match(
            "tx-scatter-gather-fraglist",
            "tx-scatter-gather*"
        ));
        assert!(pattern_match("tx-checksum-sctp", "tx-checksum-*"));
        assert!(!pattern_match("rx-gro-hw", "rx-gro"));
        // Every name is unique and has a state.
        for (i, (a, _)) in FEATURES.iter().enumerate() {
            assert!(FEATURES[i + 1..].iter().all(|(b, _)| a != b), "{a}");
        }
    }

    /// The guest's `features` reply, as `netvsc::GuestControl::features` builds it.
    fn reply(lro: Option<bool>, ipv6: bool, mut on: impl FnMut(&str) -> bool) -> Value {
        let mut f = Map::new();
        let mut put = |k: &str, fixed: bool| {
            let v = on(k) && !fixed;
            f.insert(k.into(), json!({"on": v, "fixed": fixed}));
        };
        put("rx_csum", false);
        put("tx_csum", false);
        put("tx_csum_ipv4", false);
        put("tx_csum_ipv6", !ipv6);
        put("sg", false);
        put("tso", false);
        put("tso_v4", false);
        put("tso_v6", !ipv6);
        put("gro", false);
        put("lro", lro.is_none());
        put("rxhash", false);
        if let Some(false) = lro {
            f["lro"]["on"] = false.into();
        }
        json!({"ifname": "eth0", "features": f})
    }

    fn azure() -> Value {
        reply(Some(true), true, |_| true)
    }

    fn ws2012r2() -> Value {
        reply(None, true, |_| true)
    }

    fn dev(v: &Value) -> NetDevice {
        NetDevice::from_reply(v).unwrap()
    }

    const TAIL: &str = "\
highdma: on [fixed]
rx-vlan-filter: off [fixed]
vlan-challenged: off [fixed]
tx-gso-robust: off [fixed]
tx-fcoe-segmentation: off [fixed]
tx-gre-segmentation: off [fixed]
tx-gre-csum-segmentation: off [fixed]
tx-ipxip4-segmentation: off [fixed]
tx-ipxip6-segmentation: off [fixed]
tx-udp_tnl-segmentation: off [fixed]
tx-udp_tnl-csum-segmentation: off [fixed]
tx-gso-partial: off [fixed]
tx-tunnel-remcsum-segmentation: off [fixed]
tx-sctp-segmentation: off [fixed]
tx-esp-segmentation: off [fixed]
tx-udp-segmentation: off [fixed]
tx-gso-list: off [fixed]
tx-nocache-copy: off
loopback: off [fixed]
rx-fcs: off [fixed]
rx-all: off [fixed]
tx-vlan-stag-hw-insert: off [fixed]
rx-vlan-stag-hw-parse: off [fixed]
rx-vlan-stag-filter: off [fixed]
l2-fwd-offload: off [fixed]
hw-tc-offload: off [fixed]
esp-hw-offload: off [fixed]
esp-tx-csum-hw-offload: off [fixed]
rx-udp_tunnel-port-offload: off [fixed]
tls-hw-tx-offload: off [fixed]
tls-hw-rx-offload: off [fixed]
rx-gro-hw: off [fixed]
tls-hw-record: off [fixed]
rx-gro-list: off
macsec-hw-offload: off [fixed]
rx-udp-gro-forwarding: off
hsr-tag-ins-offload: off [fixed]
hsr-tag-rm-offload: off [fixed]
hsr-fwd-offload: off [fixed]
hsr-dup-offload: off [fixed]
";

    #[test]
    fn show_features_azure() {
        let head = "\
Features for eth0:
rx-checksumming: on
tx-checksumming: on
\ttx-checksum-ipv4: on
\ttx-checksum-ip-generic: off [fixed]
\ttx-checksum-ipv6: on
\ttx-checksum-fcoe-crc: off [fixed]
\ttx-checksum-sctp: off [fixed]
scatter-gather: on
\ttx-scatter-gather: on
\ttx-scatter-gather-fraglist: off [fixed]
tcp-segmentation-offload: on
\ttx-tcp-segmentation: on
\ttx-tcp-ecn-segmentation: off [fixed]
\ttx-tcp-mangleid-segmentation: off
\ttx-tcp6-segmentation: on
\ttx-tcp-accecn-segmentation: off [fixed]
generic-segmentation-offload: on
generic-receive-offload: on
large-receive-offload: on
rx-vlan-offload: on [fixed]
tx-vlan-offload: on [fixed]
ntuple-filters: off [fixed]
receive-hashing: on
";
        assert_eq!(format_features(&dev(&azure())), format!("{head}{TAIL}"));
    }

    #[test]
    fn show_features_ws2012r2_no_ipv6_tx_offload_and_things_off() {
        // ws2012r2: no RSC; here also a host without IPv6 offloads, and TX checksum,
        // GRO and RX hash switched off.
        let r = reply(None, false, |k| {
            !matches!(k, "tx_csum" | "tx_csum_ipv4" | "gro" | "rxhash")
        });
        let head = "\
Features for eth0:
rx-checksumming: on
tx-checksumming: off
\ttx-checksum-ipv4: off
\ttx-checksum-ip-generic: off [fixed]
\ttx-checksum-ipv6: off [fixed]
\ttx-checksum-fcoe-crc: off [fixed]
\ttx-checksum-sctp: off [fixed]
scatter-gather: on
\ttx-scatter-gather: on
\ttx-scatter-gather-fraglist: off [fixed]
tcp-segmentation-offload: on
\ttx-tcp-segmentation: on
\ttx-tcp-ecn-segmentation: off [fixed]
\ttx-tcp-mangleid-segmentation: off
\ttx-tcp6-segmentation: off [fixed]
\ttx-tcp-accecn-segmentation: off [fixed]
generic-segmentation-offload: on
generic-receive-offload: off
large-receive-offload: off [fixed]
rx-vlan-offload: on [fixed]
tx-vlan-offload: on [fixed]
ntuple-filters: off [fixed]
receive-hashing: off
";
        assert_eq!(format_features(&dev(&r)), format!("{head}{TAIL}"));
        // The plain ws2012r2 profile: everything but LRO.
        let text = format_features(&dev(&ws2012r2()));
        assert!(text.contains("\nlarge-receive-offload: off [fixed]\n"));
        assert!(text.contains("\n\ttx-tcp6-segmentation: on\n"));
    }

    #[test]
    fn show_features_without_tso_fixes_mangleid() {
        let mut r = azure();
        for k in ["tso", "tso_v4", "tso_v6"] {
            r["features"][k] = json!({"on": false, "fixed": true});
        }
        let text = format_features(&dev(&r));
        assert!(text.contains(
            "tcp-segmentation-offload: off\n\ttx-tcp-segmentation: off [fixed]\n\
             \ttx-tcp-ecn-segmentation: off [fixed]\n\ttx-tcp-mangleid-segmentation: off [fixed]\n"
        ));
    }

    /// A veth pair's state, to check the layout against what ethtool 6.1 printed for it
    /// on Linux 6.18 (`ethtool -k veth0`, captured).
    fn veth() -> NetDevice {
        let on = "rx-checksum tx-checksum-ip-generic tx-checksum-sctp tx-scatter-gather \
                  tx-scatter-gather-fraglist tx-tcp-segmentation tx-tcp-ecn-segmentation \
                  tx-tcp-mangleid-segmentation tx-tcp6-segmentation tx-tcp-accecn-segmentation \
                  tx-generic-segmentation rx-vlan-hw-parse tx-vlan-hw-insert highdma \
                  tx-gre-segmentation tx-gre-csum-segmentation tx-ipxip4-segmentation \
                  tx-ipxip6-segmentation tx-udp_tnl-segmentation tx-udp_tnl-csum-segmentation \
                  tx-sctp-segmentation tx-udp-segmentation tx-gso-list tx-vlan-stag-hw-insert \
                  rx-vlan-stag-hw-parse";
        let changeable = format!("{on} rx-gro tx-nocache-copy rx-gro-list rx-udp-gro-forwarding");
        let on: Vec<&str> = on.split_whitespace().collect();
        let changeable: Vec<&str> = changeable.split_whitespace().collect();
        NetDevice {
            ifname: "veth0".into(),
            states: FEATURES
                .iter()
                .map(|&(name, src)| FeatureState {
                    active: on.contains(&name),
                    hw: changeable.contains(&name),
                    nochange: src == Src::NeverChange,
                    setter: None,
                })
                .collect(),
        }
    }

    #[test]
    fn layout_matches_real_ethtool_for_a_veth() {
        let expected = "\
Features for veth0:
rx-checksumming: on
tx-checksumming: on
\ttx-checksum-ipv4: off [fixed]
\ttx-checksum-ip-generic: on
\ttx-checksum-ipv6: off [fixed]
\ttx-checksum-fcoe-crc: off [fixed]
\ttx-checksum-sctp: on
scatter-gather: on
\ttx-scatter-gather: on
\ttx-scatter-gather-fraglist: on
tcp-segmentation-offload: on
\ttx-tcp-segmentation: on
\ttx-tcp-ecn-segmentation: on
\ttx-tcp-mangleid-segmentation: on
\ttx-tcp6-segmentation: on
\ttx-tcp-accecn-segmentation: on
generic-segmentation-offload: on
generic-receive-offload: off
large-receive-offload: off [fixed]
rx-vlan-offload: on
tx-vlan-offload: on
ntuple-filters: off [fixed]
receive-hashing: off [fixed]
highdma: on
rx-vlan-filter: off [fixed]
vlan-challenged: off [fixed]
tx-gso-robust: off [fixed]
tx-fcoe-segmentation: off [fixed]
tx-gre-segmentation: on
tx-gre-csum-segmentation: on
tx-ipxip4-segmentation: on
tx-ipxip6-segmentation: on
tx-udp_tnl-segmentation: on
tx-udp_tnl-csum-segmentation: on
tx-gso-partial: off [fixed]
tx-tunnel-remcsum-segmentation: off [fixed]
tx-sctp-segmentation: on
tx-esp-segmentation: off [fixed]
tx-udp-segmentation: on
tx-gso-list: on
tx-nocache-copy: off
loopback: off [fixed]
rx-fcs: off [fixed]
rx-all: off [fixed]
tx-vlan-stag-hw-insert: on
rx-vlan-stag-hw-parse: on
rx-vlan-stag-filter: off [fixed]
l2-fwd-offload: off [fixed]
hw-tc-offload: off [fixed]
esp-hw-offload: off [fixed]
esp-tx-csum-hw-offload: off [fixed]
rx-udp_tunnel-port-offload: off [fixed]
tls-hw-tx-offload: off [fixed]
tls-hw-rx-offload: off [fixed]
rx-gro-hw: off [fixed]
tls-hw-record: off [fixed]
rx-gro-list: off
macsec-hw-offload: off [fixed]
rx-udp-gro-forwarding: off
hsr-tag-ins-offload: off [fixed]
hsr-tag-rm-offload: off [fixed]
hsr-fwd-offload: off [fixed]
hsr-dup-offload: off [fixed]
";
        assert_eq!(format_features(&veth()), expected);
    }

    #[test]
    fn feature_changes_match_real_ethtool_for_a_veth() {
        let before = veth();
        let idx = |n: &str| FEATURES.iter().position(|&(f, _)| f == n).unwrap();
        // `ethtool -K veth0 tx off`: the kernel drops TSO and UDP GSO with the checksums.
        let req = resolve_request("veth0", &[("tx".into(), false)]).unwrap();
        let mut after = before.clone();
        for n in [
            "tx-checksum-ip-generic",
            "tx-tcp-segmentation",
            "tx-tcp-ecn-segmentation",
            "tx-tcp-mangleid-segmentation",
            "tx-tcp6-segmentation",
            "tx-udp-segmentation",
            "tx-checksum-sctp",
        ] {
            after.states[idx(n)].active = false;
        }
        assert_eq!(
            feature_changes(&before, &after, &req),
            Output::ok(
                "Actual changes:\n\
                 tx-checksum-ip-generic: off\n\
                 tx-tcp-segmentation: off [not requested]\n\
                 tx-tcp-ecn-segmentation: off [not requested]\n\
                 tx-tcp-mangleid-segmentation: off [not requested]\n\
                 tx-tcp6-segmentation: off [not requested]\n\
                 tx-udp-segmentation: off [not requested]\n\
                 tx-checksum-sctp: off\n"
                    .into()
            )
        );
        // `ethtool -K veth0 lro on`: fixed off.
        let req = resolve_request("veth0", &[("lro".into(), true)]).unwrap();
        assert_eq!(
            feature_changes(&before, &before, &req),
            Output {
                stdout: "Actual changes:\nrx-lro: off [requested on]\n".into(),
                stderr: "Could not change any device features\n".into(),
                code: 1
            }
        );
        // `ethtool -K veth0 gro on` / `lro off`: done, nothing to say.
        let req = resolve_request("veth0", &[("gro".into(), true)]).unwrap();
        let mut after = before.clone();
        after.states[idx("rx-gro")].active = true;
        assert_eq!(feature_changes(&before, &after, &req), Output::default());
        let req = resolve_request("veth0", &[("lro".into(), false)]).unwrap();
        assert_eq!(feature_changes(&before, &before, &req), Output::default());
        // `ethtool -K veth0` and `ethtool -K veth0 ufo on`: nothing requested.
        for changes in [vec![], vec![("ufo".to_owned(), true)]] {
            let req = resolve_request("veth0", &changes).unwrap();
            assert_eq!(
                feature_changes(&before, &before, &req),
                Output::fail("Could not change any device features\n", 1)
            );
        }
    }

    #[test]
    fn unknown_feature_names_report_the_kernel_offset() {
        // Offsets as ethtool 6.1 printed them for veth0 (same header size as eth0).
        let e = |changes: &[(&str, bool)]| {
            let c: Vec<(String, bool)> = changes.iter().map(|&(n, v)| (n.into(), v)).collect();
            resolve_request("eth0", &c).unwrap_err()
        };
        let msg = |off: usize| {
            Output::fail(
                format!(
                    "netlink error: bit name not found (offset {off})\n\
                     netlink error: Operation not supported\n"
                ),
                92,
            )
        };
        assert_eq!(e(&[("foo", true)]), msg(56));
        assert_eq!(e(&[("GRO", true)]), msg(56));
        assert_eq!(e(&[("gro", true), ("foo", true)]), msg(76));
        assert_eq!(e(&[("gro", false), ("foo", false)]), msg(72));
        assert_eq!(e(&[("tx", true), ("foo", false)]), msg(224));
        assert_eq!(e(&[("foo", true), ("vlan-challenged", true)]), msg(56));
        assert_eq!(
            e(&[("vlan-challenged", true)]),
            Output::fail(
                "netlink error: attempt to change non-ethtool features\n\
                 netlink error: Invalid argument\n",
                92
            )
        );
    }

    /// A guest that keeps its features and applies `set_features` as the real one does.
    struct FakeGuest {
        features: Value,
        info: Value,
        stats: Value,
        sets: Vec<Value>,
    }

    impl FakeGuest {
        fn new(features: Value) -> Self {
            FakeGuest {
                features,
                info: json!({
                    "driver": "hv_netvsc", "version": "0.1.0", "firmware": "N/A",
                    "bus_info": "f8615163-df3e-46c5-913f-f2d2f965ed0e",
                    "nvsp_version": "6.1", "ndis_version": "6.30", "vmbus_version": "5.3",
                    "host_profile": "azure", "ifname": "eth0"
                }),
                stats: json!({"tx_scattered": 0, "tx_no_memory": 2, "rx_comp_busy": 12345678901u64}),
                sets: Vec::new(),
            }
        }
    }

    impl Guest for FakeGuest {
        fn request(&mut self, req: &Value) -> Result<Value> {
            match req["cmd"].as_str() {
                Some("features") => Ok(self.features.clone()),
                Some("info") => Ok(self.info.clone()),
                Some("stats") => Ok(self.stats.clone()),
                Some("set_features") => {
                    self.sets.push(req["set"].clone());
                    let mut changed = Map::new();
                    for (k, v) in req["set"].as_object().unwrap() {
                        let f = &mut self.features["features"][k];
                        if f["fixed"] == true {
                            bail!("{k} is fixed");
                        }
                        let on = v.as_bool().unwrap();
                        f["on"] = on.into();
                        let fam: &[&str] = match k.as_str() {
                            "tx_csum" => &["tx_csum_ipv4", "tx_csum_ipv6"],
                            "tso" => &["tso_v4", "tso_v6"],
                            _ => &[],
                        };
                        for m in fam {
                            let f = &mut self.features["features"][*m];
                            if f["fixed"] == false {
                                f["on"] = on.into();
                            }
                        }
                        changed.insert(k.clone(), on.into());
                    }
                    Ok(json!({ "changed": changed }))
                }
                _ => bail!("unknown command"),
            }
        }
    }

    fn exec(g: &mut FakeGuest, s: &str) -> Output {
        execute(g, &p(s).unwrap()).unwrap()
    }

    #[test]
    fn set_features_end_to_end() {
        let mut g = FakeGuest::new(azure());
        // Short and long names; already-set features are not sent.
        assert_eq!(exec(&mut g, "-K eth0 lro off gro on"), Output::default());
        assert_eq!(
            exec(
                &mut g,
                "-K eth0 large-receive-offload on rx-checksumming off"
            ),
            Output::default()
        );
        assert_eq!(
            g.sets,
            vec![
                json!({"lro": false}),
                json!({"lro": true, "rx_csum": false})
            ]
        );
        assert_eq!(g.features["features"]["rx_csum"]["on"], false);
        // Groups go out as the guest's group switch.
        g.sets.clear();
        assert_eq!(exec(&mut g, "-K eth0 tso off"), Output::default());
        // What could not be done is shown, with everything that changed.
        assert_eq!(
            exec(&mut g, "-K eth0 tcp-segmentation-offload on"),
            Output {
                stdout: "Actual changes:\n\
                     tx-tcp-segmentation: on\n\
                     tx-tcp-ecn-segmentation: off [requested on]\n\
                     tx-tcp-mangleid-segmentation: off [requested on]\n\
                     tx-tcp6-segmentation: on\n\
                     tx-tcp-accecn-segmentation: off [requested on]\n"
                    .into(),
                ..Default::default()
            }
        );
        assert_eq!(
            exec(&mut g, "-K eth0 tx off sg off rxhash off gso off"),
            Output {
                stdout: "Actual changes:\n\
                     tx-scatter-gather: off\n\
                     tx-checksum-ipv4: off\n\
                     tx-checksum-ipv6: off\n\
                     tx-generic-segmentation: on [requested off]\n\
                     rx-hashing: off\n"
                    .into(),
                ..Default::default()
            }
        );
        assert_eq!(
            g.sets,
            vec![
                json!({"tso": false}),
                json!({"tso": true}),
                json!({"sg": false, "rxhash": false, "tx_csum": false})
            ]
        );
        // One family alone cannot be switched.
        let out = exec(&mut g, "-K eth0 tx-checksum-ipv4 on");
        assert_eq!(out.code, EXIT_NOT_SUPPORTED);
        assert_eq!(
            out.stderr,
            "hvnet ethtool: tx-checksum-ipv4 and tx-checksum-ipv6 can only be switched together \
             for now (use 'tx on|off')\n"
        );
        assert_eq!(
            exec(&mut g, "-K eth0 tx-checksum-ipv4 on tx-checksum-ipv6 on"),
            Output::default()
        );
        assert_eq!(g.features["features"]["tx_csum"]["on"], true);
    }

    #[test]
    fn set_fixed_features() {
        let mut g = FakeGuest::new(ws2012r2());
        assert_eq!(
            exec(&mut g, "-K eth0 lro on"),
            Output {
                stdout: "Actual changes:\nrx-lro: off [requested on]\n".into(),
                stderr: "Could not change any device features\n".into(),
                code: 1
            }
        );
        assert_eq!(exec(&mut g, "-K eth0 lro off"), Output::default());
        assert_eq!(
            exec(&mut g, "-K eth0 rxvlan off"),
            Output {
                stdout: "Actual changes:\nrx-vlan-hw-parse: on [requested off]\n".into(),
                stderr: "Could not change any device features\n".into(),
                code: 1
            }
        );
        assert_eq!(
            exec(&mut g, "-K eth0 tx on"),
            Output::ok(
                "Actual changes:\n\
                 tx-checksum-ip-generic: off [requested on]\n\
                 tx-checksum-fcoe-crc: off [requested on]\n\
                 tx-checksum-sctp: off [requested on]\n"
                    .into()
            )
        );
        assert!(g.sets.is_empty(), "{:?}", g.sets);
    }

    #[test]
    fn guest_side_changes_are_shown() {
        // A guest that also drops TSO when scatter-gather goes off (as Linux does).
        struct Dropping(FakeGuest);
        impl Guest for Dropping {
            fn request(&mut self, req: &Value) -> Result<Value> {
                let r = self.0.request(req)?;
                if req["cmd"] == "set_features" && req["set"]["sg"] == false {
                    for k in ["tso", "tso_v4", "tso_v6"] {
                        self.0.features["features"][k]["on"] = false.into();
                    }
                }
                Ok(r)
            }
        }
        let mut g = Dropping(FakeGuest::new(azure()));
        let out = execute(&mut g, &p("-K eth0 sg off").unwrap()).unwrap();
        assert_eq!(
            out,
            Output::ok(
                "Actual changes:\n\
                 tx-scatter-gather: off\n\
                 tx-tcp-segmentation: off [not requested]\n\
                 tx-tcp6-segmentation: off [not requested]\n"
                    .into()
            )
        );
    }

    #[test]
    fn wrong_device() {
        let mut g = FakeGuest::new(azure());
        let netlink =
            "netlink error: no device matches name (offset 24)\nnetlink error: No such device\n";
        assert_eq!(exec(&mut g, "-k eth1"), Output::fail(netlink, 1));
        assert_eq!(exec(&mut g, "-K eth1 gro off"), Output::fail(netlink, 92));
        assert_eq!(exec(&mut g, "-K eth1 bogus off"), Output::fail(netlink, 92));
        assert_eq!(
            exec(&mut g, "-i eth1"),
            Output::fail("Cannot get driver information: No such device\n", 71)
        );
        assert_eq!(
            exec(&mut g, "-S eth1"),
            Output::fail("Cannot get stats strings information: No such device\n", 96)
        );
        assert_eq!(exec(&mut g, "-i aaaaaaaaaaaaaaaa").code, 1);
        assert_eq!(exec(&mut g, "-S aaaaaaaaaaaaaaaa").code, 1);
        assert!(g.sets.is_empty());
    }

    #[test]
    fn driver_info() {
        let mut g = FakeGuest::new(azure());
        assert_eq!(
            exec(&mut g, "-i eth0"),
            Output::ok(
                "driver: hv_netvsc\n\
                 version: 0.1.0\n\
                 firmware-version: N/A\n\
                 expansion-rom-version: \n\
                 bus-info: f8615163-df3e-46c5-913f-f2d2f96\n\
                 supports-statistics: yes\n\
                 supports-test: no\n\
                 supports-eeprom-access: no\n\
                 supports-register-dump: no\n\
                 supports-priv-flags: no\n\
                 nvsp-version: 6.1\n\
                 ndis-version: 6.30\n\
                 vmbus-version: 5.3\n\
                 host-profile: azure\n"
                    .into()
            )
        );
    }

    #[test]
    fn statistics() {
        let mut g = FakeGuest::new(azure());
        assert_eq!(
            exec(&mut g, "-S eth0"),
            Output::ok(
                "NIC statistics:\n     tx_scattered: 0\n     tx_no_memory: 2\n     \
                 rx_comp_busy: 12345678901\n"
                    .into()
            )
        );
        g.stats = json!({});
        assert_eq!(
            exec(&mut g, "-S eth0"),
            Output::fail("no stats available\n", 94)
        );
        g.stats = json!({"x": -1});
        assert!(execute(&mut g, &p("-S eth0").unwrap()).is_err());
    }

    #[test]
    fn show_features_json() {
        let mut g = FakeGuest::new(azure());
        let out = exec(&mut g, "--json -k eth0");
        assert_eq!(out.code, 0);
        let start = "[ {\n        \"ifname\": \"eth0\",\n        \"rx-checksumming\": {\n            \
                     \"active\": true,\n            \"fixed\": false,\n            \"requested\": true\n        },\n        \
                     \"tx-checksumming\": {\n            \"active\": true,\n            \"fixed\": null,\n            \
                     \"requested\": null\n        },\n        \"tx-checksum-ipv4\": {\n";
        assert!(out.stdout.starts_with(start), "{}", out.stdout);
        assert!(out.stdout.ends_with(
            "        \"hsr-dup-offload\": {\n            \"active\": false,\n            \
             \"fixed\": true,\n            \"requested\": false\n        }\n    } ]\n"
        ));
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v[0]["large-receive-offload"]["active"], true);
        assert_eq!(v[0].as_object().unwrap().len(), 64);
    }

    #[test]
    fn vm_discovery() {
        let base = std::env::temp_dir().join(format!("hvnet-ethtool-test-{}", std::process::id()));
        let lab = base.join("lab");
        std::fs::create_dir_all(&lab).unwrap();
        assert!(
            only_vm(&base, "lab")
                .unwrap_err()
                .to_string()
                .contains("no guest")
        );
        std::fs::write(lab.join("host.ctl"), "").unwrap();
        std::fs::write(lab.join("vm2.vmbus"), "").unwrap();
        std::fs::write(lab.join("vm2.ctl"), "").unwrap();
        assert_eq!(only_vm(&base, "lab").unwrap(), "vm2");
        std::fs::write(lab.join("vm1.ctl"), "").unwrap();
        let e = only_vm(&base, "lab").unwrap_err().to_string();
        assert!(e.contains("(vm1, vm2): choose one with --vm NAME"), "{e}");
        assert!(only_vm(&base, "nolab").is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
