//! Worker side of [`super::Conversation`]: resolving a transcript reference to the full list
//! of messages (the format is in [`super::conversation`]).
//!
//! - **Warm path**: a per-process LRU cache maps the blake3 of an `llm.chat` input to the
//!   full transcript of that call. When call `k` succeeds, its transcript is cached under
//!   its own input hash and the entry of the call it referred to is dropped (the
//!   conversation has moved on), so call `k + 1` finds its base in O(1) and the cache holds
//!   about one transcript per live conversation.
//! - **Cold path** (another worker ran the previous call, or this one restarted): the chain
//!   is walked back with `GetBlob` until a cached transcript or a request without `prev`,
//!   one fetch per link, each verified against its hash and its message count.
//!
//! The cache is bounded by [`DEFAULT_CACHE_BYTES_MAX`] (estimated message bytes; change it
//! with [`set_cache_bytes_max`]) and [`CACHE_ENTRIES_MAX`]; past either, the least recently
//! used transcripts go first (and would be fetched again if ever needed). It is the one
//! structure of the LLM helper that grows with the number of conversations a worker has
//! served (the last transcript of a finished conversation stays until it is evicted), so it
//! is what bounds the worker's memory for them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use lru::LruCache;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{ChatRequest, Error, Message};
use crate::activity::ActivityContext;

/// Most estimated bytes of transcripts the cache holds, unless [`set_cache_bytes_max`] said
/// otherwise.
pub const DEFAULT_CACHE_BYTES_MAX: u64 = 64 << 20;

static CACHE_BYTES_MAX: AtomicU64 = AtomicU64::new(DEFAULT_CACHE_BYTES_MAX);

/// Sets the most estimated bytes of transcripts this process caches (a transcript larger
/// than that is not cached at all: each call of its conversation fetches its chain again).
pub fn set_cache_bytes_max(bytes: u64) {
    CACHE_BYTES_MAX.store(bytes, Ordering::Relaxed);
}

fn cache_bytes_max() -> u64 {
    CACHE_BYTES_MAX.load(Ordering::Relaxed)
}
/// Most transcripts the cache holds.
pub const CACHE_ENTRIES_MAX: usize = 1_024;
/// Longest chain of references one resolution walks (a guard; every real chain is far
/// shorter than the history limits allow).
pub const CHAIN_LINKS_MAX: usize = 100_000;

type Hash = [u8; 32];

/// What the cache did since the process started (for tests and logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    /// References resolved from the cache.
    pub hits: u64,
    /// References that needed the server.
    pub misses: u64,
    /// Blobs fetched with `GetBlob`.
    pub blobs_fetched: u64,
    /// Bytes of those blobs.
    pub blob_bytes_fetched: u64,
    /// Transcripts cached now.
    pub entries: u64,
    /// Their estimated bytes now.
    pub bytes: u64,
}

struct Entry {
    messages: Arc<Vec<Message>>,
    bytes: u64,
}

struct Cache {
    lru: LruCache<Hash, Entry>,
    bytes: u64,
    stats: CacheStats,
}

impl Cache {
    fn get(&mut self, hash: &Hash) -> Option<Arc<Vec<Message>>> {
        self.lru.get(hash).map(|e| Arc::clone(&e.messages))
    }

    fn put(&mut self, hash: Hash, messages: Arc<Vec<Message>>) {
        let bytes = messages.iter().map(message_bytes).sum();
        let max = cache_bytes_max();
        if bytes > max {
            return;
        }
        if let Some(old) = self.lru.put(hash, Entry { messages, bytes }) {
            self.bytes -= old.bytes;
        }
        self.bytes += bytes;
        while self.bytes > max || self.lru.len() > CACHE_ENTRIES_MAX {
            match self.lru.pop_lru() {
                Some((_, e)) => self.bytes -= e.bytes,
                None => break,
            }
        }
    }

    fn remove(&mut self, hash: &Hash) {
        if let Some(e) = self.lru.pop(hash) {
            self.bytes -= e.bytes;
        }
    }
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(|| {
        Mutex::new(Cache {
            lru: LruCache::unbounded(),
            bytes: 0,
            stats: CacheStats::default(),
        })
    })
}

