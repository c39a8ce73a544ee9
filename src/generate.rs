//! `splitdns generate`: the man page (clap_mangen) and shell completion scripts
//! (clap_complete), written to stdout from the same command-line definition the binary
//! parses, so they cannot drift from it. Packagers run it at build time (see
//! `alpine/APKBUILD`). Pure text generation: reads nothing, writes only to the given writer.

use std::io::{self, Write};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, Generated};

/// Writes `what` to `out`.
///
/// # Errors
/// If `out` cannot be written.
pub fn write(what: Generated, out: &mut dyn Write) -> io::Result<()> {
    let mut cmd = Cli::command();
    match what {
        Generated::Man => man(cmd, out),
        Generated::CompleteBash => complete(Shell::Bash, &mut cmd, out),
        Generated::CompleteZsh => complete(Shell::Zsh, &mut cmd, out),
        Generated::CompleteFish => complete(Shell::Fish, &mut cmd, out),
    }
}

fn complete(shell: Shell, cmd: &mut clap::Command, out: &mut dyn Write) -> io::Result<()> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, cmd, "splitdns", &mut buf);
    out.write_all(&buf)
}

/// Escapes text for a roff paragraph: backslashes, and a leading `.` or `'` that roff
/// would take for a request.
fn roff_text(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

fn man(cmd: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    let page = clap_mangen::Man::new(cmd.clone())
        .manual("splitdns manual")
        .source(format!("splitdns {}", env!("CARGO_PKG_VERSION")));
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    writeln!(out, ".SH DESCRIPTION")?;
    for para in DESCRIPTION {
        writeln!(out, ".PP\n{}", roff_text(para))?;
    }
    page.render_options_section(out)?;
    writeln!(out, ".SH COMMANDS")?;
    for sub in cmd.get_subcommands() {
        let mut sub = sub.clone().bin_name(format!("splitdns {}", sub.get_name()));
        let usage = sub.render_usage().to_string();
        let usage = usage.trim_start_matches("Usage: ");
        writeln!(out, ".TP\n\\fB{}\\fR", roff_text(usage))?;
        if let Some(about) = sub.get_about() {
            writeln!(out, "{}", roff_text(&about.to_string()))?;
        }
        for arg in sub.get_arguments() {
            if arg.is_global_set() || arg.get_id() == "help" {
                continue;
            }
            let name = match (arg.get_long(), arg.get_value_names()) {
                (Some(l), Some(v)) => format!("\\-\\-{l} {}", v.join(" ")),
                (Some(l), None) => format!("\\-\\-{l}"),
                (None, _) => arg.get_id().as_str().to_ascii_uppercase(),
            };
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            writeln!(out, ".RS\n.TP\n\\fI{name}\\fR\n{}\n.RE", roff_text(&help))?;
        }
    }
    for (title, paras) in SECTIONS {
        writeln!(out, ".SH {title}")?;
        for (tag, text) in *paras {
            if tag.is_empty() {
                writeln!(out, ".PP\n{}", roff_text(text))?;
            } else {
                writeln!(out, ".TP\n\\fB{}\\fR\n{}", roff_text(tag), roff_text(text))?;
            }
        }
    }
    page.render_version_section(out)?;
    Ok(())
}

const DESCRIPTION: &[&str] = &[
    "splitdns is a local DNS forwarding resolver. It listens on 127.0.0.1, routes every query by \
     domain suffix to a zone (the longest matching suffix on label boundaries; DS for a zone \
     apex goes to the parent), and asks that zone's servers one at a time, in order: the next \
     server only on a timeout, a network error or a failover rcode. Answers are passed back as \
     the server sent them, cached by their TTL (TTL 0 is never cached), and every query yields \
     one JSON event.",
    "It exists because musl libc (Alpine) sends each query to every nameserver line of \
     /etc/resolv.conf at once: with splitdns, resolv.conf says nameserver 127.0.0.1 and \
     nothing else, and the split lives in the configuration file.",
];

type Section = (&'static str, &'static [(&'static str, &'static str)]);

const SECTIONS: &[Section] = &[
    (
        "FILES",
        &[
            (
                "/etc/splitdns/splitdns.toml",
                "The configuration (TOML; unknown keys are rejected). Check it with splitdns check.",
            ),
            (
                "/run/splitdns/upstreams.conf",
                "The servers file of the shipped configuration: nameserver lines in resolv.conf \
                 format, written by splitdns dhcp-hook from the DHCP client and re-read when \
                 it changes.",
            ),
        ],
    ),
    (
        "SIGNALS",
        &[
            (
                "SIGHUP",
                "Re-read the configuration and servers files; a configuration that fails to \
                 validate is logged and the running one is kept.",
            ),
            (
                "SIGTERM, SIGINT",
                "Stop accepting queries, answer those in flight, and exit 0.",
            ),
        ],
    ),
    (
        "EXIT STATUS",
        &[
            ("0", "Success."),
            ("1", "A configuration or runtime error (the message names file, line and key)."),
            ("2", "A usage error on the command line."),
        ],
    ),
    (
        "EXAMPLES",
        &[
            ("splitdns -c config/quickstart.toml check", "Validate a configuration."),
            (
                "splitdns route web.service.consul SRV",
                "Show the zone a name routes to and its servers in the order they are tried.",
            ),
            (
                "dig @127.0.0.1 web.service.consul",
                "Ask the running resolver.",
            ),
        ],
    ),
    (
        "SEE ALSO",
        &[("", "resolv.conf(5), unbound(8), dnsmasq(8), dig(1)")],
    ),
];
