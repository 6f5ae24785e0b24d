//! The settings of the credential engines that server.toml names: the SSH
//! CA's algorithm, a database role's built-in access, and the variables
//! a statement template may use. Defined here, below the engines, so the
//! configuration is read and checked without importing them.

use zeroth_hsm::KeyKind;

/// The SSH CA key's algorithm (`ssh_ca_algorithm` in server.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaAlgorithm {
    #[default]
    Ed25519,
    EcdsaP256,
}

impl CaAlgorithm {
    /// The HSM key name of the CA `base` ("ssh-user-ca" or "ssh-host-ca").
    pub fn key_name(self, base: &str) -> String {
        match self {
            Self::Ed25519 => base.to_owned(),
            Self::EcdsaP256 => format!("{base}-p256"),
        }
    }

    pub fn kind(self) -> KeyKind {
        match self {
            Self::Ed25519 => KeyKind::Ed25519,
            Self::EcdsaP256 => KeyKind::EcdsaP256,
        }
    }
}

/// A database role's built-in access levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// SELECT on every table of the schema (PostgreSQL) or database (MariaDB).
    ReadOnly,
    /// SELECT, INSERT, UPDATE, DELETE, and sequences on PostgreSQL.
    ReadWrite,
}

/// The variables a statement template may use.
pub const TEMPLATE_VARIABLES: [&str; 6] = [
    "name",
    "password",
    "expiration",
    "group",
    "schema",
    "database",
];

/// Why a statement template is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed {{{{ in {0:?}")]
    Unclosed(String),
    #[error("unknown variable {{{{{0}}}}} (known: {known})", known = TEMPLATE_VARIABLES.join(", "))]
    UnknownVariable(String),
}

/// Checks that `template` uses only known variables and closes them.
pub fn check_template(template: &str) -> Result<(), TemplateError> {
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError::Unclosed(template.to_owned()))?;
        let var = after[..end].trim();
        if !TEMPLATE_VARIABLES.contains(&var) {
            return Err(TemplateError::UnknownVariable(var.to_owned()));
        }
        rest = &after[end + 2..];
    }
    Ok(())
}
