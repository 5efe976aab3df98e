//! Long polls waiting at once per client connection (`polls_in_flight_per_connection_max`):
//! each waiting poll holds a task, a timer and a slot in the queue's wake-ups, so one caller
//! opening polls without end would starve the others.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tonic::Status;

/// Who a poll counts against: its connection (the peer's address and port), or, where the
/// transport gives none (an in-process channel), the worker id it names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A TCP (or TLS) connection.
    Connection(std::net::SocketAddr),
    /// A worker id, when there is no address.
    Worker(String),
}

impl Caller {
    /// The caller of `req`, naming `worker_id`.
    pub fn of<T>(req: &tonic::Request<T>, worker_id: &str) -> Caller {
        match req.remote_addr() {
            Some(a) => Caller::Connection(a),
            None => Caller::Worker(worker_id.to_string()),
        }
    }
}

/// Polls in flight per caller.
#[derive(Default)]
pub struct PollsInFlight {
    counts: Mutex<HashMap<Caller, u64>>,
}

/// One poll in flight; counted until dropped (answered, or the client went away).
pub struct Slot {
    polls: Arc<PollsInFlight>,
    caller: Caller,
}

impl PollsInFlight {
    /// Counts one more poll of `caller`, or refuses it past `max`.
    pub fn enter(self: &Arc<Self>, caller: Caller, max: u64) -> Result<Slot, Status> {
        let mut counts = self.counts.lock();
        let n = counts.entry(caller.clone()).or_default();
        if *n >= max {
            return Err(crate::limits::exceeded(
                format_args!("{n} polls are already waiting on this connection"),
                "polls_in_flight_per_connection_max",
                max,
            ));
        }
        *n += 1;
        Ok(Slot {
            polls: self.clone(),
            caller,
        })
    }

    /// Polls in flight of `caller`.
    #[cfg(test)]
    fn count(&self, caller: &Caller) -> u64 {
        self.counts.lock().get(caller).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.polls.counts.lock();
        if let Some(n) = counts.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_until_dropped() {
        let polls = Arc::new(PollsInFlight::default());
        let a = Caller::Worker("a".into());
        let first = polls.enter(a.clone(), 2).unwrap();
        let _second = polls.enter(a.clone(), 2).unwrap();
        let e = polls.enter(a.clone(), 2).err().unwrap();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(
            e.message()
                .contains("--limit polls_in_flight_per_connection_max=N"),
            "{}",
            e.message()
        );
        // Another caller is not affected.
        assert!(polls.enter(Caller::Worker("b".into()), 2).is_ok());
        drop(first);
        assert_eq!(polls.count(&a), 1);
        assert!(polls.enter(a.clone(), 2).is_ok());
    }
}
