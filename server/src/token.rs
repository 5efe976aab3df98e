//! Task tokens: what a worker holds for a task it was handed, and the only thing about the
//! task the server believes from it.
//!
//! A token is opaque to workers, versioned and signed by the server. It names the run, the
//! durable record that started the task (its seq *and* its hash, so a seq reused after a lost
//! record cannot pass for the old one) and, for activities, the attempt. The server checks
//! the MAC before it reads anything from the token, then checks that the record it names is
//! still the current one ([`crate::service::worker`]).
//!
//! Wire format (version 1), base64url without padding:
//!
//! ```text
//! version u8 = 1 | kind u8 (1 workflow, 2 activity, 3 transient workflow attempt)
//! | namespace: len u16 BE + bytes | run id 16 bytes | record seq u64 BE | record hash 32 bytes
//! | (activity only) activity id u32 BE | attempt u32 BE
//! | (transient only) last seq seen u64 BE | hand-out time i64 BE | attempt u32 BE
//! | MAC: blake3::keyed_hash(key, everything before it), 32 bytes
//! ```
//!
//! The key is 32 bytes: generated once into `<data-dir>/token.key`, or read from the file
//! given with `--token-key-file` (several nodes that share it accept each other's tokens).

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use steadfast_engine::{RunId, RunKey};
use tonic::Status;

/// The key file's name inside the data dir, when no key file is given.
pub const KEY_FILE_NAME: &str = "token.key";
/// Bytes of a key.
pub const KEY_BYTES: usize = 32;
/// The token format this server writes (and the only one it reads).
pub const VERSION: u8 = 1;
/// Longest token accepted (base64 characters): a version-1 token with the longest namespace
/// is well under it; anything longer is refused before it is decoded.
pub const TOKEN_CHARS_MAX: usize = 1024;

const MAC_BYTES: usize = 32;
const KIND_WORKFLOW: u8 = 1;
const KIND_ACTIVITY: u8 = 2;
const KIND_TRANSIENT: u8 = 3;

/// The secret that signs tokens. Its `Debug` shows a fingerprint, never the key.
#[derive(Clone)]
pub struct TokenKey([u8; KEY_BYTES]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKey({})", self.fingerprint())
    }
}

/// Why a key could not be loaded or created: the server does not start.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read, created or synced.
    #[error("token key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The file holds neither 32 raw bytes nor 64 hex digits.
    #[error(
        "token key file {path} holds {len} bytes: give 32 random bytes, or 64 hex digits (e.g. `openssl rand -hex 32 > {path}`)"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
}

impl TokenKey {
    /// A fresh random key (for a server whose tokens need not outlive it, e.g. in tests).
    pub fn random() -> TokenKey {
        use rand::RngCore;
        let mut k = [0u8; KEY_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut k);
        TokenKey(k)
    }

    /// A key from its bytes.
    pub fn from_bytes(k: [u8; KEY_BYTES]) -> TokenKey {
        TokenKey(k)
    }

