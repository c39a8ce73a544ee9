//! The command line (clap derive). Produces values only: no files or sockets here.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::filter::{LevelFilter, Targets};

/// splitdns: a local DNS forwarder that routes by domain suffix and asks each zone's
/// servers one at a time, in order.
#[derive(Debug, Parser)]
#[command(name = "splitdns", version, about, long_about = None)]
pub struct Cli {
    /// Config file.
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        default_value = "/etc/splitdns/splitdns.toml"
    )]
    pub config: PathBuf,

    /// Diagnostic log filter: a level (off, error, warn, info, debug, trace) or
    /// comma-separated TARGET=LEVEL directives, e.g. `info,splitdns=debug`.
    #[arg(
        long,
        global = true,
        default_value = "info",
        env = "SPLITDNS_LOG",
        value_parser = log_filter
    )]
    pub log_level: String,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the resolver.
    Serve {
        /// Listen address (repeatable; overrides `listen` in the config; port 0 picks one).
        #[arg(long = "listen", value_name = "ADDR")]
        listen: Vec<SocketAddr>,
    },
    /// Validate the config and servers files, print one line per zone; exit 1 on error.
    Check,
    /// Print the zone NAME routes to and its servers in the order they are tried.
    Route {
        /// Domain name.
        name: String,
        /// Query type (DS for a zone apex routes to the parent).
        #[arg(default_value = "A")]
        qtype: String,
        /// Query class: IN, or CH for the CHAOS identity queries (`version.bind`).
        #[arg(long = "class", default_value = "IN", value_name = "CLASS")]
        qclass: String,
    },
    /// Talk to the running daemon over its control socket (`[control] socket`).
    Control {
        /// What to ask.
        #[command(subcommand)]
        command: ControlCommand,
    },
    /// Write the DNS servers from a DHCP client's environment (dhclient or udhcpc) to FILE.
    #[command(
        override_usage = "splitdns dhcp-hook --output <FILE> [--resolv-conf <FILE>] [EVENT]"
    )]
    DhcpHook {
        /// The servers file to write atomically (a zone's `servers_file`).
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
        /// Also replace FILE (the shipped hooks: /etc/resolv.conf) with
        /// `nameserver 127.0.0.1` plus the lease's `search` line; without it, untouched.
        #[arg(long, value_name = "FILE")]
        resolv_conf: Option<PathBuf>,
        /// udhcpc's event ($1: bound, renew, deconfig, leasefail, ...); dhclient uses $reason.
        event: Option<String>,
    },
    /// Print the man page or a shell completion script to stdout (for packagers).
    Generate {
        /// What to print.
        what: Generated,
    },
}

/// What `splitdns generate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generated {
    /// The man page, splitdns(1), in roff.
    Man,
    /// Completions for bash.
    CompleteBash,
    /// Completions for zsh.
    CompleteZsh,
    /// Completions for fish.
    CompleteFish,
}

/// The levels a `--log-level` directive may name.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a `--log-level` value: every comma-separated directive ends in a level name, so a
/// typo (`--log-level verbose`) is a usage error instead of a filter that silently matches
/// a target named `verbose` and hides every message.
///
/// # Errors
/// Names the directive that is not a level or `TARGET=LEVEL`.
pub fn log_filter(value: &str) -> Result<String, String> {
    log_directives(value).map(|_| value.to_owned())
}

/// The filter a checked `--log-level` value stands for: the bare level is the default for
/// every target, and each `TARGET=LEVEL` applies to that target and the modules under it
/// (the most specific one wins), as with `RUST_LOG`.
///
/// # Errors
/// As [`log_filter`].
pub fn log_targets(value: &str) -> Result<Targets, String> {
    let mut targets = Targets::new();
    for (target, level) in log_directives(value)? {
        targets = match target {
            Some(t) => targets.with_target(t, level),
            None => targets.with_default(level),
        };
    }
    Ok(targets)
}

