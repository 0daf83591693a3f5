//! How glibc's `malloc` treats the memory a served app frees (compiled for Linux with glibc
//! only: Windows' heap, musl and macOS are left as they are).
//!
//! A WSGI app's large objects (response pieces, `wsgi.input` reads, rendered pages) are
//! allocated by CPython with `malloc`, and freed a moment later. glibc gives the free memory at
//! the top of a thread's arena back to the kernel once it exceeds `M_TRIM_THRESHOLD` (128 KiB
//! at start, raised only when a large `mmap`ed block happens to be freed), and the next request
//! faults the same pages in again, zeroed. Serving 1 MiB responses in 64 KiB pieces, that was
//! up to 50 page faults and a third of an `madvise` a request, and 9% of the server's CPU a
//! response (docs/benchmarks.md, "Memory given back and faulted in again"; decisions/0013).
//!
//! A server process reuses its memory request after request, so it keeps what it freed: up to
//! [`TRIM_THRESHOLD`] at the top of each arena. Blocks of [`MMAP_THRESHOLD`] or more (a whole large
//! upload read at once, a big response built in memory) are still mapped apart and given back
//! when freed. An environment that sets either threshold (or the top pad, or the mmap count) in
//! `GLIBC_TUNABLES` or glibc's older `MALLOC_*_` variables is left to decide.

/// Free memory an arena keeps at its top before giving it back.
pub(crate) const TRIM_THRESHOLD: usize = 8 << 20;
/// Blocks at least this large are mapped on their own (and unmapped when freed).
pub(crate) const MMAP_THRESHOLD: usize = 4 << 20;

/// glibc's settings of what [`keep_freed_memory`] sets: each as a tunable (in `GLIBC_TUNABLES`)
/// and as the older variable of its own.
const GLIBC_SETTINGS: [(&str, &str); 4] = [
    ("glibc.malloc.trim_threshold", "MALLOC_TRIM_THRESHOLD_"),
    ("glibc.malloc.mmap_threshold", "MALLOC_MMAP_THRESHOLD_"),
    ("glibc.malloc.top_pad", "MALLOC_TOP_PAD_"),
    ("glibc.malloc.mmap_max", "MALLOC_MMAP_MAX_"),
];

/// What [`keep_freed_memory`] did, for the log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The thresholds are set.
    Set,
    /// The environment sets them (the variable named): left as it says.
    LeftToEnvironment(&'static str),
    /// glibc refused the values.
    Refused,
}

/// Whether the environment `var` reads already sets what [`keep_freed_memory`] would: the
/// variable that does, if one does. Other malloc settings (the arena count) do not count.
fn configured_by(var: impl Fn(&str) -> Option<String>) -> Option<&'static str> {
    let tunables = var("GLIBC_TUNABLES").unwrap_or_default();
    let in_tunables = |name: &str| {
        tunables
            .split(':')
            .any(|t| t.split('=').next() == Some(name))
    };
    GLIBC_SETTINGS.into_iter().find_map(|(tunable, variable)| {
        if in_tunables(tunable) {
            Some("GLIBC_TUNABLES")
        } else {
            var(variable).is_some().then_some(variable)
        }
    })
}

/// Sets the thresholds above, unless the environment configures malloc itself. Call it before
/// the serving threads start: each thread's arena follows the process-wide values.
pub(crate) fn keep_freed_memory() -> Outcome {
    if let Some(name) = configured_by(|name| std::env::var(name).ok()) {
        return Outcome::LeftToEnvironment(name);
    }
    set_thresholds()
}

fn set_thresholds() -> Outcome {
    let (Ok(trim), Ok(mmap)) = (
        libc::c_int::try_from(TRIM_THRESHOLD),
        libc::c_int::try_from(MMAP_THRESHOLD),
    ) else {
        return Outcome::Refused;
    };
    // SAFETY: mallopt only sets allocator parameters; it takes the arena lock itself.
    // The mmap threshold first: setting it also stops glibc from moving both on its own.
    let set = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, trim) == 1
    };
    if set {
        Outcome::Set
    } else {
        Outcome::Refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn thresholds_the_environment_sets_are_left_alone() {
        assert_eq!(configured_by(env(&[])), None);
        assert_eq!(
            configured_by(env(&[(
                "GLIBC_TUNABLES",
                "glibc.rtld.nns=2:glibc.malloc.arena_max=2"
            )])),
            None,
            "other tunables, the arena count among them, are not what is set here"
        );
        assert_eq!(
            configured_by(env(&[(
                "GLIBC_TUNABLES",
                "glibc.rtld.nns=2:glibc.malloc.trim_threshold=0"
            )])),
            Some("GLIBC_TUNABLES")
        );
        assert_eq!(
            configured_by(env(&[(
                "GLIBC_TUNABLES",
                "glibc.malloc.mmap_threshold=131072"
            )])),
            Some("GLIBC_TUNABLES")
        );
        assert_eq!(
            configured_by(env(&[("MALLOC_MMAP_THRESHOLD_", "131072")])),
            Some("MALLOC_MMAP_THRESHOLD_")
        );
        assert_eq!(configured_by(env(&[("MALLOC_ARENA_MAX", "2")])), None);
    }

    #[test]
    fn glibc_takes_the_thresholds() {
        assert_eq!(set_thresholds(), Outcome::Set);
    }
}