    /// Reads a key file: 32 raw bytes, or 64 hex digits (surrounding whitespace ignored).
    pub fn load(path: &Path) -> Result<TokenKey, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = std::fs::read(path).map_err(io)?;
        if let Ok(raw) = <[u8; KEY_BYTES]>::try_from(bytes.as_slice()) {
            return Ok(TokenKey(raw));
        }
        let text = String::from_utf8_lossy(&bytes);
        let mut k = [0u8; KEY_BYTES];
        match hex::decode_to_slice(text.trim(), &mut k) {
            Ok(()) => Ok(TokenKey(k)),
            Err(_) => Err(KeyError::Malformed {
                path: path.to_path_buf(),
                len: bytes.len(),
            }),
        }
    }

    /// The key of `data_dir`: read from `<data_dir>/token.key`, or generated there once
    /// (32 random bytes, mode 0600, the file and the directory fsynced) when it is missing.
    pub fn load_or_create(data_dir: &Path) -> Result<TokenKey, KeyError> {
        let path = data_dir.join(KEY_FILE_NAME);
        match Self::load(&path) {
            Ok(k) => return Ok(k),
            Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let key = Self::random();
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        // Written under a temporary name and renamed, so that a crash never leaves a short
        // key file behind (which would refuse to load and stop the server).
        let tmp = data_dir.join(format!("{KEY_FILE_NAME}.tmp"));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(&key.0).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(data_dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(key)
    }

    /// A short, non-secret name of the key (so operators can check that nodes share one).
    pub fn fingerprint(&self) -> String {
        let h = blake3::keyed_hash(&self.0, b"steadfast token key fingerprint");
        hex::encode(&h.as_bytes()[..4])
    }

    fn mac(&self, body: &[u8]) -> blake3::Hash {
        blake3::keyed_hash(&self.0, body)
    }
}

/// A durable history record, by seq and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef {
    /// Its seq.
    pub seq: u64,
    /// Its chain hash.
    pub hash: [u8; 32],
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskToken {
    /// A workflow task: `started` is its WorkflowTaskStarted.
    Workflow {
        /// The run.
        key: RunKey,
        /// The WorkflowTaskStarted record.
        started: RecordRef,
    },
    /// A transient attempt of a held run's workflow task (no WorkflowTaskStarted recorded for
    /// it): `scheduled` is the task's WorkflowTaskScheduled; the worker was sent the history
    /// up to `seen_seq` and a WorkflowTaskStarted at `seen_seq + 1` stamped `issued_ms`, which
    /// a completion records as sent.
    TransientWorkflow {
        /// The run.
        key: RunKey,
        /// The WorkflowTaskScheduled record.
        scheduled: RecordRef,
        /// The last seq of the history the worker was sent.
        seen_seq: u64,
        /// When it was handed out: the time of the WorkflowTaskStarted the worker was sent.
        issued_ms: i64,
        /// The attempt (the store's, [`steadfast_engine::store::Store::task_attempt`]).
        attempt: u32,
    },
    /// One attempt of an activity: `scheduled` is its ActivityScheduled.
    Activity {
        /// The run.
        key: RunKey,
        /// The activity id (its command seq).
        activity_id: u32,
        /// The ActivityScheduled record.
        scheduled: RecordRef,
        /// The attempt.
        attempt: u32,
    },
}

/// Why a token is refused before anything is looked up: it is not one this server (or a node
/// sharing its key) gave out. Answered with INVALID_ARGUMENT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token.
    #[error("task_token is empty: pass the token of the task you were handed")]
    Empty,
    /// Longer than any token this server writes.
    #[error(
        "task_token is {0} characters long; tokens this server gives out are shorter than {TOKEN_CHARS_MAX}"
    )]
    TooLong(usize),
    /// Not base64url.
    #[error("task_token is not a token this server gave out (not base64url)")]
    NotBase64,
    /// An unknown format version.
    #[error("task_token has format version {0}; this server reads version {VERSION}")]
    Version(u8),
    /// The MAC does not verify: altered, made up, or signed with another key.
    #[error(
        "task_token is not one this server gave out (its signature does not verify: altered, made up, or signed by a server with another token key)"
    )]
    Signature,
    /// Signed, but its body does not parse (a server bug, never a worker's).
    #[error("task_token is signed but malformed: {0}")]
    Malformed(&'static str),
}

impl From<TokenError> for Status {
    fn from(e: TokenError) -> Status {
        Status::invalid_argument(e.to_string())
    }
}

impl TaskToken {
    /// The run the token is about.
    pub fn key(&self) -> &RunKey {
        match self {
            TaskToken::Workflow { key, .. }
            | TaskToken::TransientWorkflow { key, .. }
            | TaskToken::Activity { key, .. } => key,
        }
    }

