//! The command line (clap derive). Produces values only: no files or sockets here.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

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

    /// Diagnostic log filter (RUST_LOG syntax), e.g. `info` or `splitdns=debug`.
    #[arg(long, global = true, default_value = "info", env = "SPLITDNS_LOG")]
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
    },
    /// Write the DNS servers from a DHCP client's environment (dhclient or udhcpc) to FILE.
    DhcpHook {
        /// The servers file to write atomically (a zone's `servers_file`).
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
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
