//! The auth file: one entry per token, each the blake3 hash of the token (never the token
//! itself), its role and the namespaces it may use.
//!
//! ```text
//! # name      role    namespaces          [queues]          token hash
//! ci-bot      client  tenant-a,tenant-b                     blake3:9f2c...(64 hex digits)
//! worker-a    worker  tenant-a                              blake3:...
//! tools-a     worker  tenant-a            queues=tools,llm  blake3:...
//! ops         admin   *                                     blake3:...
//! ```
//!
//! The optional `queues=` field (worker entries only) limits a worker token to those task
//! queues: it may poll only them, and complete, fail or heartbeat only tasks of them. A line
//! without it admits every queue, as every line did before the field existed.
//!
//! Blank lines and lines starting with `#` are ignored. `steadfast auth hash` prints an entry
//! from a token read on stdin, so a plaintext token is never written into the file. The
//! `blake3:` prefix names the hash scheme: a later scheme gets a new prefix, and this one
//! keeps being read.

use std::collections::HashSet;

use steadfast_engine::ids::NAME_LEN_MAX;

/// The prefix of a token hash in the file: the scheme, then 64 hex digits.
pub const HASH_PREFIX: &str = "blake3:";
/// Longest entry name.
pub const ENTRY_NAME_LEN_MAX: usize = 64;
/// Shortest token `steadfast auth hash` accepts: shorter ones can be guessed.
pub const TOKEN_LEN_MIN: usize = 16;
/// Longest token the server hashes; a longer `authorization` value is refused unhashed.
pub const TOKEN_LEN_MAX: usize = 1024;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Starts, reads, lists, signals, cancels, terminates, awaits and watches runs.
    Client,
    /// Polls and completes tasks, heartbeats, keeps a session; reads histories and blobs.
    Worker,
    /// Everything, including budgets, reconciliation and checkpoints.
    Admin,
}

impl Role {
    /// The name used in the file and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Worker => "worker",
            Role::Admin => "admin",
        }
    }

    /// Parses `client`, `worker` or `admin`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "client" => Some(Role::Client),
            "worker" => Some(Role::Worker),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The namespaces a token may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    /// `*`: every namespace.
    Any,
    /// Only these.
    Only(Vec<String>),
}

impl Namespaces {
    /// Whether `ns` is one of them.
    pub fn allows(&self, ns: &str) -> bool {
        match self {
            Namespaces::Any => true,
            Namespaces::Only(list) => list.iter().any(|n| n == ns),
        }
    }

    /// Parses `*` or a comma-separated list of namespace names.
    pub fn parse(s: &str) -> Result<Namespaces, String> {
        if s == "*" {
            return Ok(Namespaces::Any);
        }
        let mut list = Vec::new();
        for n in s.split(',') {
            if n.is_empty() || n.len() > NAME_LEN_MAX || n.chars().any(char::is_control) {
                return Err(format!(
                    "namespaces must be `*` or names separated by commas (each 1..={NAME_LEN_MAX} bytes)"
                ));
            }
            list.push(n.to_string());
        }
        Ok(Namespaces::Only(list))
    }

    fn render(&self) -> String {
        match self {
            Namespaces::Any => "*".into(),
            Namespaces::Only(list) => list.join(","),
        }
    }
}

/// The task queues a worker token may poll and complete tasks of.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TaskQueues {
    /// No `queues=` field: every queue.
    #[default]
    Any,
    /// Only these.
    Only(Vec<String>),
}

/// The field name of the optional queue list in a line of the file.
pub const QUEUES_FIELD: &str = "queues=";

impl TaskQueues {
    /// Whether `queue` is one of them.
    pub fn allows(&self, queue: &str) -> bool {
        match self {
            TaskQueues::Any => true,
            TaskQueues::Only(list) => list.iter().any(|q| q == queue),
        }
    }

    /// Parses a comma-separated list of queue names (the part after `queues=`).
    pub fn parse(s: &str) -> Result<TaskQueues, String> {
        let mut list = Vec::new();
        for q in s.split(',') {
            if q.is_empty() || q.len() > NAME_LEN_MAX || q.chars().any(char::is_control) {
                return Err(format!(
                    "queues= must be task queue names separated by commas (each 1..={NAME_LEN_MAX} bytes)"
                ));
            }
            list.push(q.to_string());
        }
        Ok(TaskQueues::Only(list))
    }
}

