//! Statement templates: `{{name}}`, `{{password}}`, `{{expiration}}`,
//! `{{group}}`, `{{schema}}`/`{{database}}`, each rendered already quoted
//! for its engine, so a template never pastes raw text into SQL.
//!
//! `{{password}}` renders the hashed form (a SCRAM verifier for PostgreSQL,
//! a mysql_native_password hash for MariaDB): templates write
//! `PASSWORD {{password}}` and `IDENTIFIED BY PASSWORD {{password}}`.

use super::Engine;

/// The values one rendering may use (unquoted).
#[derive(Debug, Default, Clone)]
pub struct Values<'a> {
    pub name: &'a str,
    /// Hashed password (never the plaintext).
    pub password: &'a str,
    /// Seconds since the epoch.
    pub expiration: i64,
    pub group: &'a str,
    pub schema: &'a str,
}

pub use crate::config::TEMPLATE_VARIABLES as VARIABLES;

fn ident(engine: Engine, s: &str) -> String {
    match engine {
        Engine::Postgres => format!("\"{}\"", s.replace('"', "\"\"")),
        Engine::MariaDb => format!("`{}`", s.replace('`', "``")),
    }
}

fn literal(engine: Engine, s: &str) -> String {
    match engine {
        Engine::Postgres => format!("'{}'", s.replace('\'', "''")),
        Engine::MariaDb => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''")),
    }
}

fn timestamp(engine: Engine, secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    let rfc = humantime::format_rfc3339_seconds(t).to_string();
    match engine {
        // PostgreSQL reads the zone; MariaDB sessions are set to UTC.
        Engine::Postgres => literal(engine, &rfc),
        Engine::MariaDb => literal(engine, &rfc.replace('T', " ").replace('Z', "")),
    }
}

/// Checks that `template` uses only known variables and closes them.
pub use crate::config::check_template as check;

/// Renders a checked template.
pub fn render(
    engine: Engine,
    template: &str,
    v: &Values<'_>,
) -> Result<String, crate::config::TemplateError> {
    check(template)?;
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after.find("}}").unwrap_or(after.len());
        out.push_str(&match after[..end].trim() {
            "name" => match engine {
                Engine::Postgres => ident(engine, v.name),
                Engine::MariaDb => literal(engine, v.name),
            },
            "password" => literal(engine, v.password),
            "expiration" => timestamp(engine, v.expiration),
            "group" => match engine {
                Engine::Postgres => ident(engine, v.group),
                Engine::MariaDb => literal(engine, v.group),
            },
            _ => ident(engine, v.schema),
        });
        rest = after.get(end + 2..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_for_each_engine() {
        let v = Values {
            name: "zt_a\"b",
            password: "p'q",
            expiration: 0,
            group: "g",
            schema: "s`t",
        };
        assert_eq!(
            render(Engine::Postgres, "CREATE ROLE {{name}} PASSWORD {{password}} VALID UNTIL {{expiration}} IN ROLE {{group}}", &v).unwrap(),
            "CREATE ROLE \"zt_a\"\"b\" PASSWORD 'p''q' VALID UNTIL '1970-01-01T00:00:00Z' IN ROLE \"g\""
        );
        assert_eq!(
            render(
                Engine::MariaDb,
                "GRANT SELECT ON {{database}}.* TO {{name}}@'%' -- {{expiration}}",
                &v
            )
            .unwrap(),
            "GRANT SELECT ON `s``t`.* TO 'zt_a\"b'@'%' -- '1970-01-01 00:00:00'"
        );
    }

    #[test]
    fn unknown_or_unclosed_variables_are_refused() {
        assert!(check("DROP ROLE {{nmae}}")
            .unwrap_err()
            .to_string()
            .contains("unknown variable {{nmae}}"));
        assert!(check("DROP ROLE {{name")
            .unwrap_err()
            .to_string()
            .contains("unclosed"));
        assert!(check("SELECT 1").is_ok());
    }
}
