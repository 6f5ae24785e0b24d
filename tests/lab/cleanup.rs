use std::path::Path;

use zeroth::lab::Postgres;

fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn dropping_a_component_stops_its_processes_and_removes_its_directory() {
    let pg = Postgres::start().unwrap();
    let pid = pg.pid().unwrap();
    let dir = pg
        .socket_dir()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    assert!(!gone(pid) && dir.exists());
    drop(pg);
    // The drop returns only once the process group has been reaped.
    assert!(gone(pid), "postgres {pid} survived its handle");
    assert!(!dir.exists(), "{} survived its handle", dir.display());
}
