//! The open connections: at most `--web.max-connections` of them, where a
//! new one evicts the longest-idle one so that scrapers always get in (a
//! flood of idle or slow connections cannot lock Prometheus out), a
//! header-read timeout from a request's first byte (slowloris) and an idle
//! timeout. One reaper task enforces both, waking at the next deadline
//! rather than on a tick.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::warn;

/// How long a client may take to send a request's headers, from its first
/// byte (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may sit with no request in flight and nothing sent
/// (keep-alive, or connected and silent). Longer than common scrape
/// intervals, so Prometheus keeps its connection between scrapes.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// The default of `--web.max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// One open connection, as the connection tracker sees it.
struct Conn {
    /// Requests being answered.
    in_flight: AtomicUsize,
    /// When it last became idle (accepted, or a response done), in ms since
    /// the tracker's epoch.
    idle_since: AtomicU64,
    /// When the first byte of the next request arrived while idle (ms since
    /// the epoch, plus one; 0 = none): the header-read timeout runs from it.
    reading_since: AtomicU64,
    /// HTTP/2: reads are frames (pings, settings), so any read is activity
    /// and only the idle timeout applies.
    h2: AtomicBool,
    close: tokio::sync::Notify,
}

/// The open connections: the cap, and the two timeouts.
pub(super) struct Tracker {
    epoch: Instant,
    max: usize,
    conns: Mutex<(u64, HashMap<u64, Arc<Conn>>)>,
    /// Whether the cap was hit since the last time the count fell below it,
    /// so that reaching it is logged once per episode.
    at_cap: AtomicBool,
    /// Wakes the reaper when a deadline may have come nearer: a connection
    /// admitted, a request starting to arrive, a response done. Between
    /// those, the reaper sleeps until the earliest deadline, or for good
    /// when there is none (an idle exporter wakes for nothing).
    wake: tokio::sync::Notify,
}

