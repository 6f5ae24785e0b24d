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

/// Starts `zeroth lab` with the given components and reads its report up to
/// the ready line: the child, the daemons' pids, and the rest of its output.
fn start_zeroth_lab(
    only: &str,
) -> (
    std::process::Child,
    Vec<u32>,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .args(["lab", "--only", only])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut pids = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next() {
        let line = line.unwrap();
        if line.starts_with("lab ready") {
            return (child, pids, lines);
        }
        check_admin_password_file(&line);
        if let Some(pid) = line.split_whitespace().find_map(|w| w.strip_prefix("pid=")) {
            pids.push(pid.parse().unwrap());
        }
    }
    panic!("zeroth lab ended before it was ready: {:?}", child.wait());
}

/// A database's line names its admin's password file: private, and the
/// password in it logs in (so `zeroth db connection add … < FILE` can be
/// followed against the lab).
fn check_admin_password_file(line: &str) {
    use std::os::unix::fs::PermissionsExt;
    let Some(file) = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("admin_password_file="))
    else {
        return;
    };
    let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{file}");
    let password = std::fs::read_to_string(file).unwrap();
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .unwrap();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let out = if line.starts_with("postgres ") {
        std::process::Command::new(zeroth::lab::tools::PSQL.path().unwrap())
            .arg(format!(
                "host={host} port={port} user=postgres dbname=postgres sslmode=disable"
            ))
            .args(["-XAtc", "SELECT 1"])
            .env("PGPASSWORD", &password)
            .output()
            .unwrap()
    } else {
        std::process::Command::new(zeroth::lab::tools::MARIADB.path().unwrap())
            .args(["-h", host, "-P", port, "-u", "root", "-N", "-e", "SELECT 1"])
            .env("MYSQL_PWD", &password)
            .output()
            .unwrap()
    };
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn lab_dirs_of(pid: u32) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("zeroth-lab.{pid}.")))
        })
        .collect()
}

fn wait_until_gone(pids: &[u32], within: std::time::Duration) -> Vec<u32> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|p| !gone(*p)).collect();
        if alive.is_empty() || std::time::Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(std::time::Duration::from_millis(10)); // polling /proc, with a deadline
    }
}

#[test]
fn daemons_die_with_a_killed_parent_and_its_directories_are_swept() {
    let (mut zeroth, pids, _) = start_zeroth_lab("swtpm,postgres");
    assert_eq!(pids.len(), 2, "{pids:?}");
    let parent = zeroth.id();
    assert_eq!(lab_dirs_of(parent).len(), 2);

    // SIGKILL: no destructor runs; the kernel must take the daemons down.
    zeroth.kill().unwrap();
    zeroth.wait().unwrap();
    let alive = wait_until_gone(&pids, std::time::Duration::from_secs(10));
    assert!(
        alive.is_empty(),
        "daemons outlived their killed parent: {alive:?}"
    );

    // The killed lab's directories are removed by the next lab that starts
    // (possibly a test running in parallel).
    let _next = zeroth::lab::LabDir::new("sweeper").unwrap();
    assert!(lab_dirs_of(parent).is_empty(), "{:?}", lab_dirs_of(parent));
}

#[test]
fn zeroth_lab_stops_cleanly_when_its_input_closes() {
    let (mut zeroth, pids, mut rest) = start_zeroth_lab("mariadb,sshd");
    assert_eq!(pids.len(), 2, "{pids:?}");
    let parent = zeroth.id();
    drop(zeroth.stdin.take());
    assert_eq!(rest.next().unwrap().unwrap(), "lab stopped");
    assert!(zeroth.wait().unwrap().success());
    assert!(pids.iter().all(|p| gone(*p)), "{pids:?}");
    assert!(lab_dirs_of(parent).is_empty());
}
