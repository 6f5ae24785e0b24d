//! The relay of plain sessions (a local client, a database without TLS):
//! a few threads, one per core, each waiting on its own epoll set for the
//! sessions it was given (every n-th), copy whatever is ready both ways.
//!
//! The agent's threads stay bounded however many sessions are open (a
//! thread per direction would meet systemd's task limit at a few thousand),
//! a session costs a few KiB, and under load one wake-up serves several
//! sessions. The sockets are level-triggered and non-blocking: a read that
//! finds nothing costs no extra call, and a write the peer cannot take yet
//! parks the rest of the message and stops reading that side until it is
//! flushed, so a slow reader never makes the agent buffer more than one
//! read per session.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, OnceLock};

use rustix::buffer::spare_capacity;
use rustix::event::epoll::{self, EventData, EventFlags};

use super::conn::Plain;
use super::relay::Relayed;

/// One read's worth of bytes, shared by every session.
const BUFFER: usize = 64 * 1024;
/// Events taken per wait.
const EVENTS: usize = 256;

/// The client's side is 0, the database's 1.
struct Side {
    sock: Plain,
    /// Bytes read from this side.
    read: u64,
    /// Bytes read from this side that the other could not take yet.
    parked: Vec<u8>,
    /// What this side's socket is registered for.
    interest: EventFlags,
    /// Hung up with bytes still parked; out of the epoll set.
    ended: bool,
}

struct Session {
    sides: [Side; 2],
    done: tokio::sync::oneshot::Sender<Relayed>,
}

struct Reactor {
    epoll: OwnedFd,
    arriving: mpsc::Sender<(u64, Session)>,
}

static REACTORS: OnceLock<std::io::Result<Vec<Reactor>>> = OnceLock::new();
static NEXT: AtomicU64 = AtomicU64::new(0);

fn start() -> std::io::Result<Reactor> {
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    let waiting = epoll.try_clone()?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("proxy-relay".into())
        .spawn(move || run(waiting, rx))?;
    Ok(Reactor {
        epoll,
        arriving: tx,
    })
}

/// The relay thread for the next session: one per core, taken in turn.
fn reactor() -> std::io::Result<(&'static Reactor, u64)> {
    let all = REACTORS
        .get_or_init(|| {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            (0..n).map(|_| start()).collect()
        })
        .as_ref()
        .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))?;
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    Ok((&all[id as usize % all.len()], id))
}

fn token(id: u64, side: usize) -> EventData {
    EventData::new_u64(id << 1 | side as u64)
}

/// Hands a session to the relay thread; its counts arrive on the receiver
/// once either side ends.
pub fn relay(
    client: Plain,
    server: Plain,
) -> std::io::Result<tokio::sync::oneshot::Receiver<Relayed>> {
    let (r, id) = reactor()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let side = |sock| Side {
        sock,
        read: 0,
        parked: Vec::new(),
        interest: EventFlags::IN,
        ended: false,
    };
    let session = Session {
        sides: [side(client), side(server)],
        done: tx,
    };
    // The sockets join the set before the session reaches the thread: an
    // event that comes first finds no session and is reported again at the
    // next wait (the set is level-triggered), by when the session is there.
    for i in 0..2 {
        if let Err(e) = epoll::add(
            &r.epoll,
            session.sides[i].sock.fd(),
            token(id, i),
            EventFlags::IN,
        ) {
            if i == 1 {
                let _ = epoll::delete(&r.epoll, session.sides[0].sock.fd());
            }
            return Err(e.into());
        }
    }
    let sent = r.arriving.send((id, session));
    if let Err(mpsc::SendError((_, session))) = sent {
        for side in &session.sides {
            let _ = epoll::delete(&r.epoll, side.sock.fd());
        }
        return Err(std::io::Error::other("the relay thread has stopped"));
    }
    Ok(rx)
}

