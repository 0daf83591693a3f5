//! Whether the user that serves can read what the app needs, for `wfcgi check`: the app
//! directory, web.config, every folder on `sys.path`, and the folder `WSGI_LOG` writes to.
//!
//! On Unix the check is for the user running `check` (`faccessat` with `AT_EACCESS`, so it
//! answers for the effective user and its capabilities), walking each path's parents for the
//! first one that cannot be searched: run it as the web server's user (`sudo -u www-data wfcgi
//! check ...`). On Windows the user that serves is not the one running `check` (an
//! administrator): it is the IIS app pool's identity. The site's pool and its identity come
//! from applicationHost.config, and each path's DACL is evaluated for the SIDs that identity's
//! token holds (its own, and the groups every app pool identity is in: IIS_IUSRS, Users,
//! Authenticated Users, SERVICE, Everyone).

use std::path::{Path, PathBuf};

/// One path the app needs.
pub(crate) struct Need {
    /// What it is, for the report: "the app directory", "WSGI_LOG".
    pub what: String,
    pub path: PathBuf,
    /// `true`: written to (a log file, or the folder it is created in).
    pub write: bool,
}

/// What the check found: a line per path, and a problem (with its fix) per path that fails.
#[derive(Default)]
pub(crate) struct Findings {
    pub lines: Vec<String>,
    pub problems: Vec<String>,
}

/// Checks each of `needs` for the user that serves. `apphost`: IIS's applicationHost.config
/// (Windows: where the site's app pool and its identity are found).
pub(crate) fn check(needs: &[Need], app_dir: &Path, apphost: Option<&Path>) -> Findings {
    let mut findings = Findings::default();
    let who = platform::Who::find(app_dir, apphost, &mut findings.lines);
    for need in needs {
        match who.can(need) {
            Ok(()) => findings.lines.push(format!(
                "{} {}: {} ({})",
                if need.write { "writes" } else { "reads" },
                need.path.display(),
                "ok",
                need.what
            )),
            Err(why) => {
                let text = format!(
                    "{} cannot {} {} ({}): {why}",
                    who.name(),
                    if need.write { "write" } else { "read" },
                    need.path.display(),
                    need.what,
                );
                findings.lines.push(text.clone());
                findings.problems.push(text);
            }
        }
    }
    findings
}

#[cfg(unix)]
mod platform {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    use super::Need;

    /// The effective user of this process.
    pub(super) struct Who {
        name: String,
    }

    impl Who {
        pub(super) fn find(
            _app_dir: &Path,
            _apphost: Option<&Path>,
            lines: &mut Vec<String>,
        ) -> Who {
            // SAFETY: geteuid cannot fail.
            let uid = unsafe { libc::geteuid() };
            let name = match user_name(uid) {
                Some(name) => format!("uid {uid} ({name})"),
                None => format!("uid {uid}"),
            };
            lines.push(format!("checked for {name}, the user running this check"));
            if uid == 0 {
                lines.push(
                    "note: root may read what the web server's user cannot: run the check as that user (sudo -u www-data wfcgi check ...)".into(),
                );
            }
            Who { name }
        }

        pub(super) fn name(&self) -> &str {
            &self.name
        }

