use std::time::Duration;

/// Why a lab component could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{name} is not installed: apt-get install {package} (or run `make deps` as root)")]
    MissingTool {
        name: &'static str,
        package: &'static str,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed ({status}):\n{output}")]
    Command {
        what: String,
        status: String,
        output: String,
    },
    #[error("{name} exited during start-up ({status}); its log ends with:\n{log}")]
    Exited {
        name: String,
        status: String,
        log: String,
    },
    #[error("{what} was not ready after {after:?}; its log ends with:\n{log}")]
    NotReady {
        what: String,
        after: Duration,
        log: String,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("the lab's process spawner thread is gone")]
    Spawner,
}

impl LabError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