/// Estimated heap bytes of a message.
fn message_bytes(m: &Message) -> u64 {
    let calls: usize = m
        .tool_calls
        .iter()
        .map(|c| c.id.len() + c.name.len() + c.arguments_json.len() + 72)
        .sum();
    (m.role.len()
        + m.content.as_ref().map_or(0, String::len)
        + m.tool_call_id.as_ref().map_or(0, String::len)
        + calls
        + 96) as u64
}

/// The cache's counters.
pub fn cache_stats() -> CacheStats {
    let c = cache().lock();
    CacheStats {
        entries: c.lru.len() as u64,
        bytes: c.bytes,
        ..c.stats
    }
}

fn parse_hash(hex_hash: &str) -> Result<Hash, Error> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut out).map_err(|_| {
        Error::Transcript(format!(
            "prev {hex_hash:?} is not a blake3 hash (64 hex digits)"
        ))
    })?;
    Ok(out)
}

/// The full transcript of the call whose input hashes to `prev`, which must hold `count`
/// messages.
async fn full_transcript(
    ctx: &ActivityContext,
    prev: Hash,
    count: u64,
) -> Result<Arc<Vec<Message>>, Error> {
    let mismatch = |hash: &Hash, found: u64, expected: u64| {
        Error::Transcript(format!(
            "the transcript of {} holds {found} messages; the reference says {expected}",
            hex::encode(hash)
        ))
    };
    {
        let mut c = cache().lock();
        if let Some(m) = c.get(&prev) {
            c.stats.hits += 1;
            drop(c);
            if m.len() as u64 != count {
                return Err(mismatch(&prev, m.len() as u64, count));
            }
            return Ok(m);
        }
        c.stats.misses += 1;
    }
    let client = ctx.client().ok_or_else(|| {
        Error::Transcript(
            "the request refers to an earlier transcript, and this activity has no client to \
             fetch it (run it in a Worker, or resolve the request first)"
                .into(),
        )
    })?;
    // Newest first: the messages each link adds.
    let mut links: Vec<Vec<Message>> = Vec::new();
    let mut want = prev;
    let mut want_count = count;
    let base: Arc<Vec<Message>> = loop {
        if links.len() >= CHAIN_LINKS_MAX {
            return Err(Error::Transcript(format!(
                "the chain of transcript references is longer than {CHAIN_LINKS_MAX} links"
            )));
        }
        if !links.is_empty()
            && let Some(m) = cache().lock().get(&want)
        {
            if m.len() as u64 != want_count {
                return Err(mismatch(&want, m.len() as u64, want_count));
            }
            break m;
        }
        let bytes = client
            .get_blob(&want)
            .await
            .map_err(|e| match e {
                e if e.is_retryable() => Error::Unavailable(format!("GetBlob: {e}")),
                e => Error::Transcript(format!("GetBlob {}: {e}", hex::encode(want))),
            })?
            .ok_or_else(|| {
                Error::Transcript(format!(
                    "the server has no blob {} (a reference must point at an llm.chat input \
                     longer than the server's inline limit)",
                    hex::encode(want)
                ))
            })?;
        {
            let mut c = cache().lock();
            c.stats.blobs_fetched += 1;
            c.stats.blob_bytes_fetched += bytes.len() as u64;
        }
        let request: ChatRequest = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Transcript(format!(
                "blob {} is not an llm.chat input: {e}",
                hex::encode(want)
            ))
        })?;
        let t = request.transcript.unwrap_or_default();
        let found = t.prev_messages + request.messages.len() as u64;
        if found != want_count {
            return Err(mismatch(&want, found, want_count));
        }
        links.push(request.messages);
        match t.prev {
            None => break Arc::new(Vec::new()),
            Some(p) => {
                want = parse_hash(&p)?;
                want_count = t.prev_messages;
            }
        }
    };
    let mut full = Vec::with_capacity(count as usize);
    full.extend(base.iter().cloned());
    for link in links.into_iter().rev() {
        full.extend(link);
    }
    let full = Arc::new(full);
    cache().lock().put(prev, Arc::clone(&full));
    Ok(full)
}