    /// Encodes and signs the token.
    pub fn seal(&self, k: &TokenKey) -> String {
        let mut b = Vec::with_capacity(128);
        b.push(VERSION);
        let (key, record) = match self {
            TaskToken::Workflow { key, started } => {
                b.push(KIND_WORKFLOW);
                (key, started)
            }
            TaskToken::Activity { key, scheduled, .. } => {
                b.push(KIND_ACTIVITY);
                (key, scheduled)
            }
            TaskToken::TransientWorkflow { key, scheduled, .. } => {
                b.push(KIND_TRANSIENT);
                (key, scheduled)
            }
        };
        let ns = key.namespace.as_bytes();
        // Namespaces are validated to NAME_LEN_MAX (256) bytes, far below u16::MAX.
        b.extend_from_slice(&(ns.len().min(u16::MAX as usize) as u16).to_be_bytes());
        b.extend_from_slice(&ns[..ns.len().min(u16::MAX as usize)]);
        b.extend_from_slice(key.run_id.0.as_bytes());
        b.extend_from_slice(&record.seq.to_be_bytes());
        b.extend_from_slice(&record.hash);
        if let TaskToken::Activity {
            activity_id,
            attempt,
            ..
        } = self
        {
            b.extend_from_slice(&activity_id.to_be_bytes());
            b.extend_from_slice(&attempt.to_be_bytes());
        }
        if let TaskToken::TransientWorkflow {
            seen_seq,
            issued_ms,
            attempt,
            ..
        } = self
        {
            b.extend_from_slice(&seen_seq.to_be_bytes());
            b.extend_from_slice(&issued_ms.to_be_bytes());
            b.extend_from_slice(&attempt.to_be_bytes());
        }
        let mac = k.mac(&b);
        b.extend_from_slice(mac.as_bytes());
        URL_SAFE_NO_PAD.encode(b)
    }

    /// Decodes a token and checks its signature; nothing in it is read before the MAC holds.
    pub fn open(text: &str, k: &TokenKey) -> Result<TaskToken, TokenError> {
        if text.is_empty() {
            return Err(TokenError::Empty);
        }
        if text.len() > TOKEN_CHARS_MAX {
            return Err(TokenError::TooLong(text.len()));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| TokenError::NotBase64)?;
        if bytes.len() < 1 + MAC_BYTES {
            return Err(TokenError::Signature);
        }
        if bytes[0] != VERSION {
            return Err(TokenError::Version(bytes[0]));
        }
        let (body, mac) = bytes.split_at(bytes.len() - MAC_BYTES);
        let mac = <[u8; MAC_BYTES]>::try_from(mac).map_err(|_| TokenError::Signature)?;
        // blake3::Hash compares in constant time.
        if k.mac(body) != blake3::Hash::from(mac) {
            return Err(TokenError::Signature);
        }
        parse_body(&body[1..])
    }
}

