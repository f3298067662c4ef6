//! `hvnet ethtool`: ethtool for the synthetic NIC of a running `hvnet guest`.
//!
//! It takes ethtool's own arguments (`-k eth0`, `-K eth0 lro off`, `-i eth0`,
//! `-S eth0`, `-l`/`-L`, `-g`/`-G`, `-x`/`-X`, `-n`/`-N`), asks the guest over its control
//! socket and prints what the real `ethtool` prints for an `hv_netvsc` NIC in the same
//! state: the same lines, the same messages on standard error and the same exit status.
//! The reference is ethtool 6.1 talking netlink to a Linux 6.18 kernel: the list of netdev
//! features `-k` shows is the kernel's, so a different kernel shows a few names more or
//! fewer (6.18 has `tx-tcp-accecn-segmentation` and no longer has `tx-lockless`,
//! `netns-local` and `fcoe-mtu`). ethtool 6.1 uses netlink for `-k/-K`, `-l/-L` and
//! `-g/-G` (errors are the kernel's extended-ack messages, with the attribute's offset in
//! ethtool's request) and the ioctl for `-i`, `-S`, `-x/-X` and `-n/-N` (errors are
//! `perror()` lines); the checks the kernel's ethtool core makes before it calls the
//! driver (limits, at least one channel, the indirection table's entries, RSS contexts)
//! are made here, in the kernel's order, and what reaches hv_netvsc goes to the guest.
//!
//! What the guest answers (one JSON object per request, see `guest_cmd.rs`):
//! `info` (driver, version, bus, protocol versions, ifname), `features` (ifname and, per
//! feature, `on` and `fixed`), `set_features` (`{"set": {feature: bool}}`), `stats`
//! (counter name → value, in the order to print), `channels` (`max_combined`, `combined`),
//! `set_channels` (`combined`), `rings` (`rx_max`, `tx_max`, `rx`, `tx`), `set_rings`
//! (`rx` and/or `tx`), `rss` (`key` in hex, `table`, `queues`; an error starting with
//! "single queue" when the NIC has no RSS), `set_rss` (`table` and/or `key`), `flow_hash`
//! (`proto` → `fields`, `sd` or `sdfn`) and `set_flow_hash` (`proto`, `fields`). A request
//! the guest refuses is shown as the errno hv_netvsc returns for it (EINVAL, or
//! EOPNOTSUPP for the flow hash), and the guest's reason is logged as a warning.
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
    /// `-l DEVNAME`.
    ShowChannels {
        dev: String,
    },
    /// `-L DEVNAME [rx N] [tx N] [other N] [combined N]`, in the order given.
    SetChannels {
        dev: String,
        params: Vec<(ChannelParam, u32)>,
    },
    /// `-g DEVNAME`.
    ShowRings {
        dev: String,
    },
    /// `-G DEVNAME [rx N] [rx-mini N] [rx-jumbo N] [tx N] [rx-buf-len N] [cqe-size N]
    /// [tx-push on|off]`, in the order given (`tx-push` as 1/0).
    SetRings {
        dev: String,
        params: Vec<(RingParam, u32)>,
    },
    /// `-x DEVNAME [context N]` (0: the default context).
    ShowRxfh {
        dev: String,
        context: u32,
    },
    /// `-X DEVNAME ...`.
    SetRxfh {
        dev: String,
        req: RxfhRequest,
    },
    /// `-n DEVNAME [rx-flow-hash FLOW [context N] | rule N]`.
    ShowNfc {
        dev: String,
        what: NfcShow,
    },
    /// `-N DEVNAME rx-flow-hash FLOW FIELDS [context N] | delete N`.
    SetNfc {
        dev: String,
        what: NfcSet,
    },
}

/// What an ethtool option does here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    ShowFeatures,
    SetFeatures,
    Driver,
    Stats,
    ShowChannels,
    SetChannels,
    ShowRings,
    SetRings,
    ShowRxfh,
    SetRxfh,
    ShowNfc,
    SetNfc,
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
    (&["-g", "--show-ring"], Op::ShowRings),
    (&["-G", "--set-ring"], Op::SetRings),
    (&["-d", "--register-dump"], Op::Unsupported),
    (&["-e", "--eeprom-dump"], Op::Unsupported),
    (&["-E", "--change-eeprom"], Op::Unsupported),
    (&["-r", "--negotiate"], Op::Unsupported),
    (&["-p", "--identify"], Op::Unsupported),
    (&["-t", "--test"], Op::Unsupported),
    (&["--phy-statistics"], Op::Unsupported),
    (&["-n", "-u", "--show-nfc", "--show-ntuple"], Op::ShowNfc),
    (&["-N", "-U", "--config-nfc", "--config-ntuple"], Op::SetNfc),
    (&["-T", "--show-time-stamping"], Op::Unsupported),
    (&["-x", "--show-rxfh-indir", "--show-rxfh"], Op::ShowRxfh),
    (&["-X", "--set-rxfh-indir", "--rxfh"], Op::SetRxfh),
    (&["-f", "--flash"], Op::Unsupported),
    (&["-P", "--show-permaddr"], Op::Unsupported),
    (&["-w", "--get-dump"], Op::Unsupported),
    (&["-W", "--set-dump"], Op::Unsupported),
    (&["-l", "--show-channels"], Op::ShowChannels),
    (&["-L", "--set-channels"], Op::SetChannels),
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
    // ethtool's netlink_run_handler(), before anything else.
    if dev.len() >= ALTIFNAMSIZ {
        return Err(Output::fail(
            format!(
                "device name '{dev}' longer than {} characters\n",
                ALTIFNAMSIZ - 1
            ),
            1,
        ));
    }
    // Ioctl-only options: ethtool gives up on a long name before it reads the arguments.
    if matches!(op, Op::ShowRxfh | Op::SetRxfh | Op::ShowNfc | Op::SetNfc) && dev.len() >= IFNAMSIZ
    {
        return Err(Output::fail(
            format!(
                "ethtool netlink support for subcommand missing, device name longer than {} \
                 not supported\n",
                IFNAMSIZ - 1
            ),
            1,
        ));
    }
    match op {
        Op::ShowChannels | Op::ShowRings => match rest.first() {
            Some(p) => Err(Output::fail(
                format!("ethtool: unexpected parameter '{p}'\n"),
                1,
            )),
            None if op == Op::ShowChannels => Ok(Command::ShowChannels { dev }),
            None => Ok(Command::ShowRings { dev }),
        },
        Op::SetChannels => Ok(Command::SetChannels {
            params: nl_params("-L", rest, CHANNEL_PARAMS)?,
            dev,
        }),
        Op::SetRings => Ok(Command::SetRings {
            params: nl_params("-G", rest, RING_PARAMS)?,
            dev,
        }),
        Op::ShowRxfh => Ok(Command::ShowRxfh {
            context: parse_grxfh(rest)?,
            dev,
        }),
        Op::SetRxfh => Ok(Command::SetRxfh {
            req: parse_srxfh(rest)?,
            dev,
        }),
        Op::ShowNfc => Ok(Command::ShowNfc {
            what: parse_grxclass(rest)?,
            dev,
        }),
        Op::SetNfc => Ok(Command::SetNfc {
            what: parse_srxclass(rest)?,
            dev,
        }),
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
         \t-g|--show-ring DEVNAME\tQuery RX/TX ring parameters\n\
         \t-G|--set-ring DEVNAME\tSet RX/TX ring parameters\n\
         \t\t[ rx N ] [ rx-mini N ] [ rx-jumbo N ] [ tx N ] [ rx-buf-len N ] [ cqe-size N ] \
         [ tx-push on|off ]\n\
         \t-n|-u|--show-nfc|--show-ntuple DEVNAME\tShow Rx network flow classification options \
         or rules\n\
         \t\t[ rx-flow-hash tcp4|udp4|ah4|esp4|sctp4|tcp6|udp6|ah6|esp6|sctp6|ether \
         [context %d] | rule %d ]\n\
         \t-N|-U|--config-nfc|--config-ntuple DEVNAME\tConfigure Rx network flow \
         classification options or rules\n\
         \t\trx-flow-hash tcp4|udp4|ah4|esp4|sctp4|tcp6|udp6|ah6|esp6|sctp6|ether \
         m|v|t|s|d|f|n|r... [context %d] | delete %d\n\
         \t-x|--show-rxfh-indir|--show-rxfh DEVNAME\tShow Rx flow hash indirection table \
         and/or RSS hash key\n\
         \t\t[ context %d ]\n\
         \t-X|--set-rxfh-indir|--rxfh DEVNAME\tSet Rx flow hash indirection table and/or \
         RSS hash key\n\
         \t\t[ context %d|new ] [ equal N | weight W0 W1 ... | default ] [ start N ]\n\
         \t\t[ hkey %x:%x:%x:%x:%x:.... ] [ hfunc FUNC ] [ delete ]\n\
         \t-l|--show-channels DEVNAME\tQuery Channels\n\
         \t-L|--set-channels DEVNAME\tSet Channels\n\
         \t\t[ rx N ] [ tx N ] [ other N ] [ combined N ]\n\
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
         hv_netvsc has combined channels only, no RX mini/jumbo rings and no classification \
         rules; -N flow-type is not supported yet.\n\
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
// Numbers and names as ethtool reads them

/// Linux's `IFNAMSIZ` (with the NUL): ioctls take shorter names only.
const IFNAMSIZ: usize = 16;
/// Linux's `ALTIFNAMSIZ` (with the NUL): ethtool refuses longer names outright.
const ALTIFNAMSIZ: usize = 128;

/// strerror() of the errnos ethtool reports here.
const ENODEV: &str = "No such device";
const EINVAL: &str = "Invalid argument";
const EOPNOTSUPP: &str = "Operation not supported";
const ERANGE: &str = "Numerical result out of range";

/// C's number syntax for `strtoull`/`strtoll(s, &end, base)` (base 0, 10 or 16) when
/// all of `s` must be used: (minus sign, magnitude, saturated), or None. An empty `s` is
/// 0, as C finds no digits and stops at the end.
fn c_number(s: &str, base: u32) -> Option<(bool, u128)> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        i += 1;
    }
    let mut neg = false;
    if i < b.len() && matches!(b[i], b'+' | b'-') {
        neg = b[i] == b'-';
        i += 1;
    }
    let hex_prefix = b.get(i) == Some(&b'0')
        && matches!(b.get(i + 1), Some(b'x' | b'X'))
        && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
    let base = match base {
        0 | 16 if hex_prefix => {
            i += 2;
            16
        }
        0 if b.get(i) == Some(&b'0') => 8,
        0 => 10,
        b => b,
    };
    let start = i;
    let mut v: u128 = 0;
    while let Some(d) = b.get(i).and_then(|&c| char::from(c).to_digit(base)) {
        v = v.saturating_mul(base.into()).saturating_add(d.into());
        i += 1;
    }
    if i == start {
        return s.is_empty().then_some((false, 0));
    }
    (i == b.len()).then_some((neg, v))
}

/// `strtoull(s, &end, base)` over all of `s`, None on ERANGE (a minus sign negates
/// modulo 2^64, as in C).
fn c_strtoull(s: &str, base: u32) -> Option<u64> {
    let (neg, mag) = c_number(s, base)?;
    let v = u64::try_from(mag).ok()?;
    Some(if neg { v.wrapping_neg() } else { v })
}

/// `strtoll(s, &end, base)` over all of `s`, None on ERANGE.
fn c_strtoll(s: &str, base: u32) -> Option<i64> {
    let (neg, mag) = c_number(s, base)?;
    let v = i128::try_from(mag).ok()?;
    i64::try_from(if neg { -v } else { v }).ok()
}

/// ethtool's `get_uint_range(s, 0, max)` (None: it exits with "bad command line").
fn get_uint_range(s: &str, max: u64) -> Option<u64> {
    c_strtoull(s, 0).filter(|&v| v <= max)
}

/// ethtool's `get_u32(s, 0)`.
fn get_u32(s: &str) -> Option<u32> {
    get_uint_range(s, u32::MAX.into()).and_then(|v| u32::try_from(v).ok())
}

