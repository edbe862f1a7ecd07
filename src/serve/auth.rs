//! Who may see what: the login (a directory over LDAP when `[serve.ldap]`
//! is set, else the users file with argon2 hashes written by `repaero users
//! add`), the sessions (an opaque random token in an HttpOnly, SameSite
//! cookie, Secure unless configured off, expiring), the CSRF token of each
//! session (every form that changes something carries it), the roles
//! (roles or LDAP groups → sections, `[serve.roles]`), and the failed
//! logins, counted per user name and per address and refused beyond
//! `[serve] max_failures`, logged without the password.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::{LdapConfig, Section, ServeConfig, Shared, esc, page, status_page};
use crate::error::{Error, Result};

pub const COOKIE: &str = "repaero_session";

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub roles: Vec<String>,
    pub sections: Vec<Section>,
    pub csrf: String,
    expires: Instant,
}

impl Session {
    pub fn may(&self, s: Section) -> bool {
        self.sections.contains(&s)
    }
}

/// One user of the users file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUser {
    /// argon2id, PHC string.
    pub hash: String,
    pub roles: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: BTreeMap<String, FileUser>,
}

fn read_users(path: &Path) -> Result<BTreeMap<String, FileUser>> {
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
    let f: UsersFile = toml::from_str(&text)
        .map_err(|e| Error::config(format!("{}: {}", path.display(), e.message())))?;
    Ok(f.users)
}

/// The users of the users file and their roles.
pub fn list_users(path: &Path) -> Result<Vec<(String, Vec<String>)>> {
    Ok(read_users(path)?
        .into_iter()
        .map(|(k, u)| (k, u.roles))
        .collect())
}

/// `n` random bytes from the system's generator.
pub fn random_bytes(n: usize) -> Result<Vec<u8>> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| Error::runtime("the system's random generator failed"))?;
    Ok(buf)
}

fn token() -> Result<String> {
    Ok(hex::encode(random_bytes(32)?))
}

/// argon2id parameters of new hashes: RFC 9106's second recommendation
/// scaled to OWASP's minimum (19 MiB, 2 passes, 1 lane).
const M_COST: u32 = 19_456;
const T_COST: u32 = 2;
const P_COST: u32 = 1;
const HASH_LEN: usize = 32;

fn argon2id(m: u32, t: u32, p: u32, len: usize) -> Option<argon2::Argon2<'static>> {
    let params = argon2::Params::new(m, t, p, Some(len)).ok()?;
    Some(argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params,
    ))
}

/// The argon2id hash of a password, as a PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`, base64 without padding).
pub fn hash_password(password: &str) -> Result<String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let salt = random_bytes(16)?;
    let mut out = vec![0u8; HASH_LEN];
    argon2id(M_COST, T_COST, P_COST, HASH_LEN)
        .ok_or_else(|| Error::runtime("argon2 parameters"))?
        .hash_password_into(password.as_bytes(), &salt, &mut out)
        .map_err(|e| Error::runtime(format!("password hash: {e}")))?;
    Ok(format!(
        "$argon2id$v=19$m={M_COST},t={T_COST},p={P_COST}${}${}",
        b64.encode(&salt),
        b64.encode(&out)
    ))
}

/// Whether `password` matches the PHC string `hash` (argon2id, its own
/// parameters), compared in constant time.
pub fn verify_password(password: &str, hash: &str) -> bool {
    use base64::Engine;
    use subtle::ConstantTimeEq;
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let parts: Vec<&str> = hash.split('$').collect();
    let ["", "argon2id", "v=19", params, salt, expected] = parts.as_slice() else {
        return false;
    };
    let (mut m, mut t, mut p) = (0u32, 0u32, 0u32);
    for kv in params.split(',') {
        match kv.split_once('=') {
            Some(("m", v)) => m = v.parse().unwrap_or(0),
            Some(("t", v)) => t = v.parse().unwrap_or(0),
            Some(("p", v)) => p = v.parse().unwrap_or(0),
            _ => return false,
        }
    }
    let (Ok(salt), Ok(expected)) = (b64.decode(salt), b64.decode(expected)) else {
        return false;
    };
    // bounds: a users file cannot make a login take a gigabyte
    if m > 1 << 20 || t > 16 || expected.len() < 16 || expected.len() > 64 {
        return false;
    }
    let Some(a) = argon2id(m, t, p, expected.len()) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    if a.hash_password_into(password.as_bytes(), &salt, &mut out)
        .is_err()
    {
        return false;
    }
    bool::from(out.ct_eq(&expected))
}

