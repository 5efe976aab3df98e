//! Who may call what. With `--auth-file`, every call carries `authorization: Bearer <token>`;
//! the token's hash is looked up in the file ([`table`]), which names its role and namespaces.
//!
//! Two checks, both before anything is looked up (so neither answer says whether a run
//! exists):
//! - [`layer::AuthLayer`], in front of every service: no or an unknown token ->
//!   UNAUTHENTICATED; a role that may not call this method -> PERMISSION_DENIED. The
//!   [`Principal`] is then put in the request's extensions.
//! - [`namespace`], the first line of every handler that takes a namespace: a namespace the
//!   token is not bound to -> PERMISSION_DENIED.
//!
//! Without an auth file no principal is attached and both checks let everything through.
//! Tokens are never logged; entries are named by their `name` field.

pub mod layer;
pub mod table;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tonic::{Request, Status};

pub use table::{Namespaces, Principal, Role, Table, TaskQueues};

/// How often the server looks at the auth file for changes (token rotation needs no restart).
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// The token table of a running server, reloaded when its file changes.
pub struct Authenticator {
    path: PathBuf,
    table: RwLock<(blake3::Hash, Arc<Table>)>,
}

impl Authenticator {
    /// Reads and checks `path`. A file that cannot be used stops the server from starting.
    pub fn load(path: &Path) -> Result<Authenticator, table::Error> {
        let (text, hash) = read(path)?;
        let table = Table::parse(&path.display().to_string(), &text)?;
        Ok(Authenticator {
            path: path.to_path_buf(),
            table: RwLock::new((hash, Arc::new(table))),
        })
    }

    /// A fixed table (for tests and embedding).
    pub fn from_table(table: Table) -> Authenticator {
        Authenticator {
            path: PathBuf::new(),
            table: RwLock::new((blake3::hash(b""), Arc::new(table))),
        }
    }

    /// The entry `token` matches.
    pub fn find(&self, token: &str) -> Option<Principal> {
        self.table.read().1.find(token).cloned()
    }

    /// Reads the file again; a changed file that parses replaces the table. A file that no
    /// longer parses keeps the table in force (and is reported), so a half-saved edit locks
    /// nobody out. Returns whether the table changed.
    pub fn reload(&self) -> bool {
        if self.path.as_os_str().is_empty() {
            return false;
        }
        let (text, hash) = match read(&self.path) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "auth file unreadable; the tokens loaded before stay in force");
                return false;
            }
        };
        if self.table.read().0 == hash {
            return false;
        }
        match Table::parse(&self.path.display().to_string(), &text) {
            Ok(t) => {
                tracing::info!(entries = t.len(), "auth file reloaded");
                *self.table.write() = (hash, Arc::new(t));
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "auth file changed but does not parse; the tokens loaded before stay in force");
                // Not again until it changes once more.
                self.table.write().0 = hash;
                false
            }
        }
    }

    /// Reloads every [`RELOAD_INTERVAL`] until the task is aborted.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.reload()).await;
        }
    }
}

fn read(path: &Path) -> Result<(String, blake3::Hash), table::Error> {
    let text = std::fs::read_to_string(path).map_err(|source| table::Error::Read {
        path: path.display().to_string(),
        source,
    })?;
    let hash = blake3::hash(text.as_bytes());
    Ok((text, hash))
}

/// Refuses `namespace` (empty = "default") when the caller's token is not bound to it. Call it
/// first in a handler, before any lookup. Without auth (no principal) everything is allowed.
pub fn namespace<T>(req: &Request<T>, namespace: &str) -> Result<(), Status> {
    let Some(p) = req.extensions().get::<Principal>() else {
        return Ok(());
    };
    let ns = if namespace.is_empty() {
        steadfast_engine::ids::DEFAULT_NAMESPACE
    } else {
        namespace
    };
    if p.namespaces.allows(ns) {
        return Ok(());
    }
    Err(Status::permission_denied(format!(
        "token {:?} may not use namespace {}: use a token bound to it (the server's auth file lists each token's namespaces)",
        p.name,
        crate::validate::quote(ns)
    )))
}

/// Whether the caller's token is limited to some task queues (then a completion's task must
/// be looked up to learn its queue; otherwise that read is skipped).
pub fn limits_queues<T>(req: &Request<T>) -> bool {
    matches!(
        req.extensions().get::<Principal>(),
        Some(p) if p.queues != TaskQueues::Any
    )
}

/// Refuses `queue` when the caller's token is limited to other task queues (`queues=` in the
/// auth file). For a poll, call it before waiting; for a completion, failure or heartbeat,
/// with the queue of the task its task token names.
pub fn task_queue<T>(req: &Request<T>, queue: &str) -> Result<(), Status> {
    match req.extensions().get::<Principal>() {
        Some(p) if !p.queues.allows(queue) => Err(Status::permission_denied(format!(
            "token {:?} may not use task queue {}: use a worker token whose auth-file entry lists it in queues=",
            p.name,
            crate::validate::quote(queue)
        ))),
        _ => Ok(()),
    }
}

/// Refuses a caller whose token is not bound to every namespace (`*`): for calls that act on
/// the whole server (a checkpoint of the store).
pub fn all_namespaces<T>(req: &Request<T>) -> Result<(), Status> {
    match req.extensions().get::<Principal>() {
        Some(p) if p.namespaces != Namespaces::Any => Err(Status::permission_denied(format!(
            "token {:?} is bound to some namespaces only; this call acts on all of them: use a token whose namespaces are `*`",
            p.name
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_takes_a_changed_file_and_keeps_the_old_table_when_it_does_not_parse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth");
        let a = table::Entry::line("a", Role::Client, &Namespaces::Any, "token-a-0123456789");
        let b = table::Entry::line("b", Role::Worker, &Namespaces::Any, "token-b-0123456789");
        std::fs::write(&path, format!("{a}\n")).unwrap();
        let auth = Authenticator::load(&path).unwrap();
        assert!(auth.find("token-a-0123456789").is_some());
        assert!(!auth.reload(), "unchanged");
        std::fs::write(&path, format!("{a}\n{b}\n")).unwrap();
        assert!(auth.reload());
        assert_eq!(auth.find("token-b-0123456789").unwrap().role, Role::Worker);
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(!auth.reload());
        assert!(auth.find("token-b-0123456789").is_some(), "old table kept");
        std::fs::write(&path, format!("{b}\n")).unwrap();
        assert!(auth.reload());
        assert!(
            auth.find("token-a-0123456789").is_none(),
            "removed entry refused"
        );
    }

    #[test]
    fn namespaces_are_checked_only_with_a_principal() {
        let mut req = Request::new(());
        assert!(namespace(&req, "anything").is_ok());
        req.extensions_mut().insert(Principal {
            name: "t".into(),
            role: Role::Client,
            namespaces: Namespaces::Only(vec!["default".into(), "a".into()]),
            queues: TaskQueues::Only(vec!["q".into()]),
        });
        assert!(namespace(&req, "").is_ok());
        assert!(namespace(&req, "a").is_ok());
        let e = namespace(&req, &"b".repeat(100_000)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().len() < 300, "{}", e.message().len());
        assert!(limits_queues(&req));
        assert!(task_queue(&req, "q").is_ok());
        let e = task_queue(&req, &"r".repeat(100_000)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().len() < 300, "{}", e.message().len());
        assert!(!limits_queues(&Request::new(())));
        assert!(task_queue(&Request::new(()), "r").is_ok());
    }
}