/// ethtool's `get_int_range(s, 0, min, max)`.
fn get_int_range(s: &str, min: i64, max: i64) -> Option<i64> {
    c_strtoll(s, 0).filter(|v| (min..=max).contains(v))
}

/// The netlink parser's `parse_u32()`: `0x` then hex, else decimal.
fn nl_u32(s: &str) -> Option<u32> {
    let (digits, base) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => (h, 16),
        None => (s, 10),
    };
    if digits.is_empty() {
        return None;
    }
    c_strtoull(digits, base).and_then(|v| u32::try_from(v).ok())
}

// ---------------------------------------------------------------------------------------
// Channels and rings (netlink)

/// `-L`'s parameters, indexing `[rx, tx, other, combined]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChannelParam {
    Rx,
    Tx,
    Other,
    Combined,
}

/// `-G`'s parameters (ethtool 6.1's `sring_params`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RingParam {
    Rx,
    RxMini,
    RxJumbo,
    Tx,
    RxBufLen,
    CqeSize,
    TxPush,
}

/// How ethtool's netlink parser reads a parameter's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NlValue {
    /// `nl_parse_direct_u32`.
    U32,
    /// `nl_parse_u8bool`: `on` or `off`.
    Bool,
}

const CHANNEL_PARAMS: &[(&str, ChannelParam, NlValue)] = &[
    ("rx", ChannelParam::Rx, NlValue::U32),
    ("tx", ChannelParam::Tx, NlValue::U32),
    ("other", ChannelParam::Other, NlValue::U32),
    ("combined", ChannelParam::Combined, NlValue::U32),
];

const RING_PARAMS: &[(&str, RingParam, NlValue)] = &[
    ("rx", RingParam::Rx, NlValue::U32),
    ("rx-mini", RingParam::RxMini, NlValue::U32),
    ("rx-jumbo", RingParam::RxJumbo, NlValue::U32),
    ("tx", RingParam::Tx, NlValue::U32),
    ("rx-buf-len", RingParam::RxBufLen, NlValue::U32),
    ("cqe-size", RingParam::CqeSize, NlValue::U32),
    ("tx-push", RingParam::TxPush, NlValue::Bool),
];

/// ethtool's `nl_parser()` for a SET request: NAME VALUE pairs, each name once, in the
/// order given (which is the order of the attributes in the request).
fn nl_params<P: Copy + PartialEq>(
    cmd: &str,
    args: &[String],
    table: &[(&str, P, NlValue)],
) -> Result<Vec<(P, u32)>, Output> {
    let err = |msg: String| Err(Output::fail(format!("ethtool ({cmd}): {msg}\n"), 1));
    let mut params: Vec<(P, u32)> = Vec::new();
    let mut i = 0;
    while let Some(name) = args.get(i) {
        let Some(&(_, p, kind)) = table.iter().find(|(n, _, _)| n == name) else {
            return err(format!("unknown parameter '{name}'"));
        };
        if params.iter().any(|&(q, _)| q == p) {
            return err(format!("duplicate parameter '{name}'"));
        }
        let Some(value) = args.get(i + 1) else {
            return err(format!("no value for parameter '{name}'"));
        };
        let v = match kind {
            NlValue::U32 => nl_u32(value),
            NlValue::Bool => match value.as_str() {
                "on" => Some(1),
                "off" => Some(0),
                _ => None,
            },
        };
        let Some(v) = v else {
            return err(format!("invalid value '{value}' for parameter '{name}'"));
        };
        params.push((p, v));
        i += 2;
    }
    Ok(params)
}

/// Offset in ethtool's SET request of its `k`-th parameter attribute: the netlink and
/// generic netlink headers, the request header nest holding the device name, then 8
/// bytes per (u32 or u8) attribute.
fn nl_attr_offset(dev: &str, k: usize) -> usize {
    20 + 4 + nla_size(dev.len() + 1) + 8 * k
}

/// Where parameter `p` is in the request, as `nl_attr_offset`.
fn param_offset<P: PartialEq>(dev: &str, params: &[(P, u32)], p: P) -> Option<usize> {
    params
        .iter()
        .position(|(q, _)| *q == p)
        .map(|k| nl_attr_offset(dev, k))
}

/// ethtool's report of a netlink error: the kernel's message, with the offending
/// attribute's offset if it named one, then the errno.
fn netlink_error(msg: Option<&str>, offset: Option<usize>, errno: &str, code: i32) -> Output {
    let mut e = String::new();
    match (msg, offset) {
        (Some(m), Some(o)) => {
            let _ = writeln!(e, "netlink error: {m} (offset {o})");
        }
        (Some(m), None) => {
            let _ = writeln!(e, "netlink error: {m}");
        }
        (None, _) => {}
    }
    let _ = writeln!(e, "netlink error: {errno}");
    Output::fail(e, code)
}

/// A u32 field of a guest reply.
fn reply_u32(reply: &Value, key: &str, what: &str) -> Result<u32> {
    reply
        .get(key)
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .with_context(|| format!("the guest's {what} reply has no u32 {key}: {reply}"))
}

/// hv_netvsc's channels: combined only (`max_chn`, `num_chn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Channels {
    max_combined: u32,
    combined: u32,
}

impl Channels {
    fn from_reply(reply: &Value) -> Result<Channels> {
        Ok(Channels {
            max_combined: reply_u32(reply, "max_combined", "channels")?,
            combined: reply_u32(reply, "combined", "channels")?,
        })
    }
}

/// A `show_u32()` line: the value, or `n/a` when the kernel leaves the attribute out
/// (which it does for a zero maximum, and then for the current count too).
fn show_u32(out: &mut String, label: &str, v: Option<u32>) {
    let _ = match v {
        Some(v) => writeln!(out, "{label}{v}"),
        None => writeln!(out, "{label}n/a"),
    };
}

/// `ethtool -l DEVNAME`.
fn format_channels(ifname: &str, ch: &Channels) -> String {
    let combined = |v: u32| (ch.max_combined != 0).then_some(v);
    let mut out = format!("Channel parameters for {ifname}:\nPre-set maximums:\n");
    show_u32(&mut out, "RX:\t\t", None);
    show_u32(&mut out, "TX:\t\t", None);
    show_u32(&mut out, "Other:\t\t", None);
    show_u32(&mut out, "Combined:\t", combined(ch.max_combined));
    out.push_str("Current hardware settings:\n");
    show_u32(&mut out, "RX:\t\t", None);
    show_u32(&mut out, "TX:\t\t", None);
    show_u32(&mut out, "Other:\t\t", None);
    show_u32(&mut out, "Combined:\t", combined(ch.combined));
    out
}

/// The kernel's CHANNELS_SET checks (`ethnl_set_channels()`) for hv_netvsc, which has
/// no separate RX, TX or other channels: the new combined count for the driver, None if
/// nothing changes, or ethtool's report of the kernel's refusal.
fn channels_check(
    dev: &str,
    params: &[(ChannelParam, u32)],
    ch: &Channels,
) -> Result<Option<u32>, Output> {
    use ChannelParam::*;
    let max = [0, 0, 0, ch.max_combined];
    let mut count = [0, 0, 0, ch.combined];
    let mut changed = false;
    let mut combined_changed = false;
    for &(p, v) in params {
        if count[p as usize] != v {
            count[p as usize] = v;
            changed = true;
            combined_changed |= p == Combined;
        }
    }
    if !changed {
        return Ok(None);
    }
    let offset = |p| param_offset(dev, params, p);
    if let Some(p) = [Rx, Tx, Other, Combined]
        .into_iter()
        .find(|&p| count[p as usize] > max[p as usize])
    {
        return Err(netlink_error(
            Some("requested channel count exceeds maximum"),
            offset(p),
            EINVAL,
            1,
        ));
    }
    let none = if count[Combined as usize] == 0 && count[Rx as usize] == 0 {
        Some(Rx)
    } else if count[Combined as usize] == 0 && count[Tx as usize] == 0 {
        Some(Tx)
    } else {
        None
    };
    if let Some(p) = none {
        let p = if combined_changed { Combined } else { p };
        return Err(netlink_error(
            Some("requested channel counts would result in no RX or TX channel being configured"),
            offset(p),
            EINVAL,
            1,
        ));
    }
    Ok(Some(count[Combined as usize]))
}

/// hv_netvsc's "rings": receive and send buffer sections (PROTOCOL.md §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rings {
    rx_max: u32,
    tx_max: u32,
    rx: u32,
    tx: u32,
}

impl Rings {
    fn from_reply(reply: &Value) -> Result<Rings> {
        Ok(Rings {
            rx_max: reply_u32(reply, "rx_max", "rings")?,
            tx_max: reply_u32(reply, "tx_max", "rings")?,
            rx: reply_u32(reply, "rx", "rings")?,
            tx: reply_u32(reply, "tx", "rings")?,
        })
    }
}

/// `ethtool -g DEVNAME` (ethtool 6.1's layout; no RX mini/jumbo rings, buffer length,
/// CQE size or TCP data split, TX push off).
fn format_rings(ifname: &str, r: &Rings) -> String {
    let rx = |v: u32| (r.rx_max != 0).then_some(v);
    let tx = |v: u32| (r.tx_max != 0).then_some(v);
    let mut out = format!("Ring parameters for {ifname}:\nPre-set maximums:\n");
    show_u32(&mut out, "RX:\t\t", rx(r.rx_max));
    show_u32(&mut out, "RX Mini:\t", None);
    show_u32(&mut out, "RX Jumbo:\t", None);
    show_u32(&mut out, "TX:\t\t", tx(r.tx_max));
    out.push_str("Current hardware settings:\n");
    show_u32(&mut out, "RX:\t\t", rx(r.rx));
    show_u32(&mut out, "RX Mini:\t", None);
    show_u32(&mut out, "RX Jumbo:\t", None);
    show_u32(&mut out, "TX:\t\t", tx(r.tx));
    show_u32(&mut out, "RX Buf Len:\t\t", None);
    show_u32(&mut out, "CQE Size:\t\t", None);
    out.push_str("TX Push:\toff\nTCP data split:\tn/a\n");
    out
}

/// ethtool's exit status for a failed `-G`.
const EXIT_SRING: i32 = 81;

/// The kernel's netlink policy for RINGS_SET (checked before the device is looked up):
/// `rx-buf-len` and `cqe-size` are at least 1.
fn rings_policy(dev: &str, params: &[(RingParam, u32)]) -> Result<(), Output> {
    match params
        .iter()
        .position(|&(p, v)| matches!(p, RingParam::RxBufLen | RingParam::CqeSize) && v == 0)
    {
        Some(k) => Err(netlink_error(
            Some("integer out of range"),
            Some(nl_attr_offset(dev, k)),
            ERANGE,
            EXIT_SRING,
        )),
        None => Ok(()),
    }
}

