//! Update handlers (validated, durable, may run activities: workflow code) and query
//! handlers: read-only functions the workflow registers on its context, answered by a
//! worker from the replayed instance ([`WorkflowInstance::query`]).
//!
//! A handler gets `&` access to nothing but what it captured (typically an `Rc<RefCell<..>>`
//! the workflow also holds) and issues no command: a query writes nothing to the history,
//! so it must not change what the workflow does next.
//!
//! [`WorkflowInstance::query`]: super::WorkflowInstance::query

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};

use futures::future::LocalBoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use steadfast_proto::v1 as pb;

use super::WorkflowError;
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

type Validator = Box<dyn Fn(&pb::Payload) -> Result<(), String>>;
/// A validator of decoded inputs, as the workflow registers it.
pub(crate) type TypedValidator<I> = Box<dyn Fn(&I) -> Result<(), String>>;
type UpdateFn = Box<dyn Fn(&pb::Payload) -> Result<UpdateFuture, String>>;
/// A running update handler: workflow code, polled by the executor beside the workflow.
pub(crate) type UpdateFuture = LocalBoxFuture<'static, Result<pb::Payload, String>>;

struct UpdateHandler {
    validator: Option<Validator>,
    handler: UpdateFn,
}

/// An update the history delivered that the executor has not started or rejected yet.
pub(crate) struct UpdateRequest {
    pub(crate) update_id: String,
    pub(crate) name: String,
    pub(crate) input: pb::Payload,
}

/// What the executor does with a delivered update.
pub(crate) enum UpdateStart {
    /// Run this handler; its result answers the update.
    Run(UpdateFuture),
    /// Refuse it with this reason (UpdateRejected).
    Reject(String),
}

/// The update handlers of one instance, and the updates delivered but not started yet.
#[derive(Default)]
pub(crate) struct UpdateHandlers {
    handlers: BTreeMap<String, UpdateHandler>,
    pub(crate) requested: VecDeque<UpdateRequest>,
}

impl UpdateHandlers {
    /// Registers (or replaces) update handler `name`, with an optional validator.
    pub(crate) fn insert<I, O, F, Fut>(
        &mut self,
        name: &str,
        validator: Option<TypedValidator<I>>,
        handler: F,
    ) where
        I: DeserializeOwned + 'static,
        O: Serialize + 'static,
        F: Fn(I) -> Fut + 'static,
        Fut: Future<Output = Result<O, WorkflowError>> + 'static,
    {
        let validator = validator.map(|v| -> Validator {
            Box::new(move |input: &pb::Payload| {
                let input: I = payload::decode(Some(input))
                    .map_err(|e| format!("the input does not decode: {e}"))?;
                v(&input)
            })
        });
        let handler: UpdateFn = Box::new(move |input: &pb::Payload| {
            let input: I = payload::decode(Some(input))
                .map_err(|e| format!("the input does not decode: {e}"))?;
            let fut = handler(input);
            Ok(Box::pin(async move {
                match fut.await {
                    Ok(v) => {
                        payload::encode(&v).map_err(|e| format!("the result does not encode: {e}"))
                    }
                    Err(e) => Err(format!("the handler failed: {e}")),
                }
            }) as UpdateFuture)
        });
        self.handlers
            .insert(name.to_owned(), UpdateHandler { validator, handler });
    }

    /// Validates `req` and, if accepted, creates its handler's future. User code: the caller
    /// guards it against panics.
    pub(crate) fn start(&self, req: &UpdateRequest) -> UpdateStart {
        let Some(h) = self.handlers.get(&req.name) else {
            return UpdateStart::Reject(format!(
                "the workflow has no update handler {:?} (it has {:?})",
                req.name,
                self.handlers.keys().collect::<Vec<_>>()
            ));
        };
        if let Some(v) = &h.validator
            && let Err(reason) = v(&req.input)
        {
            return UpdateStart::Reject(super::error::short(&reason, QUERY_MESSAGE_CHARS_MAX));
        }
        match (h.handler)(&req.input) {
            Ok(f) => UpdateStart::Run(f),
            Err(reason) => UpdateStart::Reject(reason),
        }
    }
}