/// `request` with its transcript reference resolved: [`ChatRequest::messages`] holds the
/// whole conversation and [`ChatRequest::transcript`] is `None`. A request without a
/// reference is returned as it is. Uses the cache, else `GetBlob` through
/// [`ActivityContext::client`].
pub async fn resolve_transcript(
    ctx: &ActivityContext,
    mut request: ChatRequest,
) -> Result<ChatRequest, Error> {
    let Some(t) = request.transcript.take() else {
        return Ok(request);
    };
    let Some(prev) = t.prev else {
        return Ok(request);
    };
    let base = full_transcript(ctx, parse_hash(&prev)?, t.prev_messages).await?;
    let mut messages = Vec::with_capacity(base.len() + request.messages.len());
    messages.extend(base.iter().cloned());
    messages.append(&mut request.messages);
    request.messages = messages;
    Ok(request)
}

/// What the `llm.chat` activity remembers after a successful call: the transcript of its
/// input, under the input's hash, in place of the transcript it referred to.
pub(crate) struct Link {
    prev: Option<Hash>,
    input: Option<Hash>,
}

impl Link {
    /// The link of `request`, the input of the attempt of `ctx`. Only conversation requests
    /// ([`ChatRequest::transcript`] set) whose input may be referenced are remembered.
    pub(crate) fn of(ctx: &ActivityContext, request: &ChatRequest) -> Link {
        let Some(t) = &request.transcript else {
            return Link {
                prev: None,
                input: None,
            };
        };
        let referenceable =
            ctx.input_len().unwrap_or(0) > super::conversation::SERVER_INLINE_BYTES_MAX as u64;
        Link {
            prev: t.prev.as_deref().and_then(|p| parse_hash(p).ok()),
            input: ctx.input_hash().filter(|_| referenceable),
        }
    }

    /// Caches `messages` (the resolved transcript of the input) and drops the one the input
    /// referred to: the next call of the conversation refers to this one.
    pub(crate) fn remember(self, messages: Vec<Message>) {
        let Some(input) = self.input else { return };
        let mut c = cache().lock();
        if let Some(prev) = self.prev {
            c.remove(&prev);
        }
        c.put(input, Arc::new(messages));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::ActivityInfo;

    #[tokio::test]
    async fn a_cached_base_resolves_without_the_server() {
        let base: Vec<Message> = vec![Message::system("s"), Message::user("u")];
        let hash = *blake3::hash(b"a test input nobody else uses").as_bytes();
        cache().lock().put(hash, Arc::new(base.clone()));
        let ctx = ActivityContext::new(ActivityInfo::default());
        let request = ChatRequest {
            transcript: Some(super::super::TranscriptRef {
                prev: Some(hex::encode(hash)),
                prev_messages: 2,
            }),
            messages: vec![Message::assistant("a")],
            ..Default::default()
        };
        let resolved = resolve_transcript(&ctx, request.clone()).await.unwrap();
        assert_eq!(resolved.transcript, None);
        assert_eq!(
            resolved.messages,
            [base.clone(), vec![Message::assistant("a")]].concat()
        );
        // A count that does not match is refused, not silently used.
        let mut wrong = request.clone();
        wrong.transcript.as_mut().unwrap().prev_messages = 3;
        let e = resolve_transcript(&ctx, wrong).await.unwrap_err();
        assert!(matches!(e, Error::Transcript(_)), "{e}");
        // Not cached and no client: a clear, non-retryable error.
        let mut unknown = request;
        unknown.transcript.as_mut().unwrap().prev = Some(hex::encode([7u8; 32]));
        let e = resolve_transcript(&ctx, unknown).await.unwrap_err();
        assert!(
            !e.is_retryable() && e.to_string().contains("no client"),
            "{e}"
        );
    }

    #[test]
    fn the_cache_stays_within_its_bytes() {
        let mut c = Cache {
            lru: LruCache::unbounded(),
            bytes: 0,
            stats: CacheStats::default(),
        };
        let big = Arc::new(vec![Message::user("x".repeat(1 << 20)); 8]);
        for i in 0..100u8 {
            c.put([i; 32], Arc::clone(&big));
            assert!(c.bytes <= cache_bytes_max());
        }
        assert!(c.lru.len() < 10);
        assert!(c.get(&[99; 32]).is_some() && c.get(&[0; 32]).is_none());
        c.remove(&[99; 32]);
        assert!(c.get(&[99; 32]).is_none());
    }
}