/// The kernel's RINGS_SET checks (`ethnl_set_rings_validate()`, `ethnl_set_rings()`)
/// for hv_netvsc: the guest's `set_rings` request, None if nothing changes, or ethtool's
/// report of the kernel's refusal. The driver clamps to [10, max] itself.
fn rings_check(dev: &str, params: &[(RingParam, u32)], r: &Rings) -> Result<Option<Value>, Output> {
    use RingParam::*;
    let offset = |p| param_offset(dev, params, p);
    for (p, msg) in [
        (RxBufLen, "setting rx buf len not supported"),
        (CqeSize, "setting cqe size not supported"),
        (TxPush, "setting tx push not supported"),
    ] {
        if let Some(o) = offset(p) {
            return Err(netlink_error(Some(msg), Some(o), EOPNOTSUPP, EXIT_SRING));
        }
    }
    // [rx, rx-mini, rx-jumbo, tx]: current and maximum.
    let mut count = [r.rx, 0, 0, r.tx];
    let max = [r.rx_max, 0, 0, r.tx_max];
    let slot = |p| match p {
        Rx => 0,
        RxMini => 1,
        RxJumbo => 2,
        _ => 3,
    };
    let mut changed = false;
    for &(p, v) in params {
        if count[slot(p)] != v {
            count[slot(p)] = v;
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    if let Some(p) = [Rx, RxMini, RxJumbo, Tx]
        .into_iter()
        .find(|&p| count[slot(p)] > max[slot(p)])
    {
        return Err(netlink_error(
            Some("requested ring size exceeds maximum"),
            offset(p),
            EINVAL,
            EXIT_SRING,
        ));
    }
    let mut req = json!({"cmd": "set_rings"});
    for &(p, v) in params {
        match p {
            Rx => req["rx"] = v.into(),
            Tx => req["tx"] = v.into(),
            _ => {}
        }
    }
    Ok(Some(req))
}

// ---------------------------------------------------------------------------------------
// RSS and flow hashing (ioctl)

/// hv_netvsc's RSS key length (`NETVSC_HASH_KEYLEN`).
const RSS_KEY_LEN: usize = 40;
/// The kernel's RSS hash function names (`ETH_SS_RSS_HASH_FUNCS`), by bit.
const RSS_HASH_FUNCS: [&str; 3] = ["toeplitz", "xor", "crc32"];
/// `ETH_RSS_HASH_TOP`: what hv_netvsc reports and accepts.
const ETH_RSS_HASH_TOP: u32 = 1;
/// `ETH_RXFH_CONTEXT_ALLOC` (`context new`).
const ETH_RXFH_CONTEXT_ALLOC: u32 = u32::MAX;

/// What `-x` shows and `-X` changes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rss {
    /// RX rings (ETHTOOL_GRXRINGS: hv_netvsc's `num_chn`).
    queues: u32,
    /// The indirection table (`rx_table_sz` entries; none without RSS).
    table: Vec<u32>,
    /// The hash key.
    key: Vec<u8>,
    /// Whether the user set the table (`IFF_RXFH_CONFIGURED`), if the guest says.
    configured: Option<bool>,
}

impl Rss {
    fn from_reply(reply: &Value) -> Result<Rss> {
        let key = reply
            .get("key")
            .and_then(Value::as_str)
            .context("the guest's rss reply has no key")?;
        let key = (0..key.len())
            .step_by(2)
            .map(|i| {
                key.get(i..i + 2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .with_context(|| format!("the guest's RSS key is not hex: {key}"))?;
        let table = reply
            .get("table")
            .and_then(Value::as_array)
            .context("the guest's rss reply has no table")?
            .iter()
            .map(|e| e.as_u64().and_then(|e| u32::try_from(e).ok()))
            .collect::<Option<Vec<u32>>>()
            .context("the guest's indirection table has a bad entry")?;
        Ok(Rss {
            queues: reply_u32(reply, "queues", "rss")?,
            table,
            key,
            configured: reply.get("configured").and_then(Value::as_bool),
        })
    }

    /// A NIC without RSS (one channel, `rx_table_sz` 0): Linux still answers with one
    /// RX ring, no table and the key it never set.
    fn single_queue() -> Rss {
        Rss {
            queues: 1,
            table: Vec::new(),
            key: vec![0; RSS_KEY_LEN],
            configured: Some(false),
        }
    }

    /// The largest queue a table the user set uses (`ethtool_get_max_rxfh_channel()`),
    /// 0 if the table is the default. Without the guest's word, a table other than the
    /// default for the current queue count counts as set by the user.
    fn max_configured_queue(&self) -> u32 {
        let configured = self
            .configured
            .unwrap_or_else(|| self.table != default_table(self.table.len(), self.queues));
        if configured {
            self.table.iter().copied().max().unwrap_or(0)
        } else {
            0
        }
    }
}

/// Linux's default indirection table (`ethtool_rxfh_indir_default()`).
fn default_table(size: usize, queues: u32) -> Vec<u32> {
    (0..size)
        .map(|i| u32::try_from(i).unwrap_or(u32::MAX) % queues.max(1))
        .collect()
}

/// `ethtool -x DEVNAME` (`do_grxfh()`).
fn format_rxfh(dev: &str, rss: &Rss) -> String {
    let mut out = format!(
        "RX flow hash indirection table for {dev} with {} RX ring(s):\n",
        rss.queues
    );
    if rss.table.is_empty() {
        out.push_str("Operation not supported\n");
    }
    let n = rss.table.len();
    for (i, e) in rss.table.iter().enumerate() {
        if i % 8 == 0 {
            let _ = write!(out, "{i:5}: ");
        }
        let _ = write!(out, " {e:5}");
        if i % 8 == 7 || i == n - 1 {
            out.push('\n');
        }
    }
    out.push_str("RSS hash key:\n");
    if rss.key.is_empty() {
        out.push_str("Operation not supported\n");
    } else {
        let hex: Vec<String> = rss.key.iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(out, "{}", hex.join(":"));
    }
    out.push_str("RSS hash function:\n");
    for (i, name) in RSS_HASH_FUNCS.iter().enumerate() {
        let _ = writeln!(
            out,
            "    {name}: {}",
            on_off(ETH_RSS_HASH_TOP & (1 << i) != 0)
        );
    }
    out
}

/// `-x`'s arguments: `context N` (ethtool 6.1 reads it, the kernel refuses it for
/// hv_netvsc).
fn parse_grxfh(args: &[String]) -> Result<u32, Output> {
    let mut context = 0;
    let mut i = 0;
    while let Some(a) = args.get(i) {
        if a != "context" {
            return Err(bad_args());
        }
        context = args
            .get(i + 1)
            .and_then(|v| get_int_range(v, 1, i64::from(ETH_RXFH_CONTEXT_ALLOC) - 1))
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(bad_args)?;
        i += 2;
    }
    Ok(context)
}

/// `-X`'s arguments (ethtool 6.1's `do_srxfh()`; values checked where it checks them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct RxfhRequest {
    /// `equal N` (0: not given).
    equal: u32,
    /// `start N`.
    start: u32,
    /// `weight W0 W1 ...`: the words ethtool will read as weights (None past the end of
    /// the command line), read when the table is filled.
    weights: Option<Vec<Option<String>>>,
    /// `default`.
    default: bool,
    /// `hkey XX:XX:...`.
    hkey: Option<String>,
    /// `hfunc NAME`.
    hfunc: Option<String>,
    /// `context N|new` (0: not given).
    context: u32,
    /// `delete`.
    delete: bool,
}

fn parse_srxfh(args: &[String]) -> Result<RxfhRequest, Output> {
    if args.is_empty() {
        return Err(bad_args());
    }
    let int = |v: Option<&String>, min: i64| {
        v.and_then(|v| get_int_range(v, min, i32::MAX.into()))
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(bad_args)
    };
    let word = |v: Option<&String>| v.cloned().ok_or_else(bad_args);
    let mut r = RxfhRequest::default();
    let mut weights_at = None;
    let mut num_weights = 0;
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "equal" => {
                r.equal = int(args.get(i + 1), 1)?;
                i += 2;
            }
            "start" => {
                r.start = int(args.get(i + 1), 0)?;
                i += 2;
            }
            "weight" => {
                i += 1;
                weights_at = Some(i);
                while args
                    .get(i)
                    .is_some_and(|w| w.as_bytes().first().is_some_and(u8::is_ascii_digit))
                {
                    i += 1;
                    num_weights += 1;
                }
                if num_weights == 0 {
                    return Err(bad_args());
                }
            }
            "hkey" => {
                r.hkey = Some(word(args.get(i + 1))?);
                i += 2;
            }
            "default" => {
                r.default = true;
                i += 1;
            }
            "hfunc" => {
                r.hfunc = Some(word(args.get(i + 1))?);
                i += 2;
            }
            "context" => {
                let v = word(args.get(i + 1))?;
                r.context = if v == "new" {
                    ETH_RXFH_CONTEXT_ALLOC
                } else {
                    get_int_range(&v, 1, i64::from(ETH_RXFH_CONTEXT_ALLOC) - 1)
                        .and_then(|v| u32::try_from(v).ok())
                        .ok_or_else(bad_args)?
                };
                i += 2;
            }
            "delete" => {
                r.delete = true;
                i += 1;
            }
            _ => return Err(bad_args()),
        }
    }
    r.weights = weights_at.map(|at| {
        (0..num_weights)
            .map(|j| args.get(at + j).cloned())
            .collect()
    });
    let weight = r.weights.is_some();
    let conflicts = [
        (
            r.equal != 0 && weight,
            "Equal and weight options are mutually exclusive",
        ),
        (
            r.equal != 0 && r.default,
            "Equal and default options are mutually exclusive",
        ),
        (
            weight && r.default,
            "Weight and default options are mutually exclusive",
        ),
        (
            r.start != 0 && r.default,
            "Start and default options are mutually exclusive",
        ),
        (
            r.start != 0 && !(r.equal != 0 || weight),
            "Start must be used with equal or weight options",
        ),
        (
            r.default && r.context != 0,
            "Default and context options are mutually exclusive",
        ),
        (
            r.delete && r.context == 0,
            "Delete option requires context option",
        ),
        (
            r.delete && weight,
            "Delete and weight options are mutually exclusive",
        ),
        (
            r.delete && r.equal != 0,
            "Delete and equal options are mutually exclusive",
        ),
        (
            r.delete && r.default,
            "Delete and default options are mutually exclusive",
        ),
        (
            r.delete && r.hkey.is_some(),
            "Delete and hkey options are mutually exclusive",
        ),
    ];
    if let Some((_, msg)) = conflicts.iter().find(|(c, _)| *c) {
        return Err(Output::fail(format!("{msg}\n"), 1));
    }
    Ok(r)
}

/// ethtool's `fill_indir_table()` for a table of `size` entries: Some(table) to set
/// (empty: the kernel's default), None for no change, or what ethtool prints. Weights
/// are spread as ethtool does: entry i goes to the first queue j whose cumulative weight
/// share reaches past it (`i < size * (w0 + ... + wj) / sum`), in u32 arithmetic.
fn fill_indir_table(size: u32, req: &RxfhRequest) -> Result<Option<Vec<u32>>, Output> {
    if req.equal != 0 {
        return Ok(Some(
            (0..size)
                .map(|i| req.start.wrapping_add(i % req.equal))
                .collect(),
        ));
    }
    if let Some(words) = &req.weights {
        let weight = |j: usize| {
            words
                .get(j)
                .and_then(Option::as_deref)
                .and_then(get_u32)
                .ok_or_else(bad_args)
        };
        let mut sum: u32 = 0;
        for j in 0..words.len() {
            sum = sum.wrapping_add(weight(j)?);
        }
        if sum == 0 {
            return Err(Output::fail("At least one weight must be non-zero\n", 1));
        }
        if sum > size {
            return Err(Output::fail(
                "Total weight exceeds the size of the indirection table\n",
                1,
            ));
        }
        let mut table = Vec::new();
        let mut j = u32::MAX;
        let mut partial: u32 = 0;
        for i in 0..size {
            while i >= size.wrapping_mul(partial) / sum {
                j = j.wrapping_add(1);
                partial = partial.wrapping_add(weight(j as usize)?);
            }
            table.push(req.start.wrapping_add(j));
        }
        return Ok(Some(table));
    }
    Ok(req.default.then(Vec::new))
}

/// ethtool's `convert_string_to_hashkey()` for a key of `key_size` bytes.
fn parse_hkey(s: &str, key_size: usize) -> Result<Vec<u8>, Output> {
    if key_size == 0 {
        return Err(Output::fail(
            "Cannot set RX flow hash configuration:\n Hash key setting not supported\n",
            1,
        ));
    }
    let invalid = || Output::fail("Invalid RSS hash key format\n", 2);
    let b = s.as_bytes();
    let mut key = Vec::new();
    let mut i = 0;
    loop {
        if key.len() > key_size - 1 {
            return Err(Output::fail(
                format!(
                    "Key is too long for device ({} > {key_size})\n",
                    key.len() + 1
                ),
                2,
            ));
        }
        let byte = s
            .get(i..i + 2)
            .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or_else(invalid)?;
        key.push(byte);
        i += 2;
        match b.get(i) {
            Some(b':') => i += 1,
            Some(_) => return Err(invalid()),
            None => {}
        }
        if i >= b.len() {
            break;
        }
    }
    if key.len() != key_size {
        return Err(Output::fail(
            format!("Key is too short for device ({} < {key_size})\n", key.len()),
            2,
        ));
    }
    Ok(key)
}

fn srxfh_error(errno: &str) -> Output {
    Output::fail(
        format!("Cannot set RX flow hash configuration: {errno}\n"),
        1,
    )
}

/// The rest of `do_srxfh()` once ethtool has the RSS sizes, then the kernel's
/// ETHTOOL_SRSSH (`ethtool_set_rxfh()`) and hv_netvsc's `netvsc_set_rxfh()`: the
/// guest's `set_rss` request, None if nothing reaches the host, or what ethtool prints.
fn rxfh_change(req: &RxfhRequest, rss: &Rss) -> Result<Option<Value>, Output> {
    let key = match &req.hkey {
        Some(h) => Some(parse_hkey(h, rss.key.len())?),
        None => None,
    };
    // hv_netvsc reports a hash function, so ethtool looks the name up.
    let mut hfunc = 0;
    if let Some(name) = &req.hfunc {
        match RSS_HASH_FUNCS.iter().position(|f| f == name) {
            Some(i) => hfunc = 1 << i,
            None => return Err(Output::fail(format!("Unknown hash function: {name}\n"), 1)),
        }
    }
    let size = u32::try_from(rss.table.len()).unwrap_or(u32::MAX);
    let indir = if req.delete {
        None
    } else {
        fill_indir_table(size, req)?
    };
    // The kernel: hv_netvsc has no extra RSS contexts.
    if req.context != 0 {
        return Err(srxfh_error(EOPNOTSUPP));
    }
    let table = match indir {
        None => None,
        Some(t) if t.is_empty() => Some(default_table(rss.table.len(), rss.queues)),
        Some(t) if t.iter().any(|&e| e >= rss.queues) => return Err(srxfh_error(EINVAL)),
        Some(t) => Some(t),
    };
    // hv_netvsc: Toeplitz only; nothing to do without a table or a key.
    if hfunc != 0 && hfunc != ETH_RSS_HASH_TOP {
        return Err(srxfh_error(EOPNOTSUPP));
    }
    if table.is_none() && key.is_none() {
        return Ok(None);
    }
    // A NIC without RSS has nothing to send the host.
    if rss.table.is_empty() {
        return Err(srxfh_error(EOPNOTSUPP));
    }
    let mut set = json!({"cmd": "set_rss"});
    if let Some(t) = table {
        set["table"] = t.into();
    }
    if let Some(k) = key {
        set["key"] = k
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into();
    }
    Ok(Some(set))
}

/// A flow type of `rx-flow-hash` (ethtool 6.1's `rxflow_str_to_type()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Tcp4,
    Udp4,
    AhEsp4,
    Sctp4,
    Tcp6,
    Udp6,
    AhEsp6,
    Sctp6,
    Ether,
}

