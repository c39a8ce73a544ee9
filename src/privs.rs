//! Dropping root after the sockets are bound: when started as root with `user` set, the
//! process switches to that user's uid, primary gid and no supplementary groups, so nothing
//! after startup runs as root. (Under systemd or OpenRC the recommended setup instead starts
//! as the unprivileged user with only CAP_NET_BIND_SERVICE; then there is nothing to drop.)

use nix::unistd::{self, Gid, Uid, User};

/// Why the switch failed.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    /// No such user in the password database.
    #[error("user `{0}` does not exist")]
    NoUser(String),
    /// A system call failed.
    #[error("cannot switch to user `{user}`: {what}: {source}")]
    Sys {
        /// The target user.
        user: String,
        /// The call.
        what: &'static str,
        /// The error.
        source: nix::Error,
    },
}

/// What happened.
#[derive(Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Switched to this uid/gid.
    To(u32, u32),
    /// Not root: nothing to drop (we already run unprivileged).
    NotRoot,
}

/// Switches to `user` if running as root.
///
/// # Errors
/// If the user does not exist or a set*id call fails (the caller must then exit: running
/// on as root was not what the operator asked for).
pub fn drop_to(user: &str) -> Result<Dropped, PrivError> {
    if !Uid::effective().is_root() {
        return Ok(Dropped::NotRoot);
    }
    let sys = |what| {
        move |source| PrivError::Sys {
            user: user.to_owned(),
            what,
            source,
        }
    };
    let u = User::from_name(user)
        .map_err(sys("look up user"))?
        .ok_or_else(|| PrivError::NoUser(user.to_owned()))?;
    unistd::setgroups(&[u.gid]).map_err(sys("setgroups"))?;
    unistd::setgid(u.gid).map_err(sys("setgid"))?;
    unistd::setuid(u.uid).map_err(sys("setuid"))?;
    // Make sure there is no way back.
    if unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivError::Sys {
            user: user.to_owned(),
            what: "verify",
            source: nix::Error::EPERM,
        });
    }
    Ok(Dropped::To(u.uid.as_raw(), Gid::as_raw(u.gid)))
}