/// Who a request comes from: the entry its token matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The entry's name (for logs and messages; never the token).
    pub name: String,
    /// What it may call.
    pub role: Role,
    /// Where it may call it.
    pub namespaces: Namespaces,
    /// Which task queues it may poll and complete tasks of (worker entries).
    pub queues: TaskQueues,
}

/// One line of the file.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Who it is.
    pub principal: Principal,
    /// blake3 of the token; `blake3::Hash` compares in constant time.
    pub hash: blake3::Hash,
}

impl Entry {
    /// The entry for `token`, as a line of the file.
    pub fn line(name: &str, role: Role, namespaces: &Namespaces, token: &str) -> String {
        Entry::line_with_queues(name, role, namespaces, &TaskQueues::Any, token)
    }

    /// The entry for `token`, limited to `queues`, as a line of the file.
    pub fn line_with_queues(
        name: &str,
        role: Role,
        namespaces: &Namespaces,
        queues: &TaskQueues,
        token: &str,
    ) -> String {
        let queues = match queues {
            TaskQueues::Any => String::new(),
            TaskQueues::Only(list) => format!(" {QUEUES_FIELD}{}", list.join(",")),
        };
        format!(
            "{name} {} {}{queues} {HASH_PREFIX}{}",
            role.as_str(),
            namespaces.render(),
            hash_token(token).to_hex()
        )
    }
}

/// The hash stored for `token`.
pub fn hash_token(token: &str) -> blake3::Hash {
    blake3::hash(token.as_bytes())
}

/// Why an auth file cannot be used. Fix the file and start (or wait for the reload) again.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file cannot be read.
    #[error("cannot read the auth file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is malformed; the message says what to fix (and never quotes the line).
    #[error("auth file {path}, line {line}: {message}")]
    Line {
        /// The file.
        path: String,
        /// 1-based.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Nothing could ever call: almost certainly a mistake.
    #[error(
        "auth file {path} has no entries: add one with `steadfast auth hash` (see README, Security)"
    )]
    Empty {
        /// The file.
        path: String,
    },
}

/// Every entry of one auth file.
#[derive(Debug, Clone, Default)]
pub struct Table {
    entries: Vec<Entry>,
}