fn run(epoll: OwnedFd, arriving: mpsc::Receiver<(u64, Session)>) {
    let mut sessions: HashMap<u64, Session> = HashMap::new();
    let mut buf = vec![0u8; BUFFER];
    let mut events = Vec::with_capacity(EVENTS);
    loop {
        events.clear();
        match epoll::wait(&epoll, spare_capacity(&mut events), None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "the proxy's relay thread stopped");
                return;
            }
        }
        for ev in &events {
            let (flags, data) = (ev.flags, ev.data.u64());
            let (id, side) = (data >> 1, (data & 1) as usize);
            if !sessions.contains_key(&id) {
                sessions.extend(arriving.try_iter());
            }
            let Some(s) = sessions.get_mut(&id) else {
                // A session on its way to this thread, or a late event of
                // one already ended.
                continue;
            };
            if step(&epoll, id, s, side, flags, &mut buf).is_err() {
                if let Some(s) = sessions.remove(&id) {
                    finish(&epoll, s);
                }
            }
        }
    }
}

/// The session's end: both sockets closed (each peer sees its stream
/// end), their counts sent to whoever waits for them.
fn finish(epoll: &OwnedFd, s: Session) {
    for side in &s.sides {
        if !side.ended {
            let _ = epoll::delete(epoll, side.sock.fd());
        }
        side.sock.close();
    }
    let _ = s.done.send(Relayed {
        from_client: s.sides[0].read,
        to_client: s.sides[1].read,
    });
}

/// Writes what the socket takes now; how much that was.
fn write_some(sock: &mut Plain, bytes: &[u8]) -> Result<usize, ()> {
    let mut at = 0;
    while at < bytes.len() {
        match sock.write(&bytes[at..]) {
            Ok(0) => return Err(()),
            Ok(n) => at += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(_) => return Err(()),
        }
    }
    Ok(at)
}

/// Whatever `side`'s socket is ready for. `Err` ends the session.
fn step(
    epoll: &OwnedFd,
    id: u64,
    s: &mut Session,
    side: usize,
    flags: EventFlags,
    buf: &mut [u8],
) -> Result<(), ()> {
    let other = 1 - side;
    if flags.contains(EventFlags::OUT) && !s.sides[other].parked.is_empty() {
        let mut parked = std::mem::take(&mut s.sides[other].parked);
        let written = write_some(&mut s.sides[side].sock, &parked)?;
        parked.drain(..written);
        s.sides[other].parked = parked;
        if s.sides[other].parked.is_empty() && s.sides[other].ended {
            return Err(());
        }
    }
    let readable = flags.intersects(EventFlags::IN | EventFlags::HUP | EventFlags::ERR);
    if readable && s.sides[side].parked.is_empty() {
        let n = loop {
            match s.sides[side].sock.read(buf) {
                Ok(0) => return Err(()),
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break 0,
                Err(_) => return Err(()),
            }
        };
        if n > 0 {
            s.sides[side].read += n as u64;
            let written = write_some(&mut s.sides[other].sock, &buf[..n])?;
            if written < n {
                s.sides[side].parked.extend_from_slice(&buf[written..n]);
            }
        }
    } else if flags.intersects(EventFlags::HUP | EventFlags::ERR) && !s.sides[side].ended {
        // Hung up while some of its bytes wait for the other side: they
        // are still delivered, then the session ends. Its socket leaves
        // the set, which would otherwise report the hang-up without end.
        s.sides[side].ended = true;
        epoll::delete(epoll, s.sides[side].sock.fd()).map_err(|_| ())?;
    }
    for i in [side, other] {
        if s.sides[i].ended {
            continue;
        }
        // Read a side while nothing of it is parked; wait to write to a
        // side while the other's bytes are parked for it.
        let mut want = EventFlags::empty();
        if s.sides[i].parked.is_empty() {
            want |= EventFlags::IN;
        }
        if !s.sides[1 - i].parked.is_empty() {
            want |= EventFlags::OUT;
        }
        if want != s.sides[i].interest {
            epoll::modify(epoll, s.sides[i].sock.fd(), token(id, i), want).map_err(|_| ())?;
            s.sides[i].interest = want;
        }
    }
    Ok(())
}
