//! Several lab components started together.

use std::fmt;
use std::str::FromStr;

use super::{LabError, MariaDb, Postgres, SoftHsm, Sshd, SshdOptions, Swtpm};

/// One kind of lab component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Swtpm,
    Softhsm,
    Postgres,
    Mariadb,
    Sshd,
}

impl Component {
    pub const ALL: [Component; 5] = [
        Self::Swtpm,
        Self::Softhsm,
        Self::Postgres,
        Self::Mariadb,
        Self::Sshd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Swtpm => "swtpm",
            Self::Softhsm => "softhsm",
            Self::Postgres => "postgres",
            Self::Mariadb => "mariadb",
            Self::Sshd => "sshd",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Component {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|c| c.name()).collect();
                format!(
                    "unknown lab component {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// The components a bench was asked for, each running.
#[derive(Debug, Default)]
pub struct Bench {
    pub tpm: Option<Swtpm>,
    pub hsm: Option<SoftHsm>,
    pub postgres: Option<Postgres>,
    pub mariadb: Option<MariaDb>,
    pub sshd: Option<Sshd>,
}

impl Bench {
    /// Starts the chosen components in parallel; they are independent. If any
    /// fails, those already started are stopped and the first error returned.
    pub fn start(components: &[Component]) -> Result<Self, LabError> {
        let want = |c| components.contains(&c);
        std::thread::scope(|s| {
            let tpm = want(Component::Swtpm).then(|| s.spawn(Swtpm::start));
            let hsm = want(Component::Softhsm).then(|| s.spawn(SoftHsm::start));
            let pg = want(Component::Postgres).then(|| s.spawn(Postgres::start));
            let maria = want(Component::Mariadb).then(|| s.spawn(MariaDb::start));
            let sshd =
                want(Component::Sshd).then(|| s.spawn(|| Sshd::start(&SshdOptions::default())));
            // Join every thread before returning so nothing is left half-started.
            let tpm = tpm.map(|h| join("swtpm", h.join()));
            let hsm = hsm.map(|h| join("softhsm", h.join()));
            let pg = pg.map(|h| join("postgres", h.join()));
            let maria = maria.map(|h| join("mariadb", h.join()));
            let sshd = sshd.map(|h| join("sshd", h.join()));
            Ok(Self {
                tpm: tpm.transpose()?,
                hsm: hsm.transpose()?,
                postgres: pg.transpose()?,
                mariadb: maria.transpose()?,
                sshd: sshd.transpose()?,
            })
        })
    }

    /// PIDs of the running daemons.
    pub fn pids(&self) -> Vec<u32> {
        [
            self.tpm.as_ref().and_then(Swtpm::pid),
            self.postgres.as_ref().and_then(Postgres::pid),
            self.mariadb.as_ref().and_then(MariaDb::pid),
            self.sshd.as_ref().and_then(Sshd::pid),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

fn join<T>(name: &str, r: std::thread::Result<Result<T, LabError>>) -> Result<T, LabError> {
    r.map_err(|_| LabError::Unsupported(format!("starting {name} panicked")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_names_round_trip_and_unknown_names_are_listed() {
        for c in Component::ALL {
            assert_eq!(c.name().parse::<Component>(), Ok(c));
        }
        let err = "redis".parse::<Component>().unwrap_err();
        assert!(err.contains("redis") && err.contains("mariadb"), "{err}");
    }
}