impl Table {
    /// Parses the text of the file at `path` (named in errors).
    pub fn parse(path: &str, text: &str) -> Result<Table, Error> {
        let mut entries = Vec::new();
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |message: String| Error::Line {
                path: path.to_string(),
                line: i + 1,
                message,
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (name, role, namespaces, queues, hash) = match fields[..] {
                [name, role, namespaces, hash] => (name, role, namespaces, None, hash),
                [name, role, namespaces, queues, hash] => {
                    (name, role, namespaces, Some(queues), hash)
                }
                _ => {
                    return Err(bad(format!(
                        "expected 4 fields `name role namespaces {HASH_PREFIX}<hex>` (a worker may have `{QUEUES_FIELD}a,b` before the hash), found {}",
                        fields.len()
                    )));
                }
            };
            if name.len() > ENTRY_NAME_LEN_MAX
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
            {
                return Err(bad(format!(
                    "the name must be 1..={ENTRY_NAME_LEN_MAX} characters of A-Z a-z 0-9 . _ @ -"
                )));
            }
            let role = Role::parse(role)
                .ok_or_else(|| bad("the role must be client, worker or admin".into()))?;
            let namespaces = Namespaces::parse(namespaces).map_err(bad)?;
            let queues = match queues {
                None => TaskQueues::Any,
                Some(q) => {
                    let list = q.strip_prefix(QUEUES_FIELD).ok_or_else(|| {
                        bad(format!(
                            "the field before the hash must be `{QUEUES_FIELD}a,b` (the task queues a worker token may use)"
                        ))
                    })?;
                    if role != Role::Worker {
                        return Err(bad(format!(
                            "{QUEUES_FIELD} applies to worker entries only (clients and admins use no task queues)"
                        )));
                    }
                    TaskQueues::parse(list).map_err(bad)?
                }
            };
            let hash = hash
                .strip_prefix(HASH_PREFIX)
                .and_then(|h| blake3::Hash::from_hex(h).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "the token hash must be {HASH_PREFIX} and 64 hex digits, as `steadfast auth hash` prints it"
                    ))
                })?;
            if !names.insert(name.to_string()) {
                return Err(bad(format!("the name {name} is used twice")));
            }
            if !hashes.insert(*hash.as_bytes()) {
                return Err(bad(
                    "this token hash is already in the file under another name".into(),
                ));
            }
            entries.push(Entry {
                principal: Principal {
                    name: name.to_string(),
                    role,
                    namespaces,
                    queues,
                },
                hash,
            });
        }
        if entries.is_empty() {
            return Err(Error::Empty {
                path: path.to_string(),
            });
        }
        Ok(Table { entries })
    }

    /// The entry whose hash is `token`'s. Every entry is compared (no early exit), each in
    /// constant time, so the time taken says nothing about which entry came close.
    pub fn find(&self, token: &str) -> Option<&Principal> {
        let h = hash_token(token);
        let mut found = None;
        for e in &self.entries {
            if e.hash == h {
                found = Some(&e.principal);
            }
        }
        found
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "stf_0123456789abcdef0123456789abcdef";

    #[test]
    fn an_entry_made_from_a_token_finds_it_and_stores_only_its_hash() {
        let ns = Namespaces::parse("a,b").unwrap();
        let line = Entry::line("ci", Role::Client, &ns, TOKEN);
        assert!(!line.contains(TOKEN), "{line}");
        let text = format!("# comment\n\n{line}\nops admin * {}\n", {
            let other = Entry::line("x", Role::Admin, &Namespaces::Any, "another-token-1234567");
            other.rsplit(' ').next().unwrap().to_string()
        });
        let t = Table::parse("f", &text).unwrap();
        assert_eq!(t.len(), 2);
        let p = t.find(TOKEN).unwrap();
        assert_eq!(
            (p.name.as_str(), p.role, p.namespaces.allows("b")),
            ("ci", Role::Client, true)
        );
        assert!(!p.namespaces.allows("c"));
        assert_eq!(t.find("another-token-1234567").unwrap().role, Role::Admin);
        assert!(t.find("wrong").is_none());
        assert!(t.find("").is_none());
    }

    #[test]
    fn bad_files_name_the_line_and_what_to_fix() {
        let h = Entry::line("x", Role::Client, &Namespaces::Any, TOKEN);
        let h = h.rsplit(' ').next().unwrap();
        let cases = [
            ("ci client a", "expected 4 fields"),
            (&format!("ci boss a {h}") as &str, "client, worker or admin"),
            (&format!("c/i client a {h}"), "the name must be"),
            (&format!("ci client a,,b {h}"), "namespaces must be"),
            ("ci client a sha256:00", "64 hex digits"),
            (&format!("ci client a {h}\nci worker a {h}"), "used twice"),
            (
                &format!("ci client a {h}\ncj worker a {h}"),
                "already in the file",
            ),
            (&format!("ci worker a q=x {h}"), "must be `queues=a,b`"),
            (&format!("ci client a queues=x {h}"), "worker entries only"),
            (&format!("ci worker a queues=x,,y {h}"), "queues= must be"),
            (&format!("ci worker a queues=x y {h}"), "expected 4 fields"),
        ];
        for (text, want) in cases {
            let e = Table::parse("auth.txt", text).unwrap_err().to_string();
            assert!(
                e.contains(want) && e.contains("auth.txt, line"),
                "{text}: {e}"
            );
        }
        let e = Table::parse("auth.txt", "# nothing\n").unwrap_err();
        assert!(matches!(e, Error::Empty { .. }));
    }

    #[test]
    fn a_worker_entry_may_name_its_queues_and_old_lines_admit_every_queue() {
        let queues = TaskQueues::parse("tools,llm").unwrap();
        let line = Entry::line_with_queues("w", Role::Worker, &Namespaces::Any, &queues, TOKEN);
        assert!(line.contains(" queues=tools,llm blake3:"), "{line}");
        let old = Entry::line("x", Role::Worker, &Namespaces::Any, "another-token-1234567");
        let t = Table::parse("f", &format!("{line}\n{old}\n")).unwrap();
        let p = t.find(TOKEN).unwrap();
        assert!(p.queues.allows("tools") && p.queues.allows("llm"));
        assert!(!p.queues.allows("other") && !p.queues.allows("tool"));
        let p = t.find("another-token-1234567").unwrap();
        assert_eq!(p.queues, TaskQueues::Any);
        assert!(p.queues.allows("anything"));
    }
}