        pub(super) fn can(&self, need: &Need) -> Result<(), String> {
            let path = &need.path;
            // The parents must be searchable, down to the path.
            let mut parents: Vec<&Path> = path.ancestors().skip(1).collect();
            if need.write && !path.exists() {
                // The folder the file is created in is checked for writing, below.
                parents.remove(0);
            }
            parents.reverse();
            for parent in parents.iter().filter(|p| !p.as_os_str().is_empty()) {
                if let Err(e) = access(parent, libc::X_OK) {
                    return Err(format!(
                        "its folder {} cannot be searched ({e}). Fix: chmod o+x {} (or a group the user is in), or chown it to that user",
                        parent.display(),
                        parent.display()
                    ));
                }
            }
            let dir = path.is_dir();
            if need.write {
                if path.exists() {
                    return access(path, libc::W_OK).map_err(|e| {
                        format!(
                            "{e}. Fix: chown the file to that user, or chmod o+w {}",
                            path.display()
                        )
                    });
                }
                let parent = path.parent().unwrap_or(Path::new("/"));
                return access(parent, libc::W_OK | libc::X_OK).map_err(|e| {
                    format!(
                        "its folder {} is not writable, so the file cannot be created ({e}). Fix: create the file and chown it to that user, or point the setting at a folder that user owns",
                        parent.display()
                    )
                });
            }
            let mode = if dir {
                libc::R_OK | libc::X_OK
            } else {
                libc::R_OK
            };
            access(path, mode).map_err(|e| {
                format!(
                    "{e}. Fix: chmod o+r{} {} (or a group the user is in), or chown it to that user",
                    if dir { "x" } else { "" },
                    path.display()
                )
            })
        }
    }

    fn access(path: &Path, mode: libc::c_int) -> std::io::Result<()> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: `c` is a valid NUL-terminated path; faccessat reads it only.
        let rc = unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_EACCESS) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    fn user_name(uid: libc::uid_t) -> Option<String> {
        let mut buf = vec![0 as libc::c_char; 4096];
        // SAFETY: passwd is plain data; getpwuid_r writes into it and `buf`, whose sizes it
        // is given, and `found` points at `pw` or is null.
        unsafe {
            let mut pw: libc::passwd = std::mem::zeroed();
            let mut found: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found);
            if rc != 0 || found.is_null() || pw.pw_name.is_null() {
                return None;
            }
            Some(
                std::ffi::CStr::from_ptr(pw.pw_name)
                    .to_string_lossy()
                    .into_owned(),
            )
        }
    }
}

#[cfg(windows)]
mod platform {
    use std::os::windows::ffi::OsStrExt;
    use std::path::Path;

    use windows_sys::Win32::Foundation::{LocalFree, ERROR_INSUFFICIENT_BUFFER};
    use windows_sys::Win32::Security::Authorization::{
        ConvertSidToStringSidW, GetNamedSecurityInfoW, SE_FILE_OBJECT,
    };
    use windows_sys::Win32::Security::{
        GetAce, LookupAccountNameW, ACCESS_ALLOWED_ACE, ACE_HEADER, ACL, DACL_SECURITY_INFORMATION,
        PSECURITY_DESCRIPTOR, PSID,
    };

    use super::{acl, identity, Need};

    /// The app pool identity and the SIDs its token holds.
    pub(super) struct Who {
        name: String,
        sids: Vec<String>,
    }

    impl Who {
        pub(super) fn find(app_dir: &Path, apphost: Option<&Path>, lines: &mut Vec<String>) -> Who {
            let apphost = apphost
                .map(Path::to_path_buf)
                .unwrap_or_else(crate::iis_traps::default_apphost);
            let text = crate::iis_traps::read(&apphost);
            let pool = text
                .as_deref()
                .and_then(|text| identity::of_site(text, &app_dir.to_string_lossy()));
            let mut sids: Vec<String> =
                identity::EVERY_POOL.iter().map(|s| s.to_string()).collect();
            let name = match &pool {
                None => {
                    lines.push(match text {
                        Some(_) => format!(
                            "note: no site in {} has {} as its folder: checked for the groups every app pool identity is in (IIS_IUSRS, Users, Authenticated Users, Everyone)",
                            apphost.display(),
                            app_dir.display()
                        ),
                        None => format!(
                            "note: cannot read {} (run as an administrator, or give --apphostconfig): checked for the groups every app pool identity is in (IIS_IUSRS, Users, Authenticated Users, Everyone)",
                            apphost.display()
                        ),
                    });
                    "the app pool identity".to_string()
                }
                Some(pool) => {
                    let account = pool.account();
                    sids.extend(pool.builtin_sids().iter().map(|s| s.to_string()));
                    if let Some(account) = &account {
                        match lookup_sid(account) {
                            Some(sid) => sids.push(sid),
                            None => lines.push(format!(
                                "note: the account {account} is not known on this machine: checked for its groups only"
                            )),
                        }
                    }
                    let name = pool.account_name();
                    lines.push(format!(
                        "checked for {name}, the identity of the app pool \"{}\" ({} in {})",
                        pool.pool,
                        pool.identity_type,
                        apphost.display()
                    ));
                    name
                }
            };
            Who { name, sids }
        }

