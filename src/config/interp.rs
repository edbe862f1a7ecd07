//! `${VAR}` and `${VAR:-default}` interpolation of configuration strings.
//!
//! `$${` writes a literal `${`. A variable that is not set and has no
//! default is an error naming the variable and where it was used, so a
//! missing secret never turns silently into an empty password.

use crate::error::{Error, Result};

/// Where to look variables up: the process environment in production,
/// a closure in tests.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// Expand every `${…}` in `input`. `place` names the file and key for errors.
pub fn expand(input: &str, env: &dyn Env, place: &str) -> Result<String> {
    if !input.contains('$') {
        return Ok(input.to_string());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}').ok_or_else(|| {
                Error::config(format!("{place}: unterminated `${{` in {input:?}"))
            })?;
            let expr = &tail[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(Error::config(format!(
                    "{place}: `${{{expr}}}` is not a valid variable reference (use ${{NAME}} or ${{NAME:-default}})"
                )));
            }
            match env
                .var(name)
                .filter(|v| !(v.is_empty() && default.is_some()))
            {
                Some(v) => out.push_str(&v),
                None => match default {
                    Some(d) => out.push_str(&expand(d, env, place)?),
                    None => {
                        return Err(Error::config(format!(
                            "{place}: environment variable {name} is not set; export it, or give a default with ${{{name}:-…}}"
                        )));
                    }
                },
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Expand every string inside a TOML value tree, recursively.
pub fn expand_value(value: &mut toml::Value, env: &dyn Env, place: &str) -> Result<()> {
    match value {
        toml::Value::String(s) => {
            *s = expand(s, env, place)?;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, env, &format!("{place}[{i}]"))?;
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                let p = if place.ends_with(':') {
                    format!("{place} {k}")
                } else {
                    format!("{place}.{k}")
                };
                expand_value(v, env, &p)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.local".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_variables_and_defaults() {
        assert_eq!(
            expand("postgres://${HOST}/x", &env, "f").unwrap(),
            "postgres://db.local/x"
        );
        assert_eq!(
            expand("${PORT:-5432}", &env, "f").unwrap(),
            "5432".to_string()
        );
        assert_eq!(expand("${EMPTY:-d}", &env, "f").unwrap(), "d");
        assert_eq!(expand("${EMPTY}", &env, "f").unwrap(), "");
        assert_eq!(
            expand("cost $5 $${HOST}", &env, "f").unwrap(),
            "cost $5 ${HOST}"
        );
    }

    #[test]
    fn missing_variable_is_an_error_naming_it() {
        let err = expand("${PGPASSWORD}", &env, "repaero.toml: sources.billing.url").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("PGPASSWORD"), "{msg}");
        assert!(msg.contains("sources.billing.url"), "{msg}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn bad_reference_is_an_error() {
        assert!(expand("${A B}", &env, "f").is_err());
        assert!(expand("${HOST", &env, "f").is_err());
    }
}