/// Reads the signed body after the version byte.
fn parse_body(b: &[u8]) -> Result<TaskToken, TokenError> {
    let mut r = Reader(b);
    let kind = r.u8()?;
    let ns_len = u16::from_be_bytes(r.array()?) as usize;
    let ns = std::str::from_utf8(r.take(ns_len)?)
        .map_err(|_| TokenError::Malformed("namespace is not UTF-8"))?
        .to_string();
    let run_id = RunId(uuid::Uuid::from_bytes(r.array()?));
    let record = RecordRef {
        seq: u64::from_be_bytes(r.array()?),
        hash: r.array()?,
    };
    let key = RunKey::new(ns, run_id);
    let token = match kind {
        KIND_WORKFLOW => TaskToken::Workflow {
            key,
            started: record,
        },
        KIND_ACTIVITY => TaskToken::Activity {
            key,
            scheduled: record,
            activity_id: u32::from_be_bytes(r.array()?),
            attempt: u32::from_be_bytes(r.array()?),
        },
        KIND_TRANSIENT => TaskToken::TransientWorkflow {
            key,
            scheduled: record,
            seen_seq: u64::from_be_bytes(r.array()?),
            issued_ms: i64::from_be_bytes(r.array()?),
            attempt: u32::from_be_bytes(r.array()?),
        },
        _ => return Err(TokenError::Malformed("unknown task kind")),
    };
    if !r.0.is_empty() {
        return Err(TokenError::Malformed("trailing bytes"));
    }
    Ok(token)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        if self.0.len() < n {
            return Err(TokenError::Malformed("too short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, TokenError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TokenError> {
        self.take(N)?
            .try_into()
            .map_err(|_| TokenError::Malformed("too short"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity() -> TaskToken {
        TaskToken::Activity {
            key: RunKey::new("tenant-a", RunId::new_v7()),
            activity_id: 3,
            scheduled: RecordRef {
                seq: 7,
                hash: [9; 32],
            },
            attempt: 2,
        }
    }

    #[test]
    fn tokens_round_trip_and_are_url_safe() {
        let k = TokenKey::random();
        let wf = TaskToken::Workflow {
            key: RunKey::new("default", RunId::new_v7()),
            started: RecordRef {
                seq: 4,
                hash: [1; 32],
            },
        };
        let transient = TaskToken::TransientWorkflow {
            key: RunKey::new("default", RunId::new_v7()),
            scheduled: RecordRef {
                seq: 6,
                hash: [2; 32],
            },
            seen_seq: 41,
            issued_ms: 1_700_000_000_123,
            attempt: 9,
        };
        for t in [wf, transient, activity()] {
            let s = t.seal(&k);
            assert!(s.len() < TOKEN_CHARS_MAX);
            assert!(
                s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            );
            assert_eq!(TaskToken::open(&s, &k), Ok(t));
        }
    }

    #[test]
    fn every_bit_flip_is_refused() {
        let k = TokenKey::random();
        let bytes = URL_SAFE_NO_PAD.decode(activity().seal(&k)).unwrap();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            let e = TaskToken::open(&URL_SAFE_NO_PAD.encode(&b), &k).unwrap_err();
            assert!(
                matches!(e, TokenError::Signature | TokenError::Version(_)),
                "bit {i}: {e:?}"
            );
        }
    }

    #[test]
    fn another_key_garbage_and_old_formats_are_refused() {
        let t = activity().seal(&TokenKey::random());
        assert_eq!(
            TaskToken::open(&t, &TokenKey::random()),
            Err(TokenError::Signature)
        );
        let k = TokenKey::random();
        assert_eq!(TaskToken::open("", &k), Err(TokenError::Empty));
        assert_eq!(
            TaskToken::open("a|0190f0b2-7c1d-7aa4-9a8b-1c2d3e4f5a6b|1|1|default", &k),
            Err(TokenError::NotBase64)
        );
        assert_eq!(TaskToken::open("AAAA", &k), Err(TokenError::Signature));
        assert_eq!(
            TaskToken::open(&"A".repeat(TOKEN_CHARS_MAX + 1), &k),
            Err(TokenError::TooLong(TOKEN_CHARS_MAX + 1))
        );
        let mut v2 = URL_SAFE_NO_PAD.decode(activity().seal(&k)).unwrap();
        v2[0] = 2;
        assert_eq!(
            TaskToken::open(&URL_SAFE_NO_PAD.encode(&v2), &k),
            Err(TokenError::Version(2))
        );
        let msg = Status::from(TokenError::Signature).message().to_string();
        assert!(msg.contains("task_token"), "{msg}");
    }

    #[test]
    fn key_is_created_once_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = TokenKey::load_or_create(dir.path()).unwrap();
        let b = TokenKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.0, b.0);
        let path = dir.path().join(KEY_FILE_NAME);
        assert_eq!(std::fs::read(&path).unwrap().len(), KEY_BYTES);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{a:?}").contains(&hex::encode(a.0)));
    }

    #[test]
    fn key_files_take_raw_or_hex_and_refuse_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let hex_path = dir.path().join("hex");
        std::fs::write(&hex_path, format!("{}\n", "ab".repeat(32))).unwrap();
        assert_eq!(TokenKey::load(&hex_path).unwrap().0, [0xab; 32]);
        let short = dir.path().join("short");
        std::fs::write(&short, b"too short").unwrap();
        let e = TokenKey::load(&short).unwrap_err().to_string();
        assert!(
            e.contains("32 random bytes") && e.contains("64 hex digits"),
            "{e}"
        );
    }
}