impl Flow {
    fn parse(s: &str) -> Option<Flow> {
        Some(match s {
            "tcp4" => Flow::Tcp4,
            "udp4" => Flow::Udp4,
            "ah4" | "esp4" => Flow::AhEsp4,
            "sctp4" => Flow::Sctp4,
            "tcp6" => Flow::Tcp6,
            "udp6" => Flow::Udp6,
            "ah6" | "esp6" => Flow::AhEsp6,
            "sctp6" => Flow::Sctp6,
            "ether" => Flow::Ether,
            _ => return None,
        })
    }

    /// The guest's name for the flows whose L4 hashing hv_netvsc can switch; for the
    /// others it reports no fields and refuses changes.
    fn guest_proto(self) -> Option<&'static str> {
        match self {
            Flow::Tcp4 => Some("tcp4"),
            Flow::Udp4 => Some("udp4"),
            Flow::Tcp6 => Some("tcp6"),
            Flow::Udp6 => Some("udp6"),
            _ => None,
        }
    }

    /// `dump_rxfhash()`'s name for the flow type (none for `ether`).
    fn label(self) -> &'static str {
        match self {
            Flow::Tcp4 => "TCP over IPV4 flows",
            Flow::Udp4 => "UDP over IPV4 flows",
            Flow::AhEsp4 => "IPSEC AH/ESP over IPV4 flows",
            Flow::Sctp4 => "SCTP over IPV4 flows",
            Flow::Tcp6 => "TCP over IPV6 flows",
            Flow::Udp6 => "UDP over IPV6 flows",
            Flow::AhEsp6 => "IPSEC AH/ESP over IPV6 flows",
            Flow::Sctp6 => "SCTP over IPV6 flows",
            Flow::Ether => "",
        }
    }
}

/// `RXH_*` hash field bits, with their `-N` letters and `-n` lines.
const RXH_FIELDS: &[(u32, char, &str)] = &[
    (1 << 1, 'm', "L2DA"),
    (1 << 2, 'v', "VLAN tag"),
    (1 << 3, 't', "L3 proto"),
    (1 << 4, 's', "IP SA"),
    (1 << 5, 'd', "IP DA"),
    (1 << 6, 'f', "L4 bytes 0 & 1 [TCP/UDP src port]"),
    (1 << 7, 'n', "L4 bytes 2 & 3 [TCP/UDP dst port]"),
    (1 << 31, 'r', ""),
];
const RXH_DISCARD: u32 = 1 << 31;
/// `sd`: the addresses.
const RXH_SD: u32 = (1 << 4) | (1 << 5);
/// `sdfn`: the addresses and the ports.
const RXH_SDFN: u32 = RXH_SD | (1 << 6) | (1 << 7);

/// ethtool's `parse_rxfhashopts()`: letters → `RXH_*` bits.
fn parse_rxfhashopts(s: &str) -> Option<u32> {
    s.chars().try_fold(0, |bits, c| {
        RXH_FIELDS
            .iter()
            .find(|&&(_, l, _)| l == c)
            .map(|&(b, _, _)| bits | b)
    })
}

/// `ethtool -n DEVNAME rx-flow-hash FLOW` (`dump_rxfhash()`).
fn format_rxfhash(flow: Flow, bits: u32) -> String {
    let mut out = flow.label().to_owned();
    if bits & RXH_DISCARD != 0 {
        out.push_str(" - All matching flows discarded on RX\n");
        return out;
    }
    out.push_str(" use these fields for computing Hash flow key:\n");
    if bits == 0 {
        out.push_str("None");
    }
    for &(b, _, line) in RXH_FIELDS {
        if bits & b != 0 && b != RXH_DISCARD {
            let _ = writeln!(out, "{line}");
        }
    }
    out.push('\n');
    out
}

/// What `-n` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
enum NfcShow {
    /// No arguments: the RX ring count and the classification rules.
    Rings,
    /// `rx-flow-hash FLOW [context N]`.
    FlowHash { flow: Flow, context: Option<u32> },
    /// `rule N`.
    Rule(u32),
}

/// What `-N` changes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum NfcSet {
    /// `rx-flow-hash FLOW FIELDS [context N]` (`fields` as `RXH_*` bits).
    FlowHash {
        flow: Flow,
        fields: u32,
        context: Option<u32>,
    },
    /// `delete N`.
    Delete(u32),
}

/// `-n`'s arguments (`do_grxclass()`).
fn parse_grxclass(args: &[String]) -> Result<NfcShow, Output> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["rx-flow-hash", rest @ ..] => {
            let context = match rest {
                [_] => None,
                [_, "context", n] => Some(get_u32(n).ok_or_else(bad_args)?),
                _ => return Err(bad_args()),
            };
            let flow = Flow::parse(rest[0]).ok_or_else(bad_args)?;
            Ok(NfcShow::FlowHash { flow, context })
        }
        ["rule", n] => Ok(NfcShow::Rule(rule_location(n)?)),
        [] => Ok(NfcShow::Rings),
        _ => Err(bad_args()),
    }
}

/// A rule location (`get_uint_range(s, 0, INT_MAX)`).
fn rule_location(s: &str) -> Result<u32, Output> {
    get_uint_range(s, i32::MAX as u64)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(bad_args)
}

/// `-N`'s arguments (`do_srxclass()`).
fn parse_srxclass(args: &[String]) -> Result<NfcSet, Output> {
    if args.len() < 2 {
        return Err(bad_args());
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["rx-flow-hash", rest @ ..] => {
            let context = match rest {
                [_, _] => None,
                [_, _, "context", n] => Some(get_u32(n).ok_or_else(bad_args)?),
                _ => return Err(bad_args()),
            };
            let flow = Flow::parse(rest[0]).ok_or_else(bad_args)?;
            let fields = parse_rxfhashopts(rest[1]).ok_or_else(bad_args)?;
            Ok(NfcSet::FlowHash {
                flow,
                fields,
                context,
            })
        }
        ["flow-type", ..] => Err(not_supported("-N flow-type")),
        ["delete", n, ..] => Ok(NfcSet::Delete(rule_location(n)?)),
        _ => Err(bad_args()),
    }
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
        Command::ShowChannels { dev } => {
            if !is_guest_dev(guest, dev)? {
                return Ok(no_device_netlink(1));
            }
            let ch = Channels::from_reply(&guest.request(&json!({"cmd": "channels"}))?)?;
            Ok(Output::ok(format_channels(dev, &ch)))
        }
        Command::SetChannels { dev, params } => set_channels(guest, dev, params),
        Command::ShowRings { dev } => {
            if !is_guest_dev(guest, dev)? {
                return Ok(no_device_netlink(1));
            }
            let r = Rings::from_reply(&guest.request(&json!({"cmd": "rings"}))?)?;
            Ok(Output::ok(format_rings(dev, &r)))
        }
        Command::SetRings { dev, params } => {
            if let Err(out) = rings_policy(dev, params) {
                return Ok(out);
            }
            if !is_guest_dev(guest, dev)? {
                return Ok(no_device_netlink(EXIT_SRING));
            }
            let r = Rings::from_reply(&guest.request(&json!({"cmd": "rings"}))?)?;
            match rings_check(dev, params, &r) {
                Err(out) => Ok(out),
                Ok(None) => Ok(Output::default()),
                Ok(Some(req)) => Ok(match guest.request(&req) {
                    Ok(_) => Output::default(),
                    Err(e) => {
                        tracing::warn!("the guest did not apply {req}: {e:#}");
                        netlink_error(None, None, EINVAL, EXIT_SRING)
                    }
                }),
            }
        }
        Command::ShowRxfh { dev, context } => {
            if !is_guest_dev(guest, dev)? {
                return Ok(Output::fail(
                    format!("Cannot get RX ring count: {ENODEV}\n"),
                    1,
                ));
            }
            if *context != 0 {
                return Ok(Output::fail(
                    format!("Cannot get RX flow hash indir size and/or key size: {EOPNOTSUPP}\n"),
                    1,
                ));
            }
            Ok(Output::ok(format_rxfh(dev, &get_rss(guest)?)))
        }
        Command::SetRxfh { dev, req } => {
            if !is_guest_dev(guest, dev)? {
                return Ok(Output::fail(
                    format!("Cannot get RX ring count: {ENODEV}\n"),
                    1,
                ));
            }
            let rss = get_rss(guest)?;
            match rxfh_change(req, &rss) {
                Err(out) => Ok(out),
                Ok(None) => Ok(Output::default()),
                Ok(Some(set)) => Ok(match guest.request(&set) {
                    Ok(_) => Output::default(),
                    Err(e) => {
                        tracing::warn!("the guest did not apply {set}: {e:#}");
                        srxfh_error(EINVAL)
                    }
                }),
            }
        }
        Command::ShowNfc { dev, what } => show_nfc(guest, dev, what),
        Command::SetNfc { dev, what } => set_nfc(guest, dev, what),
    }
}

/// Whether DEVNAME is the guest's NIC.
fn is_guest_dev(guest: &mut dyn Guest, dev: &str) -> Result<bool> {
    let info = guest.request(&json!({"cmd": "info"}))?;
    Ok(ifname_of(&info)? == dev)
}

/// The guest's RSS state; a NIC without RSS answers "single queue: ...".
fn get_rss(guest: &mut dyn Guest) -> Result<Rss> {
    match guest.request(&json!({"cmd": "rss"})) {
        Ok(reply) => Rss::from_reply(&reply),
        Err(e) if e.to_string().starts_with("single queue") => Ok(Rss::single_queue()),
        Err(e) => Err(e),
    }
}