        pub(super) fn name(&self) -> &str {
            &self.name
        }

        pub(super) fn can(&self, need: &Need) -> Result<(), String> {
            let (path, want) = if need.write {
                if need.path.exists() {
                    (need.path.clone(), acl::APPEND)
                } else {
                    let parent = need.path.parent().unwrap_or(Path::new("\\")).to_path_buf();
                    (parent, acl::ADD_FILE)
                }
            } else {
                (need.path.clone(), acl::READ)
            };
            let aces = dacl(&path).map_err(|e| format!("its permissions cannot be read: {e}"))?;
            let fix = format!(
                "Fix: icacls \"{}\" /grant \"{}:{}\"",
                path.display(),
                if self.name.starts_with("the ") {
                    "IIS_IUSRS"
                } else {
                    &self.name
                },
                if need.write {
                    "(OI)(CI)M"
                } else {
                    "(OI)(CI)RX"
                }
            );
            match acl::grants(aces.as_deref(), &self.sids, want) {
                acl::Verdict::Granted => Ok(()),
                acl::Verdict::Denied(sid) => Err(format!(
                    "{} denies it to {sid}. {fix}",
                    if path == need.path {
                        "an entry of its ACL".to_string()
                    } else {
                        format!("an entry of the ACL of {}", path.display())
                    }
                )),
                acl::Verdict::NotGranted => Err(format!(
                    "no entry of {}'s ACL grants it. {fix}",
                    path.display()
                )),
            }
        }
    }

    fn wide(text: &std::ffi::OsStr) -> Vec<u16> {
        text.encode_wide().chain(Some(0)).collect()
    }

    /// The string form (`S-1-...`) of `sid`.
    ///
    /// # Safety
    /// `sid` points at a valid SID.
    unsafe fn sid_string(sid: PSID) -> Option<String> {
        let mut text: *mut u16 = std::ptr::null_mut();
        // SAFETY: the caller's sid is valid; ConvertSidToStringSidW allocates `text`.
        if unsafe { ConvertSidToStringSidW(sid, &mut text) } == 0 || text.is_null() {
            return None;
        }
        // SAFETY: `text` is NUL-terminated, from LocalAlloc, freed once here.
        unsafe {
            let len = (0..).take_while(|&i| *text.add(i) != 0).count();
            let out = String::from_utf16_lossy(std::slice::from_raw_parts(text, len));
            LocalFree(text.cast());
            Some(out)
        }
    }

    fn lookup_sid(account: &str) -> Option<String> {
        let name = wide(std::ffi::OsStr::new(account));
        let mut sid = vec![0u8; 68];
        let mut sid_len = sid.len() as u32;
        let mut domain = vec![0u16; 256];
        let mut domain_len = domain.len() as u32;
        let mut kind = 0;
        for _ in 0..2 {
            // SAFETY: every buffer is as long as the length given with it.
            let ok = unsafe {
                LookupAccountNameW(
                    std::ptr::null(),
                    name.as_ptr(),
                    sid.as_mut_ptr().cast(),
                    &mut sid_len,
                    domain.as_mut_ptr(),
                    &mut domain_len,
                    &mut kind,
                )
            };
            if ok != 0 {
                // SAFETY: LookupAccountNameW wrote a SID into `sid`.
                return unsafe { sid_string(sid.as_mut_ptr().cast()) };
            }
            if std::io::Error::last_os_error().raw_os_error()
                != Some(ERROR_INSUFFICIENT_BUFFER as i32)
            {
                return None;
            }
            sid.resize(sid_len as usize, 0);
            domain.resize(domain_len as usize, 0);
        }
        None
    }

