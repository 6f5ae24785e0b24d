//! The `unix:sha256` attestor's cache: executables are hashed once per
//! file identity, and only while a registration entry names a hash.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Executables larger than this are not hashed (no `unix:sha256` fact).
pub const MAX_HASHED: u64 = 256 * 1024 * 1024;

/// Hashes of executables already read, by file identity, so a program
/// that connects often is hashed once; and whether hashes are wanted at
/// all (only when an entry names one: otherwise no caller's executable is
/// read, whatever its size).
#[derive(Default)]
pub struct HashCache {
    known: Mutex<HashMap<FileIdentity, [u8; 32]>>,
    unwanted: std::sync::atomic::AtomicBool,
}

/// A file's device, inode, size, and mtime and ctime to the nanosecond: a
/// changed file is a new key, also when it was rewritten within a second.
type FileIdentity = (u64, u64, u64, (i64, i64), (i64, i64));

impl HashCache {
    /// Whether callers' executables are hashed from now on.
    pub fn wanted(&self, wanted: bool) {
        self.unwanted
            .store(!wanted, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn is_wanted(&self) -> bool {
        !self.unwanted.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn digest(&self, file: &mut std::fs::File) -> Option<[u8; 32]> {
        let m = file.metadata().ok()?;
        if m.len() > MAX_HASHED {
            return None;
        }
        let key = (
            m.dev(),
            m.ino(),
            m.len(),
            (m.mtime(), m.mtime_nsec()),
            (m.ctime(), m.ctime_nsec()),
        );
        if let Some(d) = self.known.lock().ok()?.get(&key) {
            return Some(*d);
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut taken = file.take(MAX_HASHED);
        loop {
            let n = taken.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let digest: [u8; 32] = hasher.finalize().into();
        let mut map = self.known.lock().ok()?;
        if map.len() > 4096 {
            map.clear();
        }
        map.insert(key, digest);
        Some(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_rewritten_within_one_second_is_hashed_again() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("program");
        let second = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let write = |content: &[u8], nanos: u64| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .unwrap();
            f.write_all(content).unwrap();
            f.set_modified(second + std::time::Duration::from_nanos(nanos))
                .unwrap();
        };
        let hashes = HashCache::default();
        write(b"first program", 100);
        let first = hashes.digest(&mut std::fs::File::open(&path).unwrap());
        // Same inode, same size, same whole second: only the nanoseconds differ.
        write(b"other program", 200);
        let second_digest = hashes.digest(&mut std::fs::File::open(&path).unwrap());
        assert_eq!(first, Some(Sha256::digest(b"first program").into()));
        assert_eq!(second_digest, Some(Sha256::digest(b"other program").into()));
    }
}