/// The directives of a `--log-level` value: an optional target and its level.
fn log_directives(value: &str) -> Result<Vec<(Option<&str>, LevelFilter)>, String> {
    let directives: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Err(format!("empty; use one of {}", LEVELS.join(", ")));
    }
    let mut out = Vec::with_capacity(directives.len());
    for d in directives {
        let (target, level) = match d.rsplit_once('=') {
            Some((t, l)) => (Some(t.trim()), l.trim()),
            None => (None, d),
        };
        let Some(level) = level_named(level) else {
            return Err(format!(
                "`{d}`: `{level}` is not a level (one of {}; or TARGET=LEVEL, e.g. splitdns=debug)",
                LEVELS.join(", ")
            ));
        };
        if target.is_some_and(str::is_empty) {
            return Err(format!("`{d}`: TARGET=LEVEL needs a target before `=`"));
        }
        out.push((target, level));
    }
    Ok(out)
}

/// A level by its name, in any case (`LevelFilter`'s own parser also takes digits).
fn level_named(name: &str) -> Option<LevelFilter> {
    match name.to_ascii_lowercase().as_str() {
        "off" => Some(LevelFilter::OFF),
        "error" => Some(LevelFilter::ERROR),
        "warn" => Some(LevelFilter::WARN),
        "info" => Some(LevelFilter::INFO),
        "debug" => Some(LevelFilter::DEBUG),
        "trace" => Some(LevelFilter::TRACE),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filter_takes_levels_and_target_levels_only() {
        for ok in [
            "info",
            "DEBUG",
            "warn,splitdns=trace",
            "splitdns::reload=debug",
            "off",
        ] {
            assert_eq!(log_filter(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in [
            "",
            " , ",
            "verbose",
            "splitdns=loud",
            "info,debg",
            "=debug",
            "3",
        ] {
            assert!(log_filter(bad).is_err(), "{bad:?} accepted");
        }
        assert!(log_filter("verbose")
            .unwrap_err()
            .contains("`verbose` is not a level"));
    }

    #[test]
    fn log_targets_filter_by_level_and_most_specific_target() {
        use tracing::Level;
        let on = |filter: &str, target: &str, level: Level| {
            log_targets(filter)
                .unwrap_or_else(|e| panic!("{filter}: {e}"))
                .would_enable(target, &level)
        };
        assert!(on("info", "splitdns::app", Level::INFO));
        assert!(on("info", "hickory_proto::op", Level::WARN));
        assert!(!on("info", "splitdns::app", Level::DEBUG));
        assert!(on("DEBUG", "splitdns::app", Level::DEBUG));
        assert!(!on("off", "splitdns::app", Level::ERROR));
        // A target directive covers the modules under it, and the most specific one wins.
        let f = " warn , splitdns=debug,splitdns::reload=trace,splitdns::event=off ";
        assert!(on(f, "splitdns::reload", Level::TRACE));
        assert!(on(f, "splitdns::app", Level::DEBUG));
        assert!(!on(f, "splitdns::app", Level::TRACE));
        assert!(!on(f, "splitdns::event::sink", Level::ERROR));
        assert!(on(f, "rustls::client", Level::WARN));
        assert!(!on(f, "rustls::client", Level::INFO));
        // Only target directives: everything else is off.
        assert!(on("splitdns=info", "splitdns::app", Level::INFO));
        assert!(!on("splitdns=info", "rustls", Level::ERROR));
        assert!(log_targets("info,debg").is_err());
    }
}

/// `splitdns control …` commands.
#[derive(Debug, Subcommand)]
pub enum ControlCommand {
    /// Version, uptime, config generation, each zone's servers in order with their health
    /// and back-off, the servers files, forwarding-loop verdicts.
    Status,
    /// Counters since start: queries by zone, rcode, cache outcome and transport; upstream
    /// attempts by server and outcome; failovers; latency percentiles; events.
    Stats {
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Empty the cache: everything, one name (all types): `flush NAME`, or a name and
    /// everything below it: `flush zone NAME`.
    Flush {
        /// Nothing, `NAME`, or `zone NAME`.
        #[arg(value_name = "NAME | zone NAME", num_args = 0..=2)]
        target: Vec<String>,
    },
    /// Re-read the config and the servers files (as SIGHUP does) and report the result.
    Reload,
}