    /// The DACL of `path`, allow and deny entries in order; `None`: a null DACL (all access).
    fn dacl(path: &Path) -> std::io::Result<Option<Vec<acl::Ace>>> {
        let name = wide(path.as_os_str());
        let mut list: *mut ACL = std::ptr::null_mut();
        let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `name` is NUL-terminated; the out pointers are valid, and the descriptor it
        // allocates is freed below, after the last use of `list` (which points into it).
        let rc = unsafe {
            GetNamedSecurityInfoW(
                name.as_ptr(),
                SE_FILE_OBJECT,
                DACL_SECURITY_INFORMATION,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut list,
                std::ptr::null_mut(),
                &mut descriptor,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc as i32));
        }
        let aces = if list.is_null() {
            None
        } else {
            let mut aces = Vec::new();
            // SAFETY: `list` is the DACL GetNamedSecurityInfoW returned, valid while
            // `descriptor` lives; GetAce hands out pointers into it, each an ACE whose header
            // says its type, and allow and deny ACEs share ACCESS_ALLOWED_ACE's layout.
            unsafe {
                for i in 0..(*list).AceCount {
                    let mut ace: *mut core::ffi::c_void = std::ptr::null_mut();
                    if GetAce(list, u32::from(i), &mut ace) == 0 {
                        continue;
                    }
                    let header = &*(ace as *const ACE_HEADER);
                    let kind = match header.AceType {
                        0 => acl::Kind::Allow,
                        1 => acl::Kind::Deny,
                        _ => continue,
                    };
                    let entry = &*(ace as *const ACCESS_ALLOWED_ACE);
                    let sid = std::ptr::addr_of!(entry.SidStart) as PSID;
                    let Some(sid) = sid_string(sid) else { continue };
                    aces.push(acl::Ace {
                        kind,
                        sid,
                        mask: entry.Mask,
                        inherit_only: u32::from(header.AceFlags) & 0x08 != 0,
                    });
                }
            }
            Some(aces)
        };
        // SAFETY: allocated by GetNamedSecurityInfoW, freed once.
        unsafe { LocalFree(descriptor.cast()) };
        Ok(aces)
    }
}

