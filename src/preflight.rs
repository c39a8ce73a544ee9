//! What `splitdns check` verifies beyond the file's own validity: the things `serve` would
//! trip over once it runs, so that `rc-service splitdns checkconfig` and systemd's
//! `ExecStartPre` fail before the service does.
//!
//! - `user` names an account that exists (as root, `serve` refuses to start otherwise);
//! - an `events.output` file can be opened for append: its directory exists and the file
//!   (or, when it does not exist yet, the directory) is writable;
//! - every `servers_file` that exists can be read (missing is fine: DHCP writes it later).
//!
//! Permissions are judged for the identity `serve` will have when it opens the file: the
//! `user` (its uid and primary group only, as `privs` leaves it) when this runs as root with
//! `user` set, else this process's own uid and groups. The verdict comes from the mode bits
//! (root may do anything); ACLs are not read. Errors point at the key's line in the config.
//!
//! This module only looks: it never creates, opens for writing, or changes anything.

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::unistd::{self, User};

use crate::config::{Config, ConfigError, EventsOutput};
use crate::dhcp;

/// Who will open the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The uid.
    pub uid: u32,
    /// The primary gid first, then any supplementary groups.
    pub gids: Vec<u32>,
    /// How to name it in messages (`user `splitdns``, `this user`).
    pub name: String,
}

/// Read, write or search (execute) permission, as the mode bits spell them.
const READ: u32 = 4;
const WRITE: u32 = 2;
const SEARCH: u32 = 1;

/// Whether `who` may do `want` (a mix of `READ`, `WRITE`, `SEARCH`) to a file with `meta`,
/// by its mode bits: owner, else group, else other. Root may do anything.
pub fn permits(meta: &Metadata, who: &Identity, want: u32) -> bool {
    mode_permits(meta.mode(), meta.uid(), meta.gid(), who, want)
}

fn mode_permits(mode: u32, owner: u32, group: u32, who: &Identity, want: u32) -> bool {
    if who.uid == 0 {
        return true;
    }
    let bits = if owner == who.uid {
        mode >> 6
    } else if who.gids.contains(&group) {
        mode >> 3
    } else {
        mode
    } & 7;
    bits & want == want
}

/// Runs every check; the first problem is returned as an error naming the config key.
///
/// # Errors
/// A `ConfigError::Invalid` at the key's line: `user`, `events.output` or
/// `zone[N].servers_file`.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    let who = identity(config)?;
    if let EventsOutput::File(path) = &config.events {
        check_events_file(path, &who).map_err(|m| config.error_at("events.output", m))?;
    }
    for (i, zone) in config.zones.iter().enumerate() {
        if let Some(path) = &zone.servers_file {
            check_servers_file(path, &who)
                .map_err(|m| config.error_at(&format!("zone[{i}].servers_file"), m))?;
        }
    }
    Ok(())
}

/// The identity `serve` will open files as; an unknown `user` is an error.
fn identity(config: &Config) -> Result<Identity, ConfigError> {
    let me = || Identity {
        uid: unistd::geteuid().as_raw(),
        gids: std::iter::once(unistd::getegid())
            .chain(unistd::getgroups().unwrap_or_default())
            .map(|g| g.as_raw())
            .collect(),
        name: "this user".to_owned(),
    };
    let Some(name) = &config.user else {
        return Ok(me());
    };
    let user = match User::from_name(name) {
        Ok(Some(u)) => u,
        Ok(None) => {
            return Err(config.error_at(
                "user",
                format!("`{name}` does not exist (serve, started as root, would refuse to run)"),
            ))
        }
        Err(e) => {
            return Err(config.error_at("user", format!("cannot look up `{name}`: {e}")));
        }
    };
    if unistd::geteuid().is_root() {
        Ok(Identity {
            uid: user.uid.as_raw(),
            gids: vec![user.gid.as_raw()],
            name: format!("user `{name}`"),
        })
    } else {
        // Not root: `serve` will not switch users either.
        Ok(me())
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The events file: opened with append + create by the event writer.
fn check_events_file(path: &Path, who: &Identity) -> Result<(), String> {
    let dir = parent_dir(path);
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(format!("{} is a directory", path.display())),
        Ok(meta) => {
            if permits(&meta, who, WRITE) {
                Ok(())
            } else {
                Err(format!(
                    "{} is not writable by {} (mode {:o}, owner {}:{})",
                    path.display(),
                    who.name,
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid()
                ))
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let meta = match std::fs::metadata(&dir) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(format!(
                        "directory {} does not exist (create it, or the events cannot be written)",
                        dir.display()
                    ))
                }
                Err(e) => return Err(format!("cannot look at directory {}: {e}", dir.display())),
            };
            if !meta.is_dir() {
                Err(format!("{} is not a directory", dir.display()))
            } else if !permits(&meta, who, WRITE | SEARCH) {
                Err(format!(
                    "cannot create {}: directory {} is not writable by {} (mode {:o}, owner {}:{})",
                    path.display(),
                    dir.display(),
                    who.name,
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid()
                ))
            } else {
                Ok(())
            }
        }
        Err(e) => Err(format!("cannot look at {}: {e}", path.display())),
    }
}

/// A servers file: missing is fine, unreadable is not.
fn check_servers_file(path: &Path, who: &Identity) -> Result<(), String> {
    // Read it as this process does (`check` prints its servers), then judge for `who`.
    if let Err(e) = dhcp::read(path) {
        return Err(format!("cannot read {}: {e}", path.display()));
    }
    let dir = parent_dir(path);
    if let Ok(meta) = std::fs::metadata(&dir) {
        if meta.is_dir() && !permits(&meta, who, SEARCH) {
            return Err(format!(
                "directory {} cannot be entered by {} (mode {:o}), so {} cannot be read",
                dir.display(),
                who.name,
                meta.mode() & 0o7777,
                path.display()
            ));
        }
    }
    match std::fs::metadata(path) {
        Ok(meta) if !permits(&meta, who, READ) => Err(format!(
            "{} is not readable by {} (mode {:o}, owner {}:{})",
            path.display(),
            who.name,
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(uid: u32, gids: &[u32]) -> Identity {
        Identity {
            uid,
            gids: gids.to_vec(),
            name: "t".into(),
        }
    }

    #[test]
    fn mode_bits_owner_then_group_then_other() {
        let u = who(1000, &[100, 200]);
        // Owner bits decide for the owner, even when group or other would allow more.
        assert!(mode_permits(0o600, 1000, 0, &u, READ | WRITE));
        assert!(!mode_permits(0o066, 1000, 100, &u, READ));
        // Group bits for a member of the file's group (supplementary too).
        assert!(mode_permits(0o060, 0, 200, &u, READ | WRITE));
        assert!(!mode_permits(0o040, 0, 200, &u, WRITE));
        // Other bits for everyone else.
        assert!(mode_permits(0o755, 0, 0, &u, READ | SEARCH));
        assert!(!mode_permits(0o755, 0, 0, &u, WRITE));
        assert!(!mode_permits(0o700, 0, 0, &u, SEARCH));
        // Root may do anything.
        assert!(mode_permits(
            0o000,
            5,
            5,
            &who(0, &[0]),
            READ | WRITE | SEARCH
        ));
    }
}
