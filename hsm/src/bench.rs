//! Measuring signing throughput: the raw PKCS#11 rate against the rate
//! through [`KeyStore`], in the same process, on the same token and key.

use std::time::{Duration, Instant};

use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};

use crate::{HsmError, KeyKind, KeyName, KeyStore, Pkcs11KeyStore};

/// Signatures completed by `threads` threads in `duration`, per second.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub threads: usize,
    pub signs: u64,
    pub elapsed: Duration,
}

impl Rate {
    pub fn per_second(&self) -> f64 {
        self.signs as f64 / self.elapsed.as_secs_f64()
    }
}

const MESSAGE: &[u8] =
    b"zeroth benchmark: a message the size of an SSH certificate's to-be-signed part, roughly";

/// Raw cryptoki: one session per thread, the key handle looked up once,
/// then C_Sign in a loop (pure EdDSA, or CKM_ECDSA over a SHA-256 digest
/// computed once). This is the ceiling the token allows.
pub fn raw(
    store: &Pkcs11KeyStore,
    name: &KeyName,
    kind: KeyKind,
    threads: usize,
    duration: Duration,
) -> Result<Rate, HsmError> {
    store.get_or_generate(name, kind)?;
    let eddsa = kind == KeyKind::Ed25519;
    let input = if eddsa {
        MESSAGE.to_vec()
    } else {
        <sha2::Sha256 as sha2::Digest>::digest(MESSAGE).to_vec()
    };
    let ctx = store.module().ctx();
    let label = name.label().into_bytes();
    run_threads(threads, duration, |deadline| {
        let session = ctx
            .open_ro_session(store.slot())
            .map_err(HsmError::pkcs11("C_OpenSession"))?;
        let key = *session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(label.clone()),
            ])
            .map_err(HsmError::pkcs11("C_FindObjects"))?
            .first()
            .ok_or_else(|| HsmError::KeyMissing(name.to_string()))?;
        // Mechanism parameters hold raw pointers: one per thread.
        let mech = if eddsa {
            Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure))
        } else {
            Mechanism::Ecdsa
        };
        let mut n = 0;
        while Instant::now() < deadline {
            session
                .sign(&mech, key, &input)
                .map_err(HsmError::pkcs11("C_Sign"))?;
            n += 1;
        }
        Ok(n)
    })
}

/// The same signatures through [`KeyStore::sign`] (pool, handle cache, checks).
pub fn keystore(
    store: &dyn KeyStore,
    name: &KeyName,
    kind: KeyKind,
    threads: usize,
    duration: Duration,
) -> Result<Rate, HsmError> {
    store.get_or_generate(name, kind)?;
    run_threads(threads, duration, |deadline| {
        let mut n = 0;
        while Instant::now() < deadline {
            store.sign(name, MESSAGE)?;
            n += 1;
        }
        Ok(n)
    })
}

fn run_threads(
    threads: usize,
    duration: Duration,
    work: impl Fn(Instant) -> Result<u64, HsmError> + Sync,
) -> Result<Rate, HsmError> {
    let start = Instant::now();
    let deadline = start + duration;
    let counts: Vec<Result<u64, HsmError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| s.spawn(|| work(deadline)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Ok(0)))
            .collect()
    });
    let elapsed = start.elapsed();
    let mut signs = 0;
    for c in counts {
        signs += c?;
    }
    Ok(Rate {
        threads: threads.max(1),
        signs,
        elapsed,
    })
}
