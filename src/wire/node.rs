//! A node's standing, as the server reports it to agents and operators.

/// Where a node stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Pending,
    Approved,
    Revoked,
}

impl NodeState {
    pub const ALL: [NodeState; 3] = [Self::Pending, Self::Approved, Self::Revoked];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Revoked => "revoked",
        }
    }

    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "approved" => Self::Approved,
            "revoked" => Self::Revoked,
            _ => Self::Pending,
        }
    }
}