/// A Windows DACL evaluated for a set of SIDs, as the access check does for a token holding
/// them: entries in order, a deny taking the rights not yet granted, an allow granting the
/// rights not yet denied. Pure, so the rules are tested everywhere.
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) mod acl {
    /// FILE_READ_DATA (FILE_LIST_DIRECTORY) | FILE_READ_ATTRIBUTES: open a file, list a folder.
    pub(crate) const READ: u32 = 0x0001 | 0x0080;
    /// FILE_APPEND_DATA: append to a log file.
    pub(crate) const APPEND: u32 = 0x0004;
    /// FILE_ADD_FILE: create a file in a folder.
    pub(crate) const ADD_FILE: u32 = 0x0002;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Kind {
        Allow,
        Deny,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Ace {
        pub kind: Kind,
        /// `S-1-...`
        pub sid: String,
        pub mask: u32,
        /// Applies to children only (INHERIT_ONLY_ACE).
        pub inherit_only: bool,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Verdict {
        Granted,
        /// An entry for this SID denies a wanted right.
        Denied(String),
        /// Nothing grants every wanted right.
        NotGranted,
    }

    /// The generic rights mapped onto a file's (FILE_GENERIC_READ and the like).
    fn map_generic(mask: u32) -> u32 {
        let mut out = mask & 0x0FFF_FFFF;
        if mask & 0x8000_0000 != 0 {
            out |= 0x0012_0089;
        }
        if mask & 0x4000_0000 != 0 {
            out |= 0x0012_0116;
        }
        if mask & 0x2000_0000 != 0 {
            out |= 0x0012_00A0;
        }
        if mask & 0x1000_0000 != 0 {
            out |= 0x001F_01FF;
        }
        out
    }

    /// Whether a token holding `sids` is granted `want` by `aces` (`None`: a null DACL).
    pub(crate) fn grants(aces: Option<&[Ace]>, sids: &[String], want: u32) -> Verdict {
        let Some(aces) = aces else {
            return Verdict::Granted;
        };
        let mut granted = 0u32;
        let mut denied = 0u32;
        let mut denier = None;
        for ace in aces {
            if ace.inherit_only || !sids.iter().any(|s| s.eq_ignore_ascii_case(&ace.sid)) {
                continue;
            }
            let mask = map_generic(ace.mask);
            match ace.kind {
                Kind::Allow => granted |= mask & !denied,
                Kind::Deny => {
                    let newly = mask & !granted;
                    if newly & want != 0 && denier.is_none() {
                        denier = Some(ace.sid.clone());
                    }
                    denied |= newly;
                }
            }
            if granted & want == want {
                return Verdict::Granted;
            }
        }
        match denier {
            Some(sid) if denied & want != 0 => Verdict::Denied(sid),
            _ => Verdict::NotGranted,
        }
    }
}

/// The app pool identity of a site, read from applicationHost.config. Pure, so it is tested
/// everywhere.
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) mod identity {
    /// The groups every app pool identity's token holds: Everyone, Users, Authenticated
    /// Users, SERVICE, IIS_IUSRS.
    pub(crate) const EVERY_POOL: [&str; 5] = [
        "S-1-1-0",
        "S-1-5-32-545",
        "S-1-5-11",
        "S-1-5-6",
        "S-1-5-32-568",
    ];

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Pool {
        pub pool: String,
        /// processModel identityType: ApplicationPoolIdentity (IIS's default),
        /// NetworkService, LocalService, LocalSystem, SpecificUser.
        pub identity_type: String,
        /// processModel userName, for SpecificUser.
        pub user: Option<String>,
    }

    impl Pool {
        /// The account to look up, when it is not a built-in one.
        pub(crate) fn account(&self) -> Option<String> {
            match self.identity_type.to_ascii_lowercase().as_str() {
                "applicationpoolidentity" => Some(format!("IIS APPPOOL\\{}", self.pool)),
                "specificuser" => self.user.clone(),
                _ => None,
            }
        }

        /// The account's name, as icacls takes it.
        pub(crate) fn account_name(&self) -> String {
            match self.identity_type.to_ascii_lowercase().as_str() {
                "networkservice" => "NETWORK SERVICE".into(),
                "localservice" => "LOCAL SERVICE".into(),
                "localsystem" => "SYSTEM".into(),
                _ => self
                    .account()
                    .unwrap_or_else(|| format!("the {} account", self.identity_type)),
            }
        }

        /// The well-known SIDs of a built-in identity.
        pub(crate) fn builtin_sids(&self) -> &'static [&'static str] {
            match self.identity_type.to_ascii_lowercase().as_str() {
                "networkservice" => &["S-1-5-20"],
                "localservice" => &["S-1-5-19"],
                // LocalSystem: and the Administrators group.
                "localsystem" => &["S-1-5-18", "S-1-5-32-544"],
                _ => &[],
            }
        }
    }

    /// `%NAME%` replaced by `var(NAME)`, as IIS expands a physicalPath from the environment.
    fn expand(text: &str, var: &dyn Fn(&str) -> Option<String>) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find('%') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            match after.find('%') {
                Some(end) => {
                    let name = &after[..end];
                    match var(name) {
                        Some(value) if !name.is_empty() => out.push_str(&value),
                        _ => out.push_str(&rest[start..start + end + 2]),
                    }
                    rest = &after[end + 1..];
                }
                None => {
                    out.push_str(&rest[start..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }

    fn same_dir(a: &str, b: &str) -> bool {
        let norm = |s: &str| {
            s.replace('/', "\\")
                .trim_end_matches('\\')
                .to_ascii_lowercase()
        };
        norm(a) == norm(b)
    }

    fn defaults<'a>(node: roxmltree::Node<'a, '_>) -> Option<&'a str> {
        node.children()
            .find(|c| c.has_tag_name("applicationDefaults"))
            .and_then(|c| c.attribute("applicationPool"))
    }

    fn model<'a, 'i>(node: roxmltree::Node<'a, 'i>) -> Option<roxmltree::Node<'a, 'i>> {
        node.children().find(|c| c.has_tag_name("processModel"))
    }

    /// The app pool (and its identity) of the application whose root folder is `app_dir`.
    pub(crate) fn of_site(apphost: &str, app_dir: &str) -> Option<Pool> {
        of_site_with(apphost, app_dir, &|name| std::env::var(name).ok())
    }

    /// [`of_site`], with `var` for the environment.
    pub(crate) fn of_site_with(
        apphost: &str,
        app_dir: &str,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Pool> {
        let doc = roxmltree::Document::parse(apphost).ok()?;
        let sites = doc.descendants().find(|n| n.has_tag_name("sites"))?;
        let all_default = defaults(sites);
        let pool = sites
            .children()
            .filter(|n| n.has_tag_name("site"))
            .find_map(|site| {
                site.children()
                    .filter(|n| n.has_tag_name("application"))
                    .find(|app| {
                        app.children()
                            .filter(|v| v.has_tag_name("virtualDirectory"))
                            .any(|v| {
                                v.attribute("path") == Some("/")
                                    && v.attribute("physicalPath")
                                        .is_some_and(|p| same_dir(&expand(p, var), app_dir))
                            })
                    })
                    .map(|app| {
                        app.attribute("applicationPool")
                            .or_else(|| defaults(site))
                            .or(all_default)
                            .unwrap_or("DefaultAppPool")
                            .to_string()
                    })
            })?;
        let pools = doc
            .descendants()
            .find(|n| n.has_tag_name("applicationPools"));
        let entry = pools.and_then(|p| {
            p.children().find(|n| {
                n.has_tag_name("add")
                    && n.attribute("name")
                        .is_some_and(|name| name.eq_ignore_ascii_case(&pool))
            })
        });
        let pool_defaults = pools
            .and_then(|p| {
                p.children()
                    .find(|n| n.has_tag_name("applicationPoolDefaults"))
            })
            .and_then(model);
        let own = entry.and_then(model);
        let identity_type = own
            .and_then(|m| m.attribute("identityType"))
            .or_else(|| pool_defaults.and_then(|m| m.attribute("identityType")))
            .unwrap_or("ApplicationPoolIdentity")
            .to_string();
        let user = own
            .and_then(|m| m.attribute("userName"))
            .or_else(|| pool_defaults.and_then(|m| m.attribute("userName")))
            .map(str::to_string);
        Some(Pool {
            pool,
            identity_type,
            user,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::acl::{grants, Ace, Kind, Verdict, READ};
    use super::identity::{of_site_with, Pool};

    fn of_site(apphost: &str, app_dir: &str) -> Option<Pool> {
        of_site_with(apphost, app_dir, &|name| {
            (name == "WFCGI_TEST_DRIVE").then(|| "C:".to_string())
        })
    }

    fn ace(kind: Kind, sid: &str, mask: u32) -> Ace {
        Ace {
            kind,
            sid: sid.into(),
            mask,
            inherit_only: false,
        }
    }

    fn sids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_dacl_is_evaluated_in_order_for_the_tokens_sids() {
        let pool = sids(&["S-1-1-0", "S-1-5-32-568"]);
        // Only the owner (a user SID) and Administrators: the pool reads nothing.
        let owner_only = [
            ace(Kind::Allow, "S-1-5-21-1-2-3-1000", 0x001F_01FF),
            ace(Kind::Allow, "S-1-5-32-544", 0x1000_0000),
        ];
        assert_eq!(grants(Some(&owner_only), &pool, READ), Verdict::NotGranted);
        // IIS_IUSRS with read and execute (as icacls (RX) writes it): granted.
        let granted = [
            owner_only[0].clone(),
            ace(Kind::Allow, "S-1-5-32-568", 0x0012_00A9),
        ];
        assert_eq!(grants(Some(&granted), &pool, READ), Verdict::Granted);
        // Generic read is mapped onto the file rights.
        let generic = [ace(Kind::Allow, "s-1-1-0", 0x8000_0000)];
        assert_eq!(grants(Some(&generic), &pool, READ), Verdict::Granted);
        // A deny first wins over a later allow; a deny after an allow comes too late.
        let denied = [
            ace(Kind::Deny, "S-1-1-0", 0x0000_0001),
            ace(Kind::Allow, "S-1-5-32-568", 0x001F_01FF),
        ];
        assert_eq!(
            grants(Some(&denied), &pool, READ),
            Verdict::Denied("S-1-1-0".into())
        );
        let late = [denied[1].clone(), denied[0].clone()];
        assert_eq!(grants(Some(&late), &pool, READ), Verdict::Granted);
        // Rights add up across entries; inherit-only entries do not apply to the folder.
        let split = [
            ace(Kind::Allow, "S-1-1-0", 0x0000_0001),
            ace(Kind::Allow, "S-1-5-32-568", 0x0000_0080),
        ];
        assert_eq!(grants(Some(&split), &pool, READ), Verdict::Granted);
        let mut children_only = ace(Kind::Allow, "S-1-1-0", 0x001F_01FF);
        children_only.inherit_only = true;
        assert_eq!(
            grants(Some(&[children_only]), &pool, READ),
            Verdict::NotGranted
        );
        // A null DACL grants everything; an empty one nothing.
        assert_eq!(grants(None, &pool, READ), Verdict::Granted);
        assert_eq!(grants(Some(&[]), &pool, READ), Verdict::NotGranted);
    }

    const APPHOST: &str = r#"<configuration><system.applicationHost>
  <applicationPools>
    <add name="DefaultAppPool" />
    <add name="shop"><processModel identityType="NetworkService" /></add>
    <add name="Intranet"><processModel identityType="SpecificUser" userName="CORP\svc-web" /></add>
    <applicationPoolDefaults><processModel identityType="ApplicationPoolIdentity" /></applicationPoolDefaults>
  </applicationPools>
  <sites>
    <site name="Default Web Site" id="1">
      <application path="/"><virtualDirectory path="/" physicalPath="%WFCGI_TEST_DRIVE%\inetpub\wwwroot" /></application>
    </site>
    <site name="Shop" id="2">
      <application path="/" applicationPool="shop"><virtualDirectory path="/" physicalPath="C:\sites\shop\" /></application>
    </site>
    <site name="Intranet" id="3">
      <applicationDefaults applicationPool="intranet" />
      <application path="/"><virtualDirectory path="/" physicalPath="D:/intranet" /></application>
    </site>
    <applicationDefaults applicationPool="DefaultAppPool" />
  </sites>
</system.applicationHost></configuration>"#;

    #[test]
    fn the_sites_app_pool_and_its_identity_come_from_application_host_config() {
        let default = of_site(APPHOST, "c:\\inetpub\\wwwroot").unwrap();
        assert_eq!(default.pool, "DefaultAppPool");
        assert_eq!(default.identity_type, "ApplicationPoolIdentity");
        assert_eq!(
            default.account().as_deref(),
            Some("IIS APPPOOL\\DefaultAppPool")
        );
        let shop = of_site(APPHOST, "C:\\sites\\shop").unwrap();
        assert_eq!(
            shop,
            Pool {
                pool: "shop".into(),
                identity_type: "NetworkService".into(),
                user: None
            }
        );
        assert_eq!(shop.account(), None);
        assert_eq!(shop.account_name(), "NETWORK SERVICE");
        assert_eq!(shop.builtin_sids(), ["S-1-5-20"]);
        // The site's own applicationDefaults; the pool's name in another case.
        let intranet = of_site(APPHOST, "D:\\intranet\\").unwrap();
        assert_eq!(intranet.pool, "intranet");
        assert_eq!(intranet.account().as_deref(), Some("CORP\\svc-web"));
        assert_eq!(of_site(APPHOST, "C:\\elsewhere"), None);
    }
}
