//! Time as an injected dependency: the server asks a [`Clock`], tests move a [`MockClock`].

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::event::TimeMs;

/// A source of wall-clock time in ms since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now_ms(&self) -> TimeMs;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> TimeMs {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as TimeMs)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Clone, Default)]
pub struct MockClock(Arc<AtomicI64>);

impl MockClock {
    /// A clock at `ms`.
    pub fn at(ms: TimeMs) -> MockClock {
        MockClock(Arc::new(AtomicI64::new(ms)))
    }

    /// Moves it forward.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for MockClock {
    fn now_ms(&self) -> TimeMs {
        self.0.load(Ordering::SeqCst)
    }
}
