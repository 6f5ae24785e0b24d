//! What an attested caller is granted: the roles the configuration gives
//! its uid and its systemd service, and those of the registration entries
//! whose selectors it satisfies. The workload socket's JSON requests and
//! every proxy ask the same question here; the Workload API's SVIDs follow
//! the same entry match (`Snapshot::entries_for`).

use std::collections::BTreeMap;

use super::caller::Caller;

/// Who may use a socket, and for which roles, by configuration.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Any role.
    pub allow_uids: Vec<u32>,
    /// Whether root and the agent's own user may ask for any role too (the
    /// workload socket: they could read the agent's keys anyway).
    pub operators: bool,
    /// Only the roles listed, by uid.
    pub roles: BTreeMap<u32, Vec<String>>,
    /// Only the roles listed, by systemd service ("shop.service"), whatever
    /// the uid it runs as.
    pub units: BTreeMap<String, Vec<String>>,
}

/// The roles a caller may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Granted<'a> {
    Any,
    Only(Vec<&'a String>),
}

impl Granted<'_> {
    pub fn includes(&self, role: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Only(roles) => roles.iter().any(|r| *r == role),
        }
    }
}

impl Access {
    /// The access of a proxy that serves `role`: to the uids and services
    /// it lists, for that role only.
    pub fn for_role(role: &str, uids: &[u32], units: &[String]) -> Self {
        Self {
            allow_uids: Vec::new(),
            operators: false,
            roles: uids.iter().map(|u| (*u, vec![role.to_owned()])).collect(),
            units: units
                .iter()
                .map(|u| (u.clone(), vec![role.to_owned()]))
                .collect(),
        }
    }

    /// Whether `uid` may ask for any role.
    pub fn any_role(&self, uid: u32) -> bool {
        self.allow_uids.contains(&uid)
            || (self.operators && (uid == 0 || uid == rustix::process::geteuid().as_raw()))
    }

    /// The roles granted to `who` by uid, by service and by the
    /// registration entries it matches (`entry_roles`).
    pub fn granted<'a>(&'a self, who: &Caller, entry_roles: &'a [String]) -> Granted<'a> {
        if self.any_role(who.uid) {
            return Granted::Any;
        }
        let by_unit = who.unit.as_ref().and_then(|u| self.units.get(u));
        Granted::Only(
            self.roles
                .get(&who.uid)
                .into_iter()
                .chain(by_unit)
                .flatten()
                .chain(entry_roles)
                .collect(),
        )
    }

    /// Whether `who` may use the socket at all (for some role).
    pub fn knows(&self, who: &Caller, entry_roles: &[String]) -> bool {
        self.any_role(who.uid)
            || !entry_roles.is_empty()
            || self.roles.contains_key(&who.uid)
            || who
                .unit
                .as_ref()
                .is_some_and(|u| self.units.contains_key(u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, unit: Option<&str>) -> Caller {
        Caller {
            uid,
            pid: 42,
            unit: unit.map(str::to_owned),
        }
    }

    #[test]
    fn a_proxys_access_grants_its_role_to_its_uids_and_services_only() {
        let proxy = Access::for_role("app-ro", &[1001], &["shop.service".into()]);
        assert!(proxy.granted(&caller(1001, None), &[]).includes("app-ro"));
        assert!(!proxy.granted(&caller(1001, None), &[]).includes("admin"));
        assert!(proxy
            .granted(&caller(1002, Some("shop.service")), &[])
            .includes("app-ro"));
        // Root is not an operator of a proxy: it is admitted like anyone.
        assert!(!proxy.knows(&caller(0, None), &[]));
        // An entry that names the role admits its program.
        let roles = vec!["app-ro".to_owned()];
        assert!(proxy
            .granted(&caller(1003, None), &roles)
            .includes("app-ro"));
    }

    #[test]
    fn operators_may_ask_for_any_role_where_the_socket_says_so() {
        let api = Access {
            operators: true,
            ..Access::default()
        };
        assert_eq!(api.granted(&caller(0, None), &[]), Granted::Any);
        assert!(!api.knows(&caller(1001, None), &[]));
    }
}
