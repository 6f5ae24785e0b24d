//! Where the operators' commands find the server's admin socket when
//! `--socket` does not say.

use std::path::PathBuf;

/// The packaged server's configuration.
pub const SERVER_TOML: &str = "/etc/zeroth/server.toml";

/// The packaged server's admin socket, in its unit's runtime directory
/// (the example server.toml's `admin_socket`).
pub const PACKAGED: &str = "/run/zeroth/admin.sock";

/// The socket /etc/zeroth/server.toml names (its `admin_socket`, else
/// `state_dir/admin.sock`, as the server decides) when this user can read
/// it, as root can; otherwise the packaged socket. Members of the admin
/// group cannot read the server's configuration, and need not.
/// Read once per run: clap asks for the default of every command that has
/// `--socket` while it builds the command line.
pub fn default() -> PathBuf {
    static FOUND: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FOUND.get_or_init(find).clone()
}

fn find() -> PathBuf {
    #[derive(serde::Deserialize)]
    struct Named {
        admin_socket: Option<PathBuf>,
        state_dir: Option<PathBuf>,
    }
    let named = std::fs::read_to_string(SERVER_TOML)
        .ok()
        .and_then(|text| toml::from_str::<Named>(&text).ok());
    match named {
        Some(Named {
            admin_socket: Some(socket),
            ..
        }) => socket,
        Some(Named {
            state_dir: Some(dir),
            ..
        }) => dir.join("admin.sock"),
        _ => PathBuf::from(PACKAGED),
    }
}