/// Add or replace a user of the users file (`repaero users add`).
pub fn add_user(path: &Path, name: &str, password: &str, roles: &[String]) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || "._-@".contains(c))
    {
        return Err(Error::config(format!(
            "user name {name:?}: letters, digits and . _ - @ only, at most 64"
        )));
    }
    if password.chars().count() < 8 {
        return Err(Error::config("the password needs at least 8 characters"));
    }
    if roles.is_empty() {
        return Err(Error::config("give the user at least one --role"));
    }
    let mut users = read_users(path)?;
    users.insert(
        name.to_string(),
        FileUser {
            hash: hash_password(password)?,
            roles: roles.to_vec(),
        },
    );
    let text = toml::to_string(&UsersFile { users })
        .map_err(|e| Error::runtime(format!("{}: {e}", path.display())))?;
    let tmp = path.with_extension("toml.tmp");
    write_private(&tmp, &text)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::runtime(format!("{}: {e}", path.display())))?;
    Ok(())
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| Error::runtime(format!("{}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(|e| Error::runtime(format!("{}: {e}", path.display())))
}

/// Why a login did not open a session.
#[derive(Debug)]
pub enum Refused {
    /// Unknown user or wrong password (told apart in no answer).
    Credentials,
    /// The directory cannot be reached.
    Unavailable(String),
}

/// The logins and the sessions.
pub struct Auth {
    users_path: std::path::PathBuf,
    ldap: Option<LdapConfig>,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<String, Vec<Instant>>>,
    session_ttl: Duration,
    lockout: Duration,
    max_failures: usize,
}

impl Auth {
    pub fn new(s: &ServeConfig) -> Result<Auth> {
        if s.ldap.is_none() {
            // a broken users file is a configuration error at start-up
            let users = read_users(&s.users)?;
            if users.is_empty() {
                tracing::warn!(
                    "no users in {}: add one with `repaero users add <name> --role direction`",
                    s.users.display()
                );
            }
        }
        Ok(Auth {
            users_path: s.users.clone(),
            ldap: s.ldap.clone(),
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            session_ttl: Duration::from_secs(s.session_minutes.max(1) * 60),
            lockout: Duration::from_secs(s.lockout_seconds),
            max_failures: s.max_failures.max(1),
        })
    }

    /// The roles of `user` when `password` is right.
    async fn check(&self, user: &str, password: &str) -> std::result::Result<Vec<String>, Refused> {
        if let Some(l) = &self.ldap {
            return super::ldap::login(l, user, password).await;
        }
        let path = self.users_path.clone();
        let user = user.to_string();
        let password = password.to_string();
        // argon2 takes tens of milliseconds: off the runtime
        tokio::task::spawn_blocking(move || {
            let users = read_users(&path).map_err(|e| Refused::Unavailable(e.to_string()))?;
            match users.get(&user) {
                Some(u) if verify_password(&password, &u.hash) => Ok(u.roles.clone()),
                Some(_) => Err(Refused::Credentials),
                None => {
                    // the same work for an unknown name as for a known one
                    let _ = verify_password(&password, DUMMY_HASH);
                    Err(Refused::Credentials)
                }
            }
        })
        .await
        .unwrap_or_else(|e| Err(Refused::Unavailable(e.to_string())))
    }

    fn locked(&self, keys: &[String]) -> bool {
        let now = Instant::now();
        let Ok(mut f) = self.failures.lock() else {
            return true;
        };
        keys.iter().any(|k| {
            let v = f.entry(k.clone()).or_default();
            v.retain(|t| now.duration_since(*t) < self.lockout);
            v.len() >= self.max_failures
        })
    }

    fn failed(&self, keys: &[String]) {
        if let Ok(mut f) = self.failures.lock() {
            for k in keys {
                f.entry(k.clone()).or_default().push(Instant::now());
            }
        }
    }

    fn open(
        &self,
        user: &str,
        roles: Vec<String>,
        serve: &ServeConfig,
    ) -> Result<(String, Session)> {
        let s = Session {
            user: user.to_string(),
            sections: serve.sections(&roles),
            roles,
            csrf: token()?,
            expires: Instant::now() + self.session_ttl,
        };
        let t = token()?;
        if let Ok(mut all) = self.sessions.lock() {
            let now = Instant::now();
            all.retain(|_, s| s.expires > now);
            all.insert(t.clone(), s.clone());
        }
        Ok((t, s))
    }

    /// The session of a request's cookie, when valid.
    pub fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let t = cookie(headers, COOKIE)?;
        let mut all = self.sessions.lock().ok()?;
        match all.get(&t) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                all.remove(&t);
                None
            }
            None => None,
        }
    }

    fn close(&self, headers: &HeaderMap) {
        if let (Some(t), Ok(mut all)) = (cookie(headers, COOKIE), self.sessions.lock()) {
            all.remove(&t);
        }
    }
}

/// An argon2id hash of nothing anyone types, verified for unknown names.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0hR9VqLw5mCKb8y2QvZ0nS0uYw2I0Jx6QeJm6cQJ8cA";

/// A cookie's value.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(serve: &ServeConfig, value: &str, max_age: u64) -> Option<HeaderValue> {
    let secure = if serve.secure_cookies { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .ok()
}

