//! The binary edge: parse the command line, set up diagnostics, load the config, run the
//! chosen command, map errors to an exit code (0 ok, 1 error, 2 usage — clap's own).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use splitdns::cli::{Cli, Command, ControlCommand};
use splitdns::config::Config;
use splitdns::{app, generate, hook, preflight, privs, reload, state};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// mimalloc instead of the C library's allocator: a forwarded query makes a dozen short-lived
/// allocations (its task, buffers, the event's attempts), and with glibc's malloc they cost
/// about a third of the miss path's user-space instructions (and musl's is slower still).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `--log-level` was checked by clap (cli::log_filter), so this cannot fail; were it to,
    // that is still a usage error rather than a quiet default. A plain target filter, not
    // EnvFilter: the documented syntax is levels and TARGET=LEVEL only, and EnvFilter's
    // regex engine alone is a quarter of a megabyte of code.
    let filter = match splitdns::cli::log_targets(&cli.log_level) {
        Ok(f) => f,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "splitdns: --log-level {:?}: {e}",
                cli.log_level
            );
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                // Never blocks: a line stderr cannot take now is dropped and counted.
                .with_writer(splitdns::diag::Stderr)
                .with_ansi(false)
                // Its default reports write failures with eprintln!, which panics when stderr
                // is gone (a closed pipe): a log line must never take the resolver down.
                .log_internal_errors(false),
        )
        .with(filter)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "splitdns: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each said once: many errors already include
/// their source's text (`cannot read config: Permission denied (os error 13)`), and
/// printing the chain as well would repeat the OS message.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { listen } => {
            let mut config = Config::load(&cli.config)?;
            if !listen.is_empty() {
                config.override_listen(listen)?;
            }
            let sockets = app::bind(&config)?;
            if let Some(user) = &config.user {
                match privs::drop_to(user)? {
                    privs::Dropped::To(uid, gid) => {
                        tracing::info!(user = %user, uid, gid, "dropped root after binding")
                    }
                    privs::Dropped::NotRoot => {
                        tracing::debug!("not root; `user` has nothing to drop")
                    }
                }
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the runtime")?;
            rt.block_on(async {
                // Handlers go in before the sockets are announced: a SIGTERM that arrives
                // right after `listening on` must drain, not kill with the default action.
                let shutdown = shutdown_signal().context("cannot install signal handlers")?;
                app::run(config, sockets, shutdown)
                    .await
                    .map_err(anyhow::Error::from)
            })?;
            Ok(())
        }
        Command::Check => {
            let config = Config::load(&cli.config)?;
            preflight::check(&config)?;
            servers_file_errors(&config)?;
            let files = reload::read_servers_files(&config);
            let (snap, warnings) = state::Snapshot::build(
                Arc::new(config.clone()),
                &files.servers(),
                &config.listen,
                0,
                &splitdns::upstream::Registry::default(),
            );
            for w in &warnings {
                println!("warning: {w}");
            }
            for (z, zc) in snap.zones.iter().zip(&config.zones) {
                println!("{}", zone_summary(z, zc));
            }
            println!("dnssec trust anchors: {}", config.anchors.describe());
            println!("{}: ok ({} zones)", cli.config.display(), snap.zones.len());
            Ok(())
        }
        Command::Route {
            name,
            qtype,
            qclass,
        } => {
            let config = Config::load(&cli.config)?;
            let files = reload::read_servers_files(&config);
            let (snap, _) = state::Snapshot::build(
                Arc::new(config.clone()),
                &files.servers(),
                &config.listen,
                0,
                &splitdns::upstream::Registry::default(),
            );
            let code = parse_qtype(&qtype)?;
            let class = parse_qclass(&qclass)?;
            let wire_name =
                splitdns::route::text_to_wire(name.trim().strip_suffix('.').unwrap_or(name.trim()));
            if let Some(rule) = splitdns::local::classify(&wire_name, code, class, &snap.routes) {
                match splitdns::local::zone_text(rule, &wire_name) {
                    Some(zone) => {
                        println!("{name} {qtype} -> answered locally in zone {zone}: {rule}")
                    }
                    None => println!("{name} {qtype} -> answered locally: {rule}"),
                }
                return Ok(());
            }
            if class != 1 {
                println!("{name} {qtype} class {qclass}: forwarded like class IN");
            }
            let Some(z) = snap
                .routes
                .lookup(&name, code)
                .and_then(|i| snap.zones.get(i))
            else {
                println!("{name} {qtype}: no zone matches (answered REFUSED)");
                return Ok(());
            };
            println!("{name} {qtype} -> zone {}", z.name);
            for (i, s) in z.servers.iter().enumerate() {
                let from = if i < z.from_file {
                    "servers_file"
                } else {
                    "servers"
                };
                println!("  {}. {s} ({from}; {})", i + 1, s.transport_note());
            }
            if z.servers.is_empty() {
                println!("  (no servers: answered SERVFAIL)");
            }
            Ok(())
        }
        Command::Generate { what } => {
            let mut out = std::io::stdout().lock();
            generate::write(what, &mut out)?;
            out.flush()?;
            Ok(())
        }
        Command::Control { command } => control(&cli.config, command),
        Command::DhcpHook {
            output,
            resolv_conf,
            event,
        } => {
            // vars_os: a DHCP option with bytes that are not UTF-8 must not panic the hook.
            let env: std::collections::HashMap<String, String> = std::env::vars_os()
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.to_string_lossy().into_owned(),
                    )
                })
                .collect();
            let report = hook::run(&output, resolv_conf.as_deref(), event.as_deref(), &env)?;
            let servers: Vec<String> = report.servers.iter().map(ToString::to_string).collect();
            // Never panic on a closed stderr: the DHCP client must not see us fail for it.
            let mut err = std::io::stderr();
            let _ = if report.wrote {
                writeln!(
                    err,
                    "splitdns dhcp-hook: {}: wrote {} server(s) to {}: {}",
                    report.event,
                    servers.len(),
                    output.display(),
                    servers.join(" ")
                )
            } else {
                writeln!(err, "splitdns dhcp-hook: {}: nothing to do", report.event)
            };
            if let (true, Some(path)) = (report.wrote_resolv_conf, &resolv_conf) {
                let search = if report.search.is_empty() {
                    "no search line".to_owned()
                } else {
                    format!("search {}", report.search.join(" "))
                };
                let _ = writeln!(
                    err,
                    "splitdns dhcp-hook: {}: wrote {}: nameserver {}, {search}",
                    report.event,
                    path.display(),
                    hook::RESOLV_NAMESERVER
                );
            }
            Ok(())
        }
    }
}

