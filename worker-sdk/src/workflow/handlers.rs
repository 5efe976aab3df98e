//! Query handlers: read-only functions the workflow registers on its context, answered by a
//! worker from the replayed instance ([`WorkflowInstance::query`]).
//!
//! A handler gets `&` access to nothing but what it captured (typically an `Rc<RefCell<..>>`
//! the workflow also holds) and issues no command: a query writes nothing to the history,
//! so it must not change what the workflow does next.
//!
//! [`WorkflowInstance::query`]: super::WorkflowInstance::query

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use steadfast_proto::v1 as pb;

use crate::payload;

/// Most characters of a handler's failure message sent back to the caller.
pub const QUERY_MESSAGE_CHARS_MAX: usize = 500;

type QueryFn = Box<dyn Fn(&pb::Payload) -> Result<pb::Payload, String>>;

/// Why a query got no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The workflow registered no handler of this name (the caller fixes the name).
    #[error("no query handler {name:?}; the workflow registered {known:?}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The names registered.
        known: Vec<String>,
    },
    /// The handler panicked, or its input or output could not be (de)coded.
    #[error("query handler {name:?} failed: {message}")]
    Failed {
        /// The handler's name.
        name: String,
        /// What went wrong, cut to [`QUERY_MESSAGE_CHARS_MAX`] characters.
        message: String,
    },
    /// The run could not be replayed to answer (e.g. nondeterminism).
    #[error("the run could not be replayed: {0}")]
    Replay(String),
}

/// The query handlers of one instance, by name.
#[derive(Default)]
pub(crate) struct QueryHandlers {
    handlers: BTreeMap<String, QueryFn>,
}

impl QueryHandlers {
    /// Registers (or replaces) handler `name`.
    pub(crate) fn insert<I, O>(&mut self, name: &str, handler: impl Fn(I) -> O + 'static)
    where
        I: serde::de::DeserializeOwned,
        O: serde::Serialize,
    {
        let f = move |input: &pb::Payload| -> Result<pb::Payload, String> {
            let input: I = payload::decode(Some(input))
                .map_err(|e| format!("the input does not decode: {e}"))?;
            payload::encode(&handler(input)).map_err(|e| format!("the answer does not encode: {e}"))
        };
        self.handlers.insert(name.to_owned(), Box::new(f));
    }

    /// Runs handler `name` on `input`.
    pub(crate) fn answer(
        &self,
        name: &str,
        input: &pb::Payload,
    ) -> Result<pb::Payload, QueryError> {
        let Some(handler) = self.handlers.get(name) else {
            return Err(QueryError::Unknown {
                name: name.to_owned(),
                known: self.handlers.keys().cloned().collect(),
            });
        };
        let failed = |message: &str| QueryError::Failed {
            name: name.to_owned(),
            message: super::error::short(message, QUERY_MESSAGE_CHARS_MAX),
        };
        match catch_unwind(AssertUnwindSafe(|| handler(input))) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(failed(&message)),
            Err(p) => Err(failed(&format!(
                "panicked: {}",
                match super::panic_error(&*p) {
                    super::Error::Panic { message } => message,
                    other => other.to_string(),
                }
            ))),
        }
    }
}
