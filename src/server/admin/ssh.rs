//! Admin-socket operations on the SSH CAs: `ssh.ca.list` and the three
//! rotation steps `ssh.ca.prepare|activate|retire` (`params.kind`: "user"
//! or "host").

use serde_json::{json, Value};

use super::{AdminError, AdminRequest, Extensions};
use crate::creds::ssh::ca_set::CaKind;

/// Runs the operation if it is one of these; `None` for any other op.
pub fn execute(ext: &Extensions, req: &AdminRequest) -> Option<Result<Value, AdminError>> {
    let ssh = &ext.ssh;
    let kind = || {
        let k = req.params["kind"].as_str().unwrap_or("user");
        CaKind::parse(k)
            .ok_or_else(|| AdminError::BadRequest(format!("\"kind\" is user or host, not {k:?}")))
    };
    let result = match req.op.as_str() {
        "ssh.ca.list" => Ok(json!({"ok": true, "cas": ssh.list_cas()})),
        "ssh.ca.prepare" => kind().and_then(|k| {
            ssh.prepare(k)
                .map(|ca| json!({"ok": true, "ca": ca}))
                .map_err(AdminError::from)
        }),
        "ssh.ca.activate" => kind().and_then(|k| {
            ssh.activate(k)
                .map(|name| json!({"ok": true, "active": name}))
                .map_err(AdminError::from)
        }),
        "ssh.ca.retire" => kind().and_then(|k| {
            ssh.retire(k)
                .map(|names| json!({"ok": true, "removed": names}))
                .map_err(AdminError::from)
        }),
        _ => return None,
    };
    Some(result)
}