/// `-L`: the kernel's checks, then hv_netvsc (`netvsc_set_channels()`).
fn set_channels(
    guest: &mut dyn Guest,
    dev: &str,
    params: &[(ChannelParam, u32)],
) -> Result<Output> {
    if !is_guest_dev(guest, dev)? {
        return Ok(no_device_netlink(1));
    }
    let ch = Channels::from_reply(&guest.request(&json!({"cmd": "channels"}))?)?;
    let combined = match channels_check(dev, params, &ch) {
        Err(out) => return Ok(out),
        Ok(None) => return Ok(Output::default()),
        Ok(Some(n)) => n,
    };
    // An indirection table the user set must still fit (`ethtool_check_max_channel()`).
    if combined < ch.combined {
        let max = get_rss(guest)?.max_configured_queue();
        if combined <= max {
            return Ok(netlink_error(
                Some(&format!(
                    "requested channel counts are too low for existing indirection table ({max})"
                )),
                None,
                EINVAL,
                1,
            ));
        }
    }
    if combined == ch.combined {
        return Ok(Output::default());
    }
    let req = json!({"cmd": "set_channels", "combined": combined});
    Ok(match guest.request(&req) {
        Ok(_) => Output::default(),
        Err(e) => {
            tracing::warn!("the guest did not apply {req}: {e:#}");
            netlink_error(None, None, EINVAL, 1)
        }
    })
}

/// `-n`: ETHTOOL_GRXRINGS and the rule count, GRXFH, or GRXCLSRULE.
fn show_nfc(guest: &mut dyn Guest, dev: &str, what: &NfcShow) -> Result<Output> {
    let found = is_guest_dev(guest, dev)?;
    let errno = if found { EOPNOTSUPP } else { ENODEV };
    match what {
        NfcShow::Rings => {
            let mut out = Output::fail(
                format!(
                    "rxclass: Cannot get RX class rule count: {errno}\n\
                     RX classification rule retrieval failed\n"
                ),
                1,
            );
            if found {
                let ch = Channels::from_reply(&guest.request(&json!({"cmd": "channels"}))?)?;
                out.stdout = format!("{} RX rings available\n", ch.combined);
            } else {
                out.stderr = format!("Cannot get RX rings: {ENODEV}\n{}", out.stderr);
            }
            Ok(out)
        }
        NfcShow::FlowHash { flow, context } => {
            let fail = |errno: &str| {
                Output::fail(
                    format!("Cannot get RX network flow hashing options: {errno}\n"),
                    1,
                )
            };
            if !found {
                return Ok(fail(ENODEV));
            }
            // hv_netvsc has no per-context hashing.
            if context.is_some_and(|c| c != 0) {
                return Ok(fail(EINVAL));
            }
            let bits = match flow.guest_proto() {
                Some(proto) => {
                    let reply = guest.request(&json!({"cmd": "flow_hash", "proto": proto}))?;
                    let fields =
                        reply
                            .get("fields")
                            .and_then(Value::as_str)
                            .with_context(|| {
                                format!("the guest's flow_hash reply has no fields: {reply}")
                            })?;
                    parse_rxfhashopts(fields)
                        .with_context(|| format!("the guest's hash fields are bad: {fields}"))?
                }
                None => 0,
            };
            let mut out = String::new();
            if let Some(c) = context {
                let _ = writeln!(out, "For RSS context {c}:");
            }
            out.push_str(&format_rxfhash(*flow, bits));
            Ok(Output::ok(out))
        }
        NfcShow::Rule(_) => Ok(Output::fail(
            format!(
                "rxclass: Cannot get RX class rule: {errno}\nCannot get RX classification rule\n"
            ),
            1,
        )),
    }
}