impl Tracker {
    /// No connection yet; at most `max` (at least one) at a time.
    pub(super) fn new(max: usize) -> Tracker {
        Tracker {
            epoch: Instant::now(),
            max: max.max(1),
            conns: Mutex::default(),
            at_cap: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Admits a new connection. At the cap, the longest-idle connection is
    /// closed to make room; with none idle, the new one is refused (None).
    pub(super) fn admit(self: &Arc<Self>) -> Option<ConnGuard> {
        let mut guard = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        let (next_id, conns) = &mut *guard;
        if conns.len() >= self.max {
            if !self.at_cap.swap(true, Ordering::Relaxed) {
                warn!(
                    max = self.max,
                    "--web.max-connections reached; closing the longest-idle connections to admit new ones"
                );
            }
            let victim = conns
                .iter()
                .filter(|(_, c)| c.in_flight.load(Ordering::Relaxed) == 0)
                .min_by_key(|(_, c)| c.idle_since.load(Ordering::Relaxed))
                .map(|(id, _)| *id);
            let victim = victim.and_then(|id| conns.remove(&id))?;
            victim.close.notify_one();
        } else if conns.len() + 1 < self.max {
            self.at_cap.store(false, Ordering::Relaxed);
        }
        let id = *next_id;
        *next_id += 1;
        let conn = Arc::new(Conn {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(self.now()),
            reading_since: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            close: tokio::sync::Notify::new(),
        });
        conns.insert(id, Arc::clone(&conn));
        self.wake.notify_one();
        Some(ConnGuard {
            tracker: Arc::clone(self),
            id,
            conn,
        })
    }

    /// Closes the connections past their header-read or idle timeout, and
    /// says when the next one of those that remain expires (ms since the
    /// epoch; `None`: no deadline, only connections answering a request).
    fn reap(&self) -> Option<u64> {
        let now = self.now();
        let header = u64::try_from(HEADER_READ_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
        let idle = u64::try_from(IDLE_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
        let mut next: Option<u64> = None;
        let mut guard = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        guard.1.retain(|_, c| {
            if c.in_flight.load(Ordering::Relaxed) > 0 {
                return true;
            }
            let reading = c.reading_since.load(Ordering::Relaxed);
            // Expired once more than the timeout has passed.
            let expires = if reading > 0 {
                (reading - 1).saturating_add(header).saturating_add(1)
            } else {
                c.idle_since
                    .load(Ordering::Relaxed)
                    .saturating_add(idle)
                    .saturating_add(1)
            };
            if now >= expires {
                c.close.notify_one();
                return false;
            }
            next = Some(next.map_or(expires, |n| n.min(expires)));
            true
        });
        next
    }

    /// Reaps at each deadline and whenever woken; never on a fixed tick.
    pub(super) async fn run_reaper(&self) {
        loop {
            let deadline = self
                .reap()
                .map(|ms| tokio::time::Instant::from_std(self.epoch + Duration::from_millis(ms)));
            tokio::select! {
                _ = crate::sampling::scheduler::sleep_until(deadline) => {}
                _ = self.wake.notified() => {}
            }
        }
    }
}

/// A tracked connection; leaving the tracker when dropped.
pub(super) struct ConnGuard {
    tracker: Arc<Tracker>,
    id: u64,
    conn: Arc<Conn>,
}

impl ConnGuard {
    /// What the connection's socket and service report through.
    pub(super) fn handle(&self) -> ConnHandle {
        ConnHandle {
            tracker: Arc::clone(&self.tracker),
            conn: Arc::clone(&self.conn),
        }
    }
}

/// How a connection tells the tracker what it is doing, and hears that it
/// must close.
#[derive(Clone)]
pub(super) struct ConnHandle {
    tracker: Arc<Tracker>,
    conn: Arc<Conn>,
}

impl ConnHandle {
    /// The socket, reporting when a request starts to arrive.
    pub(super) fn watch<T>(&self, io: T) -> Watched<T> {
        Watched {
            io,
            tracker: Arc::clone(&self.tracker),
            conn: Arc::clone(&self.conn),
        }
    }

    /// A request being answered, until the returned guard is dropped.
    pub(super) fn request(&self) -> InFlight {
        InFlight::new(&self.tracker, &self.conn)
    }

    /// The connection speaks HTTP/2 from now on: its reads are frames
    /// (pings, settings), so only the idle timeout applies.
    pub(super) fn speaks_h2(&self) {
        let c = &self.conn;
        c.h2.store(true, Ordering::Relaxed);
        c.reading_since.store(0, Ordering::Relaxed);
        c.idle_since.store(self.tracker.now(), Ordering::Relaxed);
    }

    /// Resolves when the tracker closes the connection.
    pub(super) async fn closed(&self) {
        self.conn.close.notified().await;
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.tracker
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .remove(&self.id);
    }
}

/// Marks a request in flight until dropped (answered or abandoned).
pub(super) struct InFlight {
    tracker: Arc<Tracker>,
    conn: Arc<Conn>,
}

impl InFlight {
    fn new(tracker: &Arc<Tracker>, conn: &Arc<Conn>) -> InFlight {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        conn.reading_since.store(0, Ordering::Relaxed);
        InFlight {
            tracker: Arc::clone(tracker),
            conn: Arc::clone(conn),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn
            .idle_since
            .store(self.tracker.now(), Ordering::Relaxed);
        self.conn.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.tracker.wake.notify_one();
    }
}

/// A socket that tells the tracker when a request starts to arrive.
pub(super) struct Watched<T> {
    io: T,
    tracker: Arc<Tracker>,
    conn: Arc<Conn>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let c = &self.conn;
            let now = self.tracker.now();
            if c.h2.load(Ordering::Relaxed) {
                c.idle_since.store(now, Ordering::Relaxed);
            } else if c.in_flight.load(Ordering::Relaxed) == 0
                && c.reading_since
                    .compare_exchange(0, now + 1, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                // A header-read deadline, nearer than the idle one.
                self.tracker.wake.notify_one();
            }
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trackers_close_idle_and_slow_connections_and_evict_at_the_cap() {
        let tracker = Arc::new(Tracker {
            epoch: Instant::now() - Duration::from_secs(1000),
            ..Tracker::new(2)
        });
        let a = tracker.admit().unwrap();
        let b = tracker.admit().unwrap();
        // b is answering a request: at the cap, the idle one (a) goes.
        let busy = InFlight::new(&tracker, &b.conn);
        a.conn.idle_since.store(0, Ordering::Relaxed);
        let c = tracker.admit().expect("room made by evicting a");
        assert!(!tracker.conns.lock().unwrap().1.contains_key(&a.id));
        // All busy: a new connection is refused.
        let busy_c = InFlight::new(&tracker, &c.conn);
        assert!(tracker.admit().is_none());
        drop((busy, busy_c));
        // Idle past IDLE_TIMEOUT, or reading headers past HEADER_READ_TIMEOUT: reaped.
        let now = tracker.now();
        b.conn
            .idle_since
            .store(now - IDLE_TIMEOUT.as_millis() as u64 - 1, Ordering::Relaxed);
        c.conn.reading_since.store(
            now - HEADER_READ_TIMEOUT.as_millis() as u64 - 1 + 1,
            Ordering::Relaxed,
        );
        assert_eq!(
            tracker.reap(),
            None,
            "nothing left: no deadline to wake for"
        );
        assert!(tracker.conns.lock().unwrap().1.is_empty());
        // A fresh one stays, and the reaper is told when it expires.
        let before = tracker.now();
        let d = tracker.admit().unwrap();
        let next = tracker.reap().expect("an idle connection has a deadline");
        let idle = IDLE_TIMEOUT.as_millis() as u64;
        assert!(
            next > before + idle && next <= tracker.now() + idle + 1,
            "{next}"
        );
        assert!(tracker.conns.lock().unwrap().1.contains_key(&d.id));
        // A request starting to arrive brings the deadline nearer.
        d.conn
            .reading_since
            .store(tracker.now() + 1, Ordering::Relaxed);
        let reading = tracker.reap().expect("a header-read deadline");
        assert!(reading <= tracker.now() + HEADER_READ_TIMEOUT.as_millis() as u64 + 1);
        assert!(reading < next);
        // Answering a request has no deadline.
        let _busy = InFlight::new(&tracker, &d.conn);
        assert_eq!(tracker.reap(), None);
    }
}
