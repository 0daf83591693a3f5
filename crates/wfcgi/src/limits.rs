//! The open-files limit (Unix): room for `--max-connections`.
//!
//! Each FastCGI connection is a descriptor. A process started from a shell or by a web server
//! often has a soft limit of 1,024 open files (`ulimit -n`), below what the default
//! `--max-connections` (1,024) and the process's own files (the interpreter's, the app's, the
//! log, the runtime's) need together. Past it, accepting fails with "too many open files": the
//! server says so and backs off, and the connection waits in the listen backlog.
//!
//! A process may raise its soft limit up to its hard limit. wfcgi raises it to what
//! `--max-connections` needs, [`RESERVED`] included, and no further: the programs the app starts
//! inherit it, and code that still uses `select()` fails on descriptors past 1,023. When the hard
//! limit is lower than that, a warning names the setting, the limit and the fix. Stdin mode
//! (a socket on fd 0) in one process serves with the server's default limits, its settings
//! coming only with the first request: it makes room for the default 1,024 connections. With
//! `WFCGI_PROCESSES`, whose workers read the settings at start, it makes room for the setting.
//!
//! Unix only: on Windows sockets are not counted against such a limit.

/// Descriptors kept for everything but the connections: the listeners, the runtime's epoll and
/// eventfds, the log file, the interpreter's and the app's files and its database connections.
pub(crate) const RESERVED: u64 = 256;

/// What [`make_room`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Room {
    /// The soft limit was enough.
    Enough,
    /// The soft limit was raised.
    Raised { from: u64, to: u64 },
    /// Not enough, even at `limit`, now the soft limit: the hard limit is lower than `needed`,
    /// or raising the soft limit was refused.
    Short { limit: u64, needed: u64 },
}

/// The soft limit to set for `needed` descriptors given the current `soft` and `hard` limits
/// (`None`: leave it).
fn plan(soft: u64, hard: u64, needed: u64) -> Option<u64> {
    (soft < needed && soft < hard).then(|| needed.min(hard))
}

/// Where the connection count comes from, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Connections {
    /// `--max-connections` (`wfcgi serve`).
    Setting,
    /// The default that stdin mode serves its socket with (the settings come at the first
    /// request, after the server has started).
    Stdin,
}

/// Raises the soft open-files limit to what `max_connections` connections need, up to the hard
/// limit, and logs what it did: at info level when it raised it, a warning when even the hard
/// limit is too low.
pub(crate) fn make_room(max_connections: usize, source: Connections) -> Room {
    let room = raise(max_connections as u64 + RESERVED);
    let what = match source {
        Connections::Setting => {
            format!("--max-connections {max_connections} (WFCGI_MAX_CONNECTIONS)")
        }
        Connections::Stdin => format!("serving up to {max_connections} connections on fd 0"),
    };
    match room {
        Room::Enough => {}
        Room::Raised { from, to } => {
            tracing::info!("open-files limit raised from {from} to {to} for {what}")
        }
        Room::Short { limit, needed } => {
            let fits = limit.saturating_sub(RESERVED).max(1);
            let or_lower = match source {
                Connections::Setting => format!(", or lower --max-connections to {fits}"),
                Connections::Stdin => String::new(),
            };
            tracing::warn!(
                "{what} needs about {needed} open files, but this process may open {limit} \
                 (its hard limit, `ulimit -Hn`): past about {fits} connections, accepting fails \
                 with \"too many open files\" and new connections wait. Fix: raise the hard \
                 limit where wfcgi is started (LimitNOFILE= in a systemd unit, `ulimit -Hn` in \
                 the script that starts it){or_lower}"
            );
        }
    }
    room
}

#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux and macOS, not on every Unix
fn raise(needed: u64) -> Room {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Room::Enough;
    }
    // RLIM_INFINITY is u64::MAX on Linux and the BSDs: "no limit" compares as the largest.
    let (soft, hard) = (limit.rlim_cur as u64, limit.rlim_max as u64);
    let Some(to) = plan(soft, hard, needed) else {
        return if soft >= needed {
            Room::Enough
        } else {
            Room::Short {
                limit: soft,
                needed,
            }
        };
    };
    let raised = libc::rlimit {
        rlim_cur: to as libc::rlim_t,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads the struct it is given; the hard limit is unchanged.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        // macOS refuses more than OPEN_MAX with an unlimited hard limit; so may a sandbox.
        return Room::Short {
            limit: soft,
            needed,
        };
    }
    if to < needed {
        Room::Short { limit: to, needed }
    } else {
        Room::Raised { from: soft, to }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_soft_limit_below_the_need_is_raised_to_the_need_not_to_the_hard_limit() {
        assert_eq!(plan(1024, 524_288, 1280), Some(1280));
        assert_eq!(plan(1024, u64::MAX, 11_256), Some(11_256));
    }

    #[test]
    fn a_hard_limit_below_the_need_is_as_far_as_it_goes() {
        assert_eq!(plan(512, 600, 3256), Some(600));
    }

    #[test]
    fn enough_or_no_room_to_raise_leaves_it() {
        assert_eq!(plan(20_000, 20_000, 1280), None);
        assert_eq!(plan(1280, 4096, 1280), None);
        assert_eq!(plan(600, 600, 3256), None);
    }
}