/// `-N`: ETHTOOL_SRXFH (hv_netvsc: `sd` or `sdfn` for TCP and UDP; ethtool reports a
/// failure but exits 0) or SRXCLSRLDEL (no rules on hv_netvsc).
fn set_nfc(guest: &mut dyn Guest, dev: &str, what: &NfcSet) -> Result<Output> {
    let found = is_guest_dev(guest, dev)?;
    match what {
        NfcSet::FlowHash {
            flow,
            fields,
            context,
        } => {
            let fail = |errno: &str| {
                Output::fail(
                    format!("Cannot change RX network flow hashing options: {errno}\n"),
                    0,
                )
            };
            if !found {
                return Ok(fail(ENODEV));
            }
            if context.is_some_and(|c| c != 0) {
                return Ok(fail(EINVAL));
            }
            let fields = match *fields {
                RXH_SD => "sd",
                RXH_SDFN => "sdfn",
                _ => return Ok(fail(EOPNOTSUPP)),
            };
            let Some(proto) = flow.guest_proto() else {
                return Ok(fail(EOPNOTSUPP));
            };
            let req = json!({"cmd": "set_flow_hash", "proto": proto, "fields": fields});
            Ok(match guest.request(&req) {
                Ok(_) => Output::default(),
                Err(e) => {
                    tracing::warn!("the guest did not apply {req}: {e:#}");
                    fail(EOPNOTSUPP)
                }
            })
        }
        NfcSet::Delete(_) => Ok(Output::fail(
            format!(
                "rmgr: Cannot delete RX class rule: {}\nCannot delete classification rule\n",
                if found { EOPNOTSUPP } else { ENODEV }
            ),
            1,
        )),
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
            ("-c eth0", "-c"),
            ("-C eth0 rx-usecs 5", "-C"),
            ("--show-coalesce eth0", "--show-coalesce"),
            ("-a eth0", "-a"),
            ("-T eth0", "-T"),
            ("--json -c eth0", "-c"),
            ("-N eth0 flow-type udp4 action 1", "-N flow-type"),
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
        /// (max_combined, combined).
        channels: (u32, u32),
        rings: Rings,
        /// None: a NIC without RSS.
        rss: Option<Rss>,
        /// Per protocol: L4 ports hashed.
        l4_hash: Map<String, Value>,
        /// The new commands' set requests, in order.
        requests: Vec<Value>,
        /// Refuse every set request with this message.
        refuse: Option<&'static str>,
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
                channels: (8, 4),
                rings: Rings {
                    rx_max: 18811,
                    tx_max: 2560,
                    rx: 9709,
                    tx: 170,
                },
                rss: Some(Rss {
                    queues: 4,
                    table: default_table(128, 4),
                    key: DEFAULT_KEY.to_vec(),
                    configured: None,
                }),
                l4_hash: ["tcp4", "tcp6", "udp4", "udp6"]
                    .iter()
                    .map(|p| (p.to_string(), true.into()))
                    .collect(),
                requests: Vec::new(),
                refuse: None,
            }
        }

        /// Records a set request; refuses it if told to.
        fn record(&mut self, req: &Value) -> Result<()> {
            self.requests.push(req.clone());
            match self.refuse {
                Some(why) => bail!("{why}"),
                None => Ok(()),
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
                Some("channels") => Ok(json!({
                    "max_combined": self.channels.0, "combined": self.channels.1
                })),
                Some("set_channels") => {
                    self.record(req)?;
                    let n = u32::try_from(req["combined"].as_u64().unwrap()).unwrap();
                    self.channels.1 = n;
                    if let Some(rss) = &mut self.rss {
                        rss.queues = n;
                        if rss.max_configured_queue() == 0 {
                            rss.table = default_table(rss.table.len(), n);
                        }
                    }
                    Ok(json!({ "combined": n }))
                }
                Some("rings") => {
                    let r = self.rings;
                    Ok(json!({"rx_max": r.rx_max, "tx_max": r.tx_max, "rx": r.rx, "tx": r.tx}))
                }
                Some("set_rings") => {
                    self.record(req)?;
                    let clamp = |v: &Value, max: u32, old: u32| {
                        v.as_u64()
                            .map_or(old, |v| u32::try_from(v).unwrap().clamp(10, max))
                    };
                    self.rings.rx = clamp(&req["rx"], self.rings.rx_max, self.rings.rx);
                    self.rings.tx = clamp(&req["tx"], self.rings.tx_max, self.rings.tx);
                    Ok(json!({"rx": self.rings.rx, "tx": self.rings.tx}))
                }
                Some("rss") => match &self.rss {
                    None => bail!("single queue: no RSS configuration"),
                    Some(r) => Ok(json!({
                        "key": r.key.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                        "table": r.table, "hash_info": 5889, "queues": r.queues
                    })),
                },
                Some("set_rss") => {
                    self.record(req)?;
                    let rss = self.rss.as_mut().unwrap();
                    if let Some(t) = req["table"].as_array() {
                        rss.table = t.iter().map(|e| e.as_u64().unwrap() as u32).collect();
                    }
                    if let Some(k) = req["key"].as_str() {
                        rss.key = (0..k.len())
                            .step_by(2)
                            .map(|i| u8::from_str_radix(&k[i..i + 2], 16).unwrap())
                            .collect();
                    }
                    Ok(json!({"ok": true}))
                }
                Some("flow_hash") => {
                    let l4 = self.l4_hash[req["proto"].as_str().unwrap()] == true;
                    Ok(json!({"fields": if l4 { "sdfn" } else { "sd" }}))
                }
                Some("set_flow_hash") => {
                    self.record(req)?;
                    let l4 = req["fields"] == "sdfn";
                    self.l4_hash
                        .insert(req["proto"].as_str().unwrap().into(), l4.into());
                    Ok(json!({"ok": true}))
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
    // -------------------------------------------------------------------------------
    // Channels, rings, RSS and flow hashing

    /// Linux's default RSS key (PROTOCOL.md §9.1).
    const DEFAULT_KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f,
        0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
        0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];

    fn fail(stderr: &str, code: i32) -> Output {
        Output::fail(stderr, code)
    }

    #[test]
    fn c_numbers() {
        assert_eq!(c_strtoull("0x1f", 0), Some(31));
        assert_eq!(c_strtoull("017", 0), Some(15));
        assert_eq!(c_strtoull(" +7", 0), Some(7));
        assert_eq!(c_strtoull("-0", 0), Some(0));
        assert_eq!(c_strtoull("-1", 0), Some(u64::MAX));
        assert_eq!(c_strtoull("", 0), Some(0));
        for s in ["x", "0x", "08", "1a", " ", "+", "99999999999999999999"] {
            assert_eq!(c_strtoull(s, 0), None, "{s:?}");
        }
        assert_eq!(c_strtoll("-5", 0), Some(-5));
        assert_eq!(get_int_range("0", 1, 10), None);
        assert_eq!(get_u32("4294967295"), Some(u32::MAX));
        assert_eq!(get_u32("4294967296"), None);
        assert_eq!(nl_u32("0x10"), Some(16));
        assert_eq!(nl_u32("010"), Some(10));
        for s in ["", "0x", "-1", "x", "4294967296", "1 "] {
            assert_eq!(nl_u32(s), None, "{s:?}");
        }
    }

    #[test]
    fn parses_channels_and_rings() {
        for opt in ["-l", "--show-channels"] {
            assert_eq!(
                p(&format!("{opt} eth0")),
                Ok(Command::ShowChannels { dev: "eth0".into() })
            );
        }
        for opt in ["-g", "--show-ring"] {
            assert_eq!(
                p(&format!("{opt} eth0")),
                Ok(Command::ShowRings { dev: "eth0".into() })
            );
        }
        assert_eq!(
            err("-l eth0 x"),
            fail("ethtool: unexpected parameter 'x'\n", 1)
        );
        assert_eq!(
            err("-g eth0 rx"),
            fail("ethtool: unexpected parameter 'rx'\n", 1)
        );
        assert_eq!(err("-l"), fail(BAD, 1));
        assert_eq!(err("--json -l eth0"), fail(BAD, 1));
        assert_eq!(err("--json -g eth0"), fail(BAD, 1));
        use ChannelParam as C;
        for opt in ["-L", "--set-channels"] {
            assert_eq!(
                p(&format!("{opt} eth0 combined 2 rx 0 tx 0x0 other 0")),
                Ok(Command::SetChannels {
                    dev: "eth0".into(),
                    params: vec![(C::Combined, 2), (C::Rx, 0), (C::Tx, 0), (C::Other, 0)]
                })
            );
        }
        assert_eq!(
            p("-L eth0"),
            Ok(Command::SetChannels {
                dev: "eth0".into(),
                params: vec![]
            })
        );
        use RingParam as R;
        for opt in ["-G", "--set-ring"] {
            assert_eq!(
                p(&format!(
                    "{opt} eth0 tx 0x100 rx 4096 rx-mini 0 rx-jumbo 0 rx-buf-len 2048 \
                     cqe-size 64 tx-push off"
                )),
                Ok(Command::SetRings {
                    dev: "eth0".into(),
                    params: vec![
                        (R::Tx, 256),
                        (R::Rx, 4096),
                        (R::RxMini, 0),
                        (R::RxJumbo, 0),
                        (R::RxBufLen, 2048),
                        (R::CqeSize, 64),
                        (R::TxPush, 0)
                    ]
                })
            );
        }
        // As ethtool 6.1 printed them for a veth.
        for (s, msg) in [
            ("-L eth0 foo 1", "ethtool (-L): unknown parameter 'foo'\n"),
            ("-L eth0 rx", "ethtool (-L): no value for parameter 'rx'\n"),
            (
                "-L eth0 rx x",
                "ethtool (-L): invalid value 'x' for parameter 'rx'\n",
            ),
            (
                "-L eth0 combined 1 combined 2",
                "ethtool (-L): duplicate parameter 'combined'\n",
            ),
            (
                "-L eth0 rx 0x",
                "ethtool (-L): invalid value '0x' for parameter 'rx'\n",
            ),
            (
                "-L eth0 rx -1",
                "ethtool (-L): invalid value '-1' for parameter 'rx'\n",
            ),
            ("-G eth0 foo 1", "ethtool (-G): unknown parameter 'foo'\n"),
            (
                "-G eth0 tx-push yes",
                "ethtool (-G): invalid value 'yes' for parameter 'tx-push'\n",
            ),
            (
                "-G eth0 rx 1 tx",
                "ethtool (-G): no value for parameter 'tx'\n",
            ),
        ] {
            assert_eq!(err(s), fail(msg, 1), "{s}");
        }
        assert_eq!(err("-L"), fail(BAD, 1));
        assert_eq!(err("-G"), fail(BAD, 1));
    }

    #[test]
    fn parses_rxfh() {
        for opt in ["-x", "--show-rxfh-indir", "--show-rxfh"] {
            assert_eq!(
                p(&format!("{opt} eth0")),
                Ok(Command::ShowRxfh {
                    dev: "eth0".into(),
                    context: 0
                })
            );
        }
        assert_eq!(
            p("-x eth0 context 0x10"),
            Ok(Command::ShowRxfh {
                dev: "eth0".into(),
                context: 16
            })
        );
        for s in [
            "-x eth0 context",
            "-x eth0 context 0",
            "-x eth0 foo",
            "--json -x eth0",
        ] {
            assert_eq!(err(s), fail(BAD, 1), "{s}");
        }
        let x = |s: &str| match p(s) {
            Ok(Command::SetRxfh { req, .. }) => req,
            other => panic!("{s}: {other:?}"),
        };
        for opt in ["-X", "--set-rxfh-indir", "--rxfh"] {
            assert_eq!(
                x(&format!("{opt} eth0 equal 2")),
                RxfhRequest {
                    equal: 2,
                    ..Default::default()
                }
            );
        }
        assert_eq!(
            x("-X eth0 weight 1 2 0x3 hkey 6d:5a hfunc toeplitz start 1"),
            RxfhRequest {
                weights: Some(vec![Some("1".into()), Some("2".into()), Some("0x3".into())]),
                hkey: Some("6d:5a".into()),
                hfunc: Some("toeplitz".into()),
                start: 1,
                ..Default::default()
            }
        );
        assert_eq!(
            x("-X eth0 default"),
            RxfhRequest {
                default: true,
                ..Default::default()
            }
        );
        assert_eq!(
            x("-X eth0 context new equal 2").context,
            ETH_RXFH_CONTEXT_ALLOC
        );
        assert_eq!(x("-X eth0 context 3 delete").context, 3);
        // `start 0` is as good as no start.
        assert!(x("-X eth0 start 0 default").default);
        for s in [
            "-X eth0",
            "-X eth0 equal",
            "-X eth0 equal 0",
            "-X eth0 equal x",
            "-X eth0 equal 2147483648",
            "-X eth0 start -1 equal 2",
            "-X eth0 weight",
            "-X eth0 weight x",
            "-X eth0 hkey",
            "-X eth0 hfunc",
            "-X eth0 context",
            "-X eth0 context 0",
            "-X eth0 context 4294967295",
            "-X eth0 bogus",
        ] {
            assert_eq!(err(s), fail(BAD, 1), "{s}");
        }
        for (s, msg) in [
            (
                "-X eth0 equal 2 weight 1 1",
                "Equal and weight options are mutually exclusive\n",
            ),
            (
                "-X eth0 equal 2 default",
                "Equal and default options are mutually exclusive\n",
            ),
            (
                "-X eth0 weight 1 default",
                "Weight and default options are mutually exclusive\n",
            ),
            (
                "-X eth0 start 1 default",
                "Start and default options are mutually exclusive\n",
            ),
            (
                "-X eth0 start 1",
                "Start must be used with equal or weight options\n",
            ),
            (
                "-X eth0 default context 1",
                "Default and context options are mutually exclusive\n",
            ),
            ("-X eth0 delete", "Delete option requires context option\n"),
            (
                "-X eth0 context 1 delete weight 1",
                "Delete and weight options are mutually exclusive\n",
            ),
            (
                "-X eth0 context 1 delete hkey 00",
                "Delete and hkey options are mutually exclusive\n",
            ),
        ] {
            assert_eq!(err(s), fail(msg, 1), "{s}");
        }
    }

    #[test]
    fn parses_nfc() {
        for opt in ["-n", "-u", "--show-nfc", "--show-ntuple"] {
            assert_eq!(
                p(&format!("{opt} eth0 rx-flow-hash udp4")),
                Ok(Command::ShowNfc {
                    dev: "eth0".into(),
                    what: NfcShow::FlowHash {
                        flow: Flow::Udp4,
                        context: None
                    }
                })
            );
        }
        let n = |s: &str| match p(s) {
            Ok(Command::ShowNfc { what, .. }) => what,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(n("-n eth0"), NfcShow::Rings);
        assert_eq!(n("-n eth0 rule 0x10"), NfcShow::Rule(16));
        assert_eq!(
            n("-n eth0 rx-flow-hash esp6 context 0"),
            NfcShow::FlowHash {
                flow: Flow::AhEsp6,
                context: Some(0)
            }
        );
        let m = |s: &str| match p(s) {
            Ok(Command::SetNfc { what, .. }) => what,
            other => panic!("{s}: {other:?}"),
        };
        for opt in ["-N", "-U", "--config-nfc", "--config-ntuple"] {
            assert_eq!(
                m(&format!("{opt} eth0 rx-flow-hash tcp6 sdfn")),
                NfcSet::FlowHash {
                    flow: Flow::Tcp6,
                    fields: RXH_SDFN,
                    context: None
                }
            );
        }
        assert_eq!(
            m("-N eth0 rx-flow-hash udp4 ds context 2"),
            NfcSet::FlowHash {
                flow: Flow::Udp4,
                fields: RXH_SD,
                context: Some(2)
            }
        );
        assert_eq!(
            m("-N eth0 rx-flow-hash ether mvtr"),
            NfcSet::FlowHash {
                flow: Flow::Ether,
                fields: (1 << 1) | (1 << 2) | (1 << 3) | RXH_DISCARD,
                context: None
            }
        );
        assert_eq!(m("-N eth0 delete 5 extra"), NfcSet::Delete(5));
        // ethtool 6.1 has no ip4/ip6 flow types.
        for s in [
            "-n eth0 rx-flow-hash ip4",
            "-n eth0 rx-flow-hash ip6",
            "-n eth0 rx-flow-hash",
            "-n eth0 rx-flow-hash udp4 context",
            "-n eth0 rx-flow-hash udp4 ctx 1",
            "-n eth0 rx-flow-hash udp4 context x",
            "-n eth0 rule",
            "-n eth0 rule -1",
            "-n eth0 rule 2147483648",
            "-n eth0 foo",
            "-N eth0",
            "-N eth0 rx-flow-hash",
            "-N eth0 rx-flow-hash udp4",
            "-N eth0 rx-flow-hash ip4 sd",
            "-N eth0 rx-flow-hash udp4 sdx",
            "-N eth0 rx-flow-hash udp4 sd context",
            "-N eth0 rx-flow-hash udp4 sd ctx 1",
            "-N eth0 delete x",
            "-N eth0 foo bar",
            "--json -n eth0",
        ] {
            assert_eq!(err(s), fail(BAD, 1), "{s}");
        }
    }

    #[test]
    fn long_device_names() {
        let long = "a".repeat(20);
        let ioctl = fail(
            "ethtool netlink support for subcommand missing, device name longer than 15 not \
             supported\n",
            1,
        );
        // Ioctl-only options give up before reading their arguments.
        for opt in ["-x", "-X", "-n", "-N"] {
            assert_eq!(err(&format!("{opt} {long} bogus")), ioctl, "{opt}");
        }
        assert_eq!(err(&format!("-X {} equal 2", "b".repeat(16))), ioctl);
        assert!(p(&format!("-X {} equal 2", "b".repeat(15))).is_ok());
        let huge = "c".repeat(128);
        assert_eq!(
            err(&format!("-l {huge}")),
            fail(
                &format!("device name '{huge}' longer than 127 characters\n"),
                1
            )
        );
        // Netlink ones look the name up, and do not find it.
        let mut g = FakeGuest::new(azure());
        let netlink =
            "netlink error: no device matches name (offset 24)\nnetlink error: No such device\n";
        assert_eq!(exec(&mut g, &format!("-l {long}")), fail(netlink, 1));
        assert_eq!(
            exec(&mut g, &format!("-G {long} rx 100")),
            fail(netlink, 81)
        );
    }

    #[test]
    fn weight_tables() {
        let weights = |w: &[&str]| RxfhRequest {
            weights: Some(w.iter().map(|s| Some(s.to_string())).collect()),
            ..Default::default()
        };
        let fill = |size, req: &RxfhRequest| fill_indir_table(size, req).unwrap().unwrap();
        // By hand: entry i goes to the first j with i < size * (w0 + .. + wj) / sum.
        assert_eq!(fill(8, &weights(&["1", "1"])), [0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(fill(8, &weights(&["1", "3"])), [0, 0, 1, 1, 1, 1, 1, 1]);
        assert_eq!(
            fill(8, &weights(&["1", "2", "1"])),
            [0, 0, 1, 1, 1, 1, 2, 2]
        );
        assert_eq!(
            fill(8, &weights(&["3", "0", "1"])),
            [0, 0, 0, 0, 0, 0, 2, 2]
        );
        assert_eq!(fill(8, &weights(&["0", "1"])), [1; 8]);
        // 8 / 3: thresholds 2 (8*1/3) and 5 (8*2/3).
        assert_eq!(
            fill(8, &weights(&["1", "1", "1"])),
            [0, 0, 1, 1, 1, 2, 2, 2]
        );
        // 128 entries, weights 1 1 1: thresholds 42 and 85.
        let t = fill(128, &weights(&["1", "1", "1"]));
        let expected: Vec<u32> = (0..128)
            .map(|i| match i {
                0..42 => 0,
                42..85 => 1,
                _ => 2,
            })
            .collect();
        assert_eq!(t, expected);
        // 128 entries, weights 1 2 1: 32 × 0, 64 × 1, 32 × 2; with start 4.
        let mut req = weights(&["1", "2", "1"]);
        req.start = 4;
        let t = fill(128, &req);
        assert!(t[..32].iter().all(|&e| e == 4));
        assert!(t[32..96].iter().all(|&e| e == 5));
        assert!(t[96..].iter().all(|&e| e == 6));
        // equal N [start S]; default; nothing.
        let eq = RxfhRequest {
            equal: 3,
            start: 1,
            ..Default::default()
        };
        assert_eq!(fill(8, &eq), [1, 2, 3, 1, 2, 3, 1, 2]);
        let def = RxfhRequest {
            default: true,
            ..Default::default()
        };
        assert_eq!(fill(128, &def), Vec::<u32>::new());
        assert_eq!(fill_indir_table(128, &RxfhRequest::default()), Ok(None));
        // ethtool's refusals.
        assert_eq!(
            fill_indir_table(128, &weights(&["0", "0"])),
            Err(fail("At least one weight must be non-zero\n", 1))
        );
        assert_eq!(
            fill_indir_table(128, &weights(&["100", "29"])),
            Err(fail(
                "Total weight exceeds the size of the indirection table\n",
                1
            ))
        );
        assert_eq!(fill_indir_table(128, &weights(&["1x"])), Err(fail(BAD, 1)));
        // u32 arithmetic: the sum wraps to 1.
        assert_eq!(fill(8, &weights(&["4294967295", "2"])), [0; 8]);
    }

    #[test]
    fn hash_keys() {
        let key = |s: &str| parse_hkey(s, 4);
        assert_eq!(key("6d:5a:56:DA"), Ok(vec![0x6d, 0x5a, 0x56, 0xda]));
        assert_eq!(
            key("6d:5a:56:da:00"),
            Err(fail("Key is too long for device (5 > 4)\n", 2))
        );
        assert_eq!(
            key("6d:5a:56"),
            Err(fail("Key is too short for device (3 < 4)\n", 2))
        );
        assert_eq!(
            key("6d:5a:"),
            Err(fail("Key is too short for device (2 < 4)\n", 2))
        );
        for s in [
            "",
            "6d5a56da",
            "6d:5a:56:d",
            "6d:5a:56:dx",
            "6d-5a-56-da",
            "6d::5a:56",
        ] {
            assert_eq!(
                key(s),
                Err(fail("Invalid RSS hash key format\n", 2)),
                "{s:?}"
            );
        }
        assert_eq!(
            parse_hkey("00", 0),
            Err(fail(
                "Cannot set RX flow hash configuration:\n Hash key setting not supported\n",
                1
            ))
        );
    }

    #[test]
    fn show_channels_and_rings() {
        assert_eq!(
            format_channels(
                "eth0",
                &Channels {
                    max_combined: 8,
                    combined: 4
                }
            ),
            "Channel parameters for eth0:\n\
             Pre-set maximums:\n\
             RX:\t\tn/a\n\
             TX:\t\tn/a\n\
             Other:\t\tn/a\n\
             Combined:\t8\n\
             Current hardware settings:\n\
             RX:\t\tn/a\n\
             TX:\t\tn/a\n\
             Other:\t\tn/a\n\
             Combined:\t4\n"
        );
        assert_eq!(
            format_rings(
                "eth0",
                &Rings {
                    rx_max: 18811,
                    tx_max: 2560,
                    rx: 9709,
                    tx: 170
                }
            ),
            "Ring parameters for eth0:\n\
             Pre-set maximums:\n\
             RX:\t\t18811\n\
             RX Mini:\tn/a\n\
             RX Jumbo:\tn/a\n\
             TX:\t\t2560\n\
             Current hardware settings:\n\
             RX:\t\t9709\n\
             RX Mini:\tn/a\n\
             RX Jumbo:\tn/a\n\
             TX:\t\t170\n\
             RX Buf Len:\t\tn/a\n\
             CQE Size:\t\tn/a\n\
             TX Push:\toff\n\
             TCP data split:\tn/a\n"
        );
    }

    #[test]
    fn layouts_match_real_ethtool_for_virtio() {
        // ethtool 6.1 on Linux 6.18, a one-queue virtio_net NIC (captured).
        assert_eq!(
            format_rings(
                "eth0",
                &Rings {
                    rx_max: 256,
                    tx_max: 256,
                    rx: 256,
                    tx: 256
                }
            ),
            "Ring parameters for eth0:\nPre-set maximums:\nRX:\t\t256\nRX Mini:\tn/a\n\
             RX Jumbo:\tn/a\nTX:\t\t256\nCurrent hardware settings:\nRX:\t\t256\n\
             RX Mini:\tn/a\nRX Jumbo:\tn/a\nTX:\t\t256\nRX Buf Len:\t\tn/a\n\
             CQE Size:\t\tn/a\nTX Push:\toff\nTCP data split:\tn/a\n"
        );
        assert_eq!(
            format_channels(
                "eth0",
                &Channels {
                    max_combined: 1,
                    combined: 1
                }
            ),
            "Channel parameters for eth0:\nPre-set maximums:\nRX:\t\tn/a\nTX:\t\tn/a\n\
             Other:\t\tn/a\nCombined:\t1\nCurrent hardware settings:\nRX:\t\tn/a\n\
             TX:\t\tn/a\nOther:\t\tn/a\nCombined:\t1\n"
        );
        let no_rss = Rss {
            queues: 1,
            table: vec![],
            key: vec![],
            configured: None,
        };
        assert_eq!(
            format_rxfh("eth0", &no_rss),
            "RX flow hash indirection table for eth0 with 1 RX ring(s):\n\
             Operation not supported\n\
             RSS hash key:\n\
             Operation not supported\n\
             RSS hash function:\n    toeplitz: on\n    xor: off\n    crc32: off\n"
        );
        assert_eq!(
            format_rxfhash(Flow::Tcp4, 0),
            "TCP over IPV4 flows use these fields for computing Hash flow key:\nNone\n"
        );
    }

    const ROWS_4_QUEUES: &str = concat!(
        "    0:      0     1     2     3     0     1     2     3\n",
        "    8:      0     1     2     3     0     1     2     3\n",
        "   16:      0     1     2     3     0     1     2     3\n",
        "   24:      0     1     2     3     0     1     2     3\n",
        "   32:      0     1     2     3     0     1     2     3\n",
        "   40:      0     1     2     3     0     1     2     3\n",
        "   48:      0     1     2     3     0     1     2     3\n",
        "   56:      0     1     2     3     0     1     2     3\n",
        "   64:      0     1     2     3     0     1     2     3\n",
        "   72:      0     1     2     3     0     1     2     3\n",
        "   80:      0     1     2     3     0     1     2     3\n",
        "   88:      0     1     2     3     0     1     2     3\n",
        "   96:      0     1     2     3     0     1     2     3\n",
        "  104:      0     1     2     3     0     1     2     3\n",
        "  112:      0     1     2     3     0     1     2     3\n",
        "  120:      0     1     2     3     0     1     2     3\n",
    );

    #[test]
    fn show_rxfh_four_queues_default_key() {
        let rss = Rss {
            queues: 4,
            table: default_table(128, 4),
            key: DEFAULT_KEY.to_vec(),
            configured: None,
        };
        let expected = format!(
            "RX flow hash indirection table for eth0 with 4 RX ring(s):\n\
             {ROWS_4_QUEUES}\
             RSS hash key:\n\
             6d:5a:56:da:25:5b:0e:c2:41:67:25:3d:43:a3:8f:b0:d0:ca:2b:cb:ae:7b:30:b4:77:cb:2d:\
             a3:80:30:f2:0c:6a:42:b7:3b:be:ac:01:fa\n\
             RSS hash function:\n    toeplitz: on\n    xor: off\n    crc32: off\n"
        );
        assert_eq!(format_rxfh("eth0", &rss), expected);
        let mut g = FakeGuest::new(azure());
        assert_eq!(exec(&mut g, "-x eth0"), Output::ok(expected));
        // A table whose length is not a multiple of 8 ends its last row early.
        let short = Rss {
            table: vec![0, 1, 2, 3, 0, 1, 2, 3, 0, 1],
            ..rss
        };
        assert!(format_rxfh("eth0", &short).contains(
            "    0:      0     1     2     3     0     1     2     3\n    8:      0     1\nRSS"
        ));
    }

    #[test]
    fn show_flow_hash() {
        assert_eq!(
            format_rxfhash(Flow::Udp4, RXH_SDFN),
            "UDP over IPV4 flows use these fields for computing Hash flow key:\n\
             IP SA\n\
             IP DA\n\
             L4 bytes 0 & 1 [TCP/UDP src port]\n\
             L4 bytes 2 & 3 [TCP/UDP dst port]\n\n"
        );
        assert_eq!(
            format_rxfhash(Flow::Udp4, RXH_SD),
            "UDP over IPV4 flows use these fields for computing Hash flow key:\n\
             IP SA\n\
             IP DA\n\n"
        );
        assert_eq!(
            format_rxfhash(Flow::Ether, 0),
            " use these fields for computing Hash flow key:\nNone\n"
        );
        assert_eq!(
            format_rxfhash(Flow::Tcp6, RXH_DISCARD | RXH_SD),
            "TCP over IPV6 flows - All matching flows discarded on RX\n"
        );
        let mut g = FakeGuest::new(azure());
        g.l4_hash.insert("udp4".into(), false.into());
        assert_eq!(
            exec(&mut g, "-n eth0 rx-flow-hash udp4"),
            Output::ok(format_rxfhash(Flow::Udp4, RXH_SD))
        );
        assert_eq!(
            exec(&mut g, "-u eth0 rx-flow-hash tcp6"),
            Output::ok(format_rxfhash(Flow::Tcp6, RXH_SDFN))
        );
        assert_eq!(
            exec(&mut g, "-n eth0 rx-flow-hash sctp4"),
            Output::ok(
                "SCTP over IPV4 flows use these fields for computing Hash flow key:\nNone\n".into()
            )
        );
        assert_eq!(
            exec(&mut g, "-n eth0 rx-flow-hash tcp4 context 0"),
            Output::ok(format!(
                "For RSS context 0:\n{}",
                format_rxfhash(Flow::Tcp4, RXH_SDFN)
            ))
        );
        assert_eq!(
            exec(&mut g, "-n eth0 rx-flow-hash tcp4 context 1"),
            fail(
                "Cannot get RX network flow hashing options: Invalid argument\n",
                1
            )
        );
        assert_eq!(
            exec(&mut g, "-n eth1 rx-flow-hash tcp4"),
            fail(
                "Cannot get RX network flow hashing options: No such device\n",
                1
            )
        );
    }

    #[test]
    fn show_rings_count_and_rules() {
        let mut g = FakeGuest::new(azure());
        let no_rules = "rxclass: Cannot get RX class rule count: Operation not supported\n\
                        RX classification rule retrieval failed\n";
        assert_eq!(
            exec(&mut g, "-n eth0"),
            Output {
                stdout: "4 RX rings available\n".into(),
                stderr: no_rules.into(),
                code: 1
            }
        );
        // As ethtool 6.1 printed it for a missing device.
        assert_eq!(
            exec(&mut g, "-n eth1"),
            fail(
                "Cannot get RX rings: No such device\n\
                 rxclass: Cannot get RX class rule count: No such device\n\
                 RX classification rule retrieval failed\n",
                1
            )
        );
        assert_eq!(
            exec(&mut g, "-n eth0 rule 3"),
            fail(
                "rxclass: Cannot get RX class rule: Operation not supported\n\
                 Cannot get RX classification rule\n",
                1
            )
        );
        assert_eq!(
            exec(&mut g, "-N eth0 delete 3"),
            fail(
                "rmgr: Cannot delete RX class rule: Operation not supported\n\
                 Cannot delete classification rule\n",
                1
            )
        );
    }

    #[test]
    fn set_flow_hash() {
        let mut g = FakeGuest::new(azure());
        assert_eq!(
            exec(&mut g, "-N eth0 rx-flow-hash udp4 sd"),
            Output::default()
        );
        assert_eq!(
            exec(&mut g, "-U eth0 rx-flow-hash tcp6 nfds"),
            Output::default()
        );
        assert_eq!(
            exec(&mut g, "-N eth0 rx-flow-hash udp4 sd context 0"),
            Output::default()
        );
        assert_eq!(
            g.requests,
            vec![
                json!({"cmd": "set_flow_hash", "proto": "udp4", "fields": "sd"}),
                json!({"cmd": "set_flow_hash", "proto": "tcp6", "fields": "sdfn"}),
                json!({"cmd": "set_flow_hash", "proto": "udp4", "fields": "sd"}),
            ]
        );
        // Refusals are printed, but ethtool exits 0.
        let nope = fail(
            "Cannot change RX network flow hashing options: Operation not supported\n",
            0,
        );
        for s in [
            "-N eth0 rx-flow-hash udp4 s",
            "-N eth0 rx-flow-hash udp4 sdf",
            "-N eth0 rx-flow-hash tcp4 sdfnv",
            "-N eth0 rx-flow-hash tcp4 sdfnr",
            "-N eth0 rx-flow-hash sctp4 sd",
            "-N eth0 rx-flow-hash esp6 sdfn",
            "-N eth0 rx-flow-hash ether sd",
        ] {
            assert_eq!(exec(&mut g, s), nope, "{s}");
        }
        assert_eq!(
            exec(&mut g, "-N eth0 rx-flow-hash udp4 sd context 1"),
            fail(
                "Cannot change RX network flow hashing options: Invalid argument\n",
                0
            )
        );
        assert_eq!(
            exec(&mut g, "-N eth1 rx-flow-hash udp4 sd"),
            fail(
                "Cannot change RX network flow hashing options: No such device\n",
                0
            )
        );
        g.refuse = Some("no");
        assert_eq!(exec(&mut g, "-N eth0 rx-flow-hash udp4 sdfn"), nope);
        assert_eq!(g.requests.len(), 4);
    }

    #[test]
    fn set_channels_end_to_end() {
        let mut g = FakeGuest::new(azure());
        let netlink = |msg: &str, errno: &str| {
            fail(
                &format!("netlink error: {msg}\nnetlink error: {errno}\n"),
                1,
            )
        };
        assert_eq!(exec(&mut g, "-L eth0 combined 2"), Output::default());
        assert_eq!(
            exec(&mut g, "-l eth0").stdout,
            format_channels(
                "eth0",
                &Channels {
                    max_combined: 8,
                    combined: 2
                }
            )
        );
        // Unchanged values (and rx/tx/other 0) reach nothing.
        for s in [
            "-L eth0",
            "-L eth0 combined 2",
            "-L eth0 rx 0 tx 0 other 0 combined 0x2",
        ] {
            assert_eq!(exec(&mut g, s), Output::default(), "{s}");
        }
        assert_eq!(
            g.requests,
            vec![json!({"cmd": "set_channels", "combined": 2})]
        );
        // The kernel's checks, with the attribute's offset in the request.
        assert_eq!(
            exec(&mut g, "-L eth0 combined 9"),
            netlink(
                "requested channel count exceeds maximum (offset 36)",
                EINVAL
            )
        );
        assert_eq!(
            exec(&mut g, "-L eth0 tx 0 rx 1"),
            netlink(
                "requested channel count exceeds maximum (offset 44)",
                EINVAL
            )
        );
        assert_eq!(
            exec(&mut g, "-L eth0 combined 4 other 1"),
            netlink(
                "requested channel count exceeds maximum (offset 44)",
                EINVAL
            )
        );
        assert_eq!(
            exec(&mut g, "-L eth0 rx 0 combined 0"),
            netlink(
                "requested channel counts would result in no RX or TX channel being \
                 configured (offset 44)",
                EINVAL
            )
        );
        // A table set with -X must still fit.
        assert_eq!(exec(&mut g, "-X eth0 weight 1 0"), Output::default());
        assert_eq!(exec(&mut g, "-L eth0 combined 4"), Output::default());
        assert_eq!(exec(&mut g, "-X eth0 equal 3"), Output::default());
        assert_eq!(
            exec(&mut g, "-L eth0 combined 2"),
            netlink(
                "requested channel counts are too low for existing indirection table (2)",
                EINVAL
            )
        );
        assert_eq!(exec(&mut g, "-L eth0 combined 3"), Output::default());
        // The driver's refusal.
        g.refuse = Some("the NIC needs NVSP 5 for more than one channel");
        assert_eq!(
            exec(&mut g, "-L eth0 combined 5"),
            fail("netlink error: Invalid argument\n", 1)
        );
        assert_eq!(
            exec(&mut g, "-L eth1 combined 1"),
            fail(
                "netlink error: no device matches name (offset 24)\n\
                 netlink error: No such device\n",
                1
            )
        );
    }

    #[test]
    fn set_rings_end_to_end() {
        let mut g = FakeGuest::new(azure());
        let netlink = |msg: &str, errno: &str| {
            fail(
                &format!("netlink error: {msg}\nnetlink error: {errno}\n"),
                81,
            )
        };
        assert_eq!(exec(&mut g, "-G eth0 rx 4096 tx 0x200"), Output::default());
        assert_eq!(exec(&mut g, "-G eth0 tx 5"), Output::default());
        // Unchanged, or RX mini/jumbo 0: nothing to do.
        for s in ["-G eth0", "-G eth0 rx 4096", "-G eth0 rx-mini 0 rx-jumbo 0"] {
            assert_eq!(exec(&mut g, s), Output::default(), "{s}");
        }
        assert_eq!(
            g.requests,
            vec![
                json!({"cmd": "set_rings", "rx": 4096, "tx": 512}),
                json!({"cmd": "set_rings", "tx": 5}),
            ]
        );
        // The driver clamps to 10.
        assert!(
            exec(&mut g, "-g eth0")
                .stdout
                .contains("RX:\t\t4096\nRX Mini:\tn/a\nRX Jumbo:\tn/a\nTX:\t\t10\nRX Buf")
        );
        assert_eq!(
            exec(&mut g, "-G eth0 rx 18812"),
            netlink("requested ring size exceeds maximum (offset 36)", EINVAL)
        );
        assert_eq!(
            exec(&mut g, "-G eth0 rx 100 tx 2561"),
            netlink("requested ring size exceeds maximum (offset 44)", EINVAL)
        );
        assert_eq!(
            exec(&mut g, "-G eth0 tx 100 rx-jumbo 1 rx-mini 1"),
            netlink("requested ring size exceeds maximum (offset 52)", EINVAL)
        );
        assert_eq!(
            exec(&mut g, "-G eth0 rx 100 tx-push off"),
            netlink("setting tx push not supported (offset 44)", EOPNOTSUPP)
        );
        assert_eq!(
            exec(&mut g, "-G eth0 tx-push on cqe-size 64 rx-buf-len 1"),
            netlink("setting rx buf len not supported (offset 52)", EOPNOTSUPP)
        );
        assert_eq!(
            exec(&mut g, "-G eth1 cqe-size 0"),
            netlink("integer out of range (offset 36)", ERANGE)
        );
        assert_eq!(
            exec(&mut g, "-G eth1 rx 100"),
            fail(
                "netlink error: no device matches name (offset 24)\n\
                 netlink error: No such device\n",
                81
            )
        );
        assert_eq!(g.requests.len(), 2);
        g.refuse = Some("no memory");
        assert_eq!(
            exec(&mut g, "-G eth0 rx 100"),
            fail("netlink error: Invalid argument\n", 81)
        );
    }

    #[test]
    fn set_rxfh_end_to_end() {
        let mut g = FakeGuest::new(azure());
        let set_err = |errno: &str| {
            fail(
                &format!("Cannot set RX flow hash configuration: {errno}\n"),
                1,
            )
        };
        assert_eq!(exec(&mut g, "-X eth0 equal 2"), Output::default());
        assert_eq!(
            g.requests.last().unwrap()["table"],
            json!((0..128).map(|i| i % 2).collect::<Vec<u32>>())
        );
        assert_eq!(exec(&mut g, "-X eth0 weight 1 2 1"), Output::default());
        let t: Vec<u32> = (0..128)
            .map(|i| match i {
                0..32 => 0,
                32..96 => 1,
                _ => 2,
            })
            .collect();
        assert_eq!(g.requests.last().unwrap()["table"], json!(t));
        assert!(
            exec(&mut g, "-x eth0")
                .stdout
                .contains("   24:      0     0     0     0     0     0     0     0\n   32:      1")
        );
        assert_eq!(exec(&mut g, "-X eth0 equal 2 start 2"), Output::default());
        assert_eq!(exec(&mut g, "-X eth0 default"), Output::default());
        assert_eq!(
            g.requests.last().unwrap()["table"],
            json!(default_table(128, 4))
        );
        let key = "00:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f:10:11:12:13:14:15:16:17:18:\
                   19:1a:1b:1c:1d:1e:1f:20:21:22:23:24:25:26:27";
        assert_eq!(
            exec(&mut g, &format!("-X eth0 hkey {key} hfunc toeplitz")),
            Output::default()
        );
        assert_eq!(
            g.requests.last().unwrap(),
            &json!({"cmd": "set_rss", "key": (0..40).map(|b| format!("{b:02x}")).collect::<String>()})
        );
        assert!(
            exec(&mut g, "-x eth0")
                .stdout
                .contains(&format!("RSS hash key:\n{key}\n"))
        );
        // hfunc toeplitz alone changes nothing.
        let n = g.requests.len();
        assert_eq!(exec(&mut g, "-X eth0 hfunc toeplitz"), Output::default());
        assert_eq!(g.requests.len(), n);
        // Refusals, in ethtool's and the kernel's order.
        assert_eq!(exec(&mut g, "-X eth0 equal 5"), set_err(EINVAL));
        assert_eq!(exec(&mut g, "-X eth0 equal 2 start 3"), set_err(EINVAL));
        assert_eq!(exec(&mut g, "-X eth0 hfunc xor"), set_err(EOPNOTSUPP));
        assert_eq!(
            exec(&mut g, "-X eth0 equal 2 hfunc crc32"),
            set_err(EOPNOTSUPP)
        );
        assert_eq!(
            exec(&mut g, "-X eth0 hfunc foo"),
            fail("Unknown hash function: foo\n", 1)
        );
        assert_eq!(
            exec(&mut g, "-X eth0 context 1 equal 2"),
            set_err(EOPNOTSUPP)
        );
        assert_eq!(
            exec(&mut g, "-X eth0 context new equal 2"),
            set_err(EOPNOTSUPP)
        );
        assert_eq!(
            exec(&mut g, "-X eth0 context 1 delete"),
            set_err(EOPNOTSUPP)
        );
        assert_eq!(
            exec(&mut g, "-X eth0 hkey 00:01"),
            fail("Key is too short for device (2 < 40)\n", 2)
        );
        assert_eq!(
            exec(&mut g, "-X eth0 weight 100 100"),
            fail(
                "Total weight exceeds the size of the indirection table\n",
                1
            )
        );
        assert_eq!(exec(&mut g, "-X eth0 weight 1 1x"), fail(BAD, 1));
        assert_eq!(
            exec(&mut g, "-X eth1 equal 2"),
            fail("Cannot get RX ring count: No such device\n", 1)
        );
        assert_eq!(
            exec(&mut g, "-x eth1"),
            fail("Cannot get RX ring count: No such device\n", 1)
        );
        assert_eq!(
            exec(&mut g, "-x eth0 context 1"),
            fail(
                "Cannot get RX flow hash indir size and/or key size: Operation not supported\n",
                1
            )
        );
        assert_eq!(g.requests.len(), n);
        g.refuse = Some("host refused");
        assert_eq!(exec(&mut g, "-X eth0 equal 3"), set_err(EINVAL));
    }

    #[test]
    fn single_queue_nic() {
        let mut g = FakeGuest::new(azure());
        g.rss = None;
        g.channels = (1, 1);
        assert_eq!(
            exec(&mut g, "-x eth0"),
            Output::ok(format!(
                "RX flow hash indirection table for eth0 with 1 RX ring(s):\n\
                 Operation not supported\n\
                 RSS hash key:\n{}\n\
                 RSS hash function:\n    toeplitz: on\n    xor: off\n    crc32: off\n",
                ["00"; 40].join(":")
            ))
        );
        assert_eq!(
            exec(&mut g, "-X eth0 equal 1"),
            fail(
                "Cannot set RX flow hash configuration: Operation not supported\n",
                1
            )
        );
        assert_eq!(
            exec(&mut g, "-X eth0 weight 1"),
            fail(
                "Total weight exceeds the size of the indirection table\n",
                1
            )
        );
        assert_eq!(exec(&mut g, "-X eth0 hfunc toeplitz"), Output::default());
        assert_eq!(exec(&mut g, "-n eth0").stdout, "1 RX rings available\n");
        assert_eq!(
            exec(&mut g, "-L eth0 combined 2"),
            fail(
                "netlink error: requested channel count exceeds maximum (offset 36)\n\
                 netlink error: Invalid argument\n",
                1
            )
        );
        assert!(g.requests.is_empty());
    }
}
