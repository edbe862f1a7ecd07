//! The login against the directory: bind as the user (the password is
//! checked by the directory, never kept), then read the user's groups,
//! whose names are the roles (`[serve.roles]`).

use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, dn_escape, ldap_escape};

use super::LdapConfig;
use super::auth::Refused;

/// LDAP's "invalid credentials".
const INVALID_CREDENTIALS: u32 = 49;

/// The groups of `user` when `password` binds.
pub async fn login(
    l: &LdapConfig,
    user: &str,
    password: &str,
) -> std::result::Result<Vec<String>, Refused> {
    let timeout = Duration::from_secs(l.timeout.max(1));
    let unavailable = |e: &dyn std::fmt::Display| Refused::Unavailable(format!("{}: {e}", l.url));
    let settings = LdapConnSettings::new()
        .set_conn_timeout(timeout)
        .set_starttls(l.starttls);
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &l.url)
        .await
        .map_err(|e| unavailable(&e))?;
    ldap3::drive!(conn);
    ldap.with_timeout(timeout);
    let dn = l.user_dn.replace("{user}", &dn_escape(user));
    let bound = ldap
        .simple_bind(&dn, password)
        .await
        .map_err(|e| unavailable(&e))?;
    if bound.rc == INVALID_CREDENTIALS {
        let _ = ldap.unbind().await;
        return Err(Refused::Credentials);
    }
    if bound.rc != 0 {
        let _ = ldap.unbind().await;
        return Err(unavailable(&format!("bind answered {}", bound.rc)));
    }
    if let (Some(bdn), Some(bpw)) = (&l.bind_dn, &l.bind_password) {
        let r = ldap
            .with_timeout(timeout)
            .simple_bind(bdn, bpw)
            .await
            .map_err(|e| unavailable(&e))?;
        if r.rc != 0 {
            let _ = ldap.unbind().await;
            return Err(unavailable(&format!("the service bind answered {}", r.rc)));
        }
    }
    let filter = l
        .group_filter
        .replace("{dn}", &ldap_escape(&dn))
        .replace("{user}", &ldap_escape(user));
    let found = ldap
        .with_timeout(timeout)
        .search(&l.group_base, Scope::Subtree, &filter, vec!["cn"])
        .await
        .map_err(|e| unavailable(&e))?;
    let (entries, _) = found.success().map_err(|e| unavailable(&e))?;
    let _ = ldap.unbind().await;
    let mut groups: Vec<String> = entries
        .into_iter()
        .filter_map(|e| SearchEntry::construct(e).attrs.get("cn")?.first().cloned())
        .collect();
    groups.sort();
    groups.dedup();
    Ok(groups)
}