/// What `check` refuses in a servers file although `serve` only skips it (a `tls://`
/// server, which needs settings only the config can give).
fn servers_file_errors(config: &Config) -> anyhow::Result<()> {
    use splitdns::dhcp;
    for (i, z) in config.zones.iter().enumerate() {
        let Some(path) = &z.servers_file else {
            continue;
        };
        let Ok(Some(bytes)) = dhcp::read(path) else {
            continue;
        };
        if let Some((line, m)) = dhcp::parse_bytes(&bytes).errors.first() {
            anyhow::bail!("{}:{line}: zone[{i}].servers_file: {m}", path.display());
        }
    }
    Ok(())
}

/// `splitdns control …`: one request over the control socket; the answer's body goes to
/// stdout, an error is one line (the caller exits 1).
fn control(config_path: &std::path::Path, command: ControlCommand) -> anyhow::Result<()> {
    use splitdns::ops::control::{self, ClientError, Command as Ctl};
    let cmd = match command {
        ControlCommand::Status => Ctl::Status,
        ControlCommand::Stats { json } => Ctl::Stats(json),
        ControlCommand::Reload => Ctl::Reload,
        ControlCommand::Flush { target } => {
            let line = match target.as_slice() {
                [] => "flush".to_owned(),
                [name] => format!("flush name {name}"),
                [z, name] if z == "zone" => format!("flush zone {name}"),
                _ => anyhow::bail!("usage: splitdns control flush [NAME | zone NAME]"),
            };
            Ctl::parse(&line).map_err(anyhow::Error::msg)?
        }
    };
    let path = splitdns::config::read_control_socket(config_path)?
        .ok_or_else(|| ClientError::NotConfigured(config_path.to_owned()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let body = rt.block_on(control::request(&path, &cmd))?;
    let mut out = std::io::stdout();
    let _ = out.write_all(body.as_bytes());
    let _ = out.flush();
    Ok(())
}

fn zone_summary(z: &state::Zone, zc: &splitdns::config::ZoneConfig) -> String {
    let servers: Vec<String> = z.servers.iter().map(ToString::to_string).collect();
    let sockets: Vec<String> = z
        .servers
        .iter()
        .map(|s| format!("{s} {}", s.transport_note()))
        .collect();
    let mut line = format!(
        "zone {}: {} server(s) [{}], timeout {} ms, cache {}, dnssec {}",
        z.name,
        servers.len(),
        servers.join(", "),
        z.timeout.as_millis(),
        if z.cache { "on" } else { "off" },
        z.dnssec.as_str()
    );
    if let Some(f) = &z.servers_file {
        line.push_str(&format!(
            ", servers_file {} ({} server(s))",
            f.display(),
            z.from_file
        ));
    }
    if !zc.reverse_zones.is_empty() {
        line.push_str(&format!(", reverse {}", zc.reverse_zones.join(" ")));
    }
    if !sockets.is_empty() {
        line.push_str(&format!(", sockets [{}]", sockets.join(", ")));
    }
    line
}

fn parse_qtype(t: &str) -> anyhow::Result<u16> {
    use hickory_proto::rr::RecordType;
    let upper = t.to_ascii_uppercase();
    if let Some(n) = upper.strip_prefix("TYPE") {
        return n.parse().with_context(|| format!("bad query type `{t}`"));
    }
    let rt: RecordType = upper
        .parse()
        .map_err(|_| anyhow::anyhow!("unknown query type `{t}`"))?;
    Ok(u16::from(rt))
}

fn parse_qclass(c: &str) -> anyhow::Result<u16> {
    match c.to_ascii_uppercase().as_str() {
        "IN" => Ok(1),
        "CH" | "CHAOS" => Ok(3),
        "HS" => Ok(4),
        other => other
            .strip_prefix("CLASS")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("unknown query class `{c}`")),
    }
}

/// Installs the SIGTERM and SIGINT handlers now and returns the future that completes on
/// the first of them.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    })
}