/// The session of a request allowed to see `section`; else the answer:
/// to the login form without a session, 403 outside the roles.
// the Err is the answer to send, once per request: boxing it buys nothing
#[allow(clippy::result_large_err)]
pub fn require(
    app: &Shared,
    headers: &HeaderMap,
    section: Section,
) -> std::result::Result<Session, Response> {
    match app.auth.session(headers) {
        None => Err(Redirect::to("/login").into_response()),
        Some(s) if s.may(section) => Ok(s),
        Some(s) => {
            tracing::warn!(user = %s.user, section = section.name(), "dashboard: refused outside the user's roles");
            Err(status_page(
                StatusCode::FORBIDDEN,
                Some(&s),
                &format!(
                    "{}: not in your roles ({})",
                    section.title(),
                    s.roles.join(", ")
                ),
            ))
        }
    }
}

/// Whether a form's token is the session's (constant time).
pub fn csrf_ok(session: &Session, token: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    match token {
        Some(t) if t.len() == session.csrf.len() => {
            bool::from(t.as_bytes().ct_eq(session.csrf.as_bytes()))
        }
        _ => false,
    }
}

/// The answer to a form without its token: nothing changed.
pub fn csrf_refused(session: &Session) -> Response {
    tracing::warn!(user = %session.user, "dashboard: form without a valid CSRF token refused");
    status_page(
        StatusCode::FORBIDDEN,
        Some(session),
        "the form's security token is missing or stale: nothing was changed; reload the page and try again",
    )
}

pub async fn home(State(app): State<Shared>, headers: HeaderMap) -> Response {
    match app.auth.session(&headers) {
        Some(s) => match s.sections.first() {
            Some(sec) => Redirect::to(sec.path()).into_response(),
            None => status_page(StatusCode::FORBIDDEN, Some(&s), "your roles give no page"),
        },
        None => Redirect::to("/login").into_response(),
    }
}

fn login_page(status: StatusCode, message: Option<&str>) -> Response {
    let msg = message
        .map(|m| format!("<p class=\"error\" id=\"login-error\">{}</p>", esc(m)))
        .unwrap_or_default();
    (
        status,
        page(
            "Log in",
            None,
            &format!(
                "{msg}<form method=\"post\" action=\"/login\"><label>User <input name=\"user\" autocomplete=\"username\" required></label><label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\" required></label><button>Log in</button></form>"
            ),
        ),
    )
        .into_response()
}

pub async fn login_form() -> Response {
    login_page(StatusCode::OK, None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
}

pub async fn login(
    State(app): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<LoginForm>,
) -> Response {
    let user = form.user.trim().to_string();
    let keys = vec![format!("user:{user}"), format!("ip:{}", peer.ip())];
    if app.auth.locked(&keys) {
        tracing::warn!(user = %user, from = %peer.ip(), "dashboard: login refused, too many failures");
        return login_page(
            StatusCode::TOO_MANY_REQUESTS,
            Some("too many failed logins: wait a few minutes"),
        );
    }
    if user.is_empty() || form.password.is_empty() || user.len() > 256 {
        return login_page(
            StatusCode::UNAUTHORIZED,
            Some("wrong user name or password"),
        );
    }
    match app.auth.check(&user, &form.password).await {
        Ok(roles) => {
            let (token, s) = match app.auth.open(&user, roles, &app.serve) {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!("dashboard: session: {e}");
                    return login_page(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        Some("no session could be opened"),
                    );
                }
            };
            tracing::info!(user = %user, from = %peer.ip(), roles = ?s.roles, "dashboard: logged in");
            let to = s.sections.first().map(|x| x.path()).unwrap_or("/");
            let mut r = Redirect::to(to).into_response();
            if let Some(c) = set_cookie(&app.serve, &token, app.serve.session_minutes * 60) {
                r.headers_mut().insert(header::SET_COOKIE, c);
            }
            r
        }
        Err(Refused::Credentials) => {
            app.auth.failed(&keys);
            tracing::warn!(user = %user, from = %peer.ip(), "dashboard: failed login");
            login_page(
                StatusCode::UNAUTHORIZED,
                Some("wrong user name or password"),
            )
        }
        Err(Refused::Unavailable(why)) => {
            tracing::error!(user = %user, "dashboard: login impossible: {why}");
            login_page(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("the directory cannot be reached: try again later or call the IT support"),
            )
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: Option<String>,
}

pub async fn logout(
    State(app): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let Some(s) = app.auth.session(&headers) else {
        return Redirect::to("/login").into_response();
    };
    if !csrf_ok(&s, form.csrf.as_deref()) {
        return csrf_refused(&s);
    }
    app.auth.close(&headers);
    tracing::info!(user = %s.user, "dashboard: logged out");
    let mut r = Redirect::to("/login").into_response();
    if let Some(c) = set_cookie(&app.serve, "", 0) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "salted");
        assert!(verify_password("correct horse", &a));
        assert!(!verify_password("correct hors", &a));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; repaero_session=abc; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
