//! What a role's users may do, as statements. Built-in templates grant
//! through a group role on PostgreSQL, so dropping a user never fails on
//! objects or privileges that depend on it.

use super::Engine;

/// Built-in access levels.
pub use crate::config::Access;

/// The statements of one role on one engine (templates, see
/// [`super::template`]).
#[derive(Debug, Clone)]
pub struct RoleStatements {
    /// Run once per server start and role, before the first user:
    /// idempotent (the group role and its grants).
    pub setup: Vec<String>,
    pub creation: Vec<String>,
    /// MariaDB built-in roles: the head of the one creating GRANT
    /// ("GRANT … ON {{database}}.* TO"), so users asked for together can be
    /// made by one statement (see `mariadb_batch`). `None` for templates.
    pub batch_grant: Option<String>,
    /// Run at revocation before the user is locked, terminated and dropped.
    pub revocation: Vec<String>,
    /// `{{group}}`: the group role users are made members of.
    pub group: String,
    /// `{{schema}}` / `{{database}}`.
    pub schema: String,
}

/// The group role of a zeroth role (never matches the dynamic-user prefix).
pub fn group_role(role: &str) -> String {
    format!("zeroth_grp_{role}")
}

impl RoleStatements {
    pub fn builtin(engine: Engine, access: Access, role: &str, schema: &str) -> Self {
        let group = group_role(role);
        let mut batch_grant = None;
        let (setup, creation) = match engine {
            Engine::Postgres => {
                let privileges = match access {
                    Access::ReadOnly => "SELECT",
                    Access::ReadWrite => "SELECT, INSERT, UPDATE, DELETE",
                };
                let mut setup = vec![
                    // Created once; a concurrent creator is not an error.
                    "DO $$BEGIN CREATE ROLE {{group}} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$".to_owned(),
                    "GRANT USAGE ON SCHEMA {{schema}} TO {{group}}".to_owned(),
                    format!("GRANT {privileges} ON ALL TABLES IN SCHEMA {{{{schema}}}} TO {{{{group}}}}"),
                ];
                if access == Access::ReadWrite {
                    setup.push(
                        "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {{schema}} TO {{group}}"
                            .to_owned(),
                    );
                }
                (
                    setup,
                    vec!["CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}} IN ROLE {{group}}".to_owned()],
                )
            }
            Engine::MariaDb => {
                let privileges = match access {
                    Access::ReadOnly => "SELECT",
                    Access::ReadWrite => "SELECT, INSERT, UPDATE, DELETE",
                };
                // One statement, one rebuild of MariaDB's privilege cache:
                // GRANT creates the user (the admin sessions allow it, see
                // `mariadb::SESSION_INIT`).
                let head = format!("GRANT {privileges} ON {{{{database}}}}.* TO");
                let creation = format!("{head} {}", super::mariadb::GRANTEE);
                batch_grant = Some(head);
                (vec![], vec![creation])
            }
        };
        Self {
            setup,
            creation,
            batch_grant,
            revocation: vec![],
            group,
            schema: schema.to_owned(),
        }
    }
}
