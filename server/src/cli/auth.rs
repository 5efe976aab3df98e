//! `steadfast auth`: make tokens and the auth-file entries that admit them, so that an operator
//! never writes a plaintext token into the file.
//!
//! ```sh
//! TOKEN=$(steadfast auth new-token)
//! echo "$TOKEN" | steadfast auth hash --name ci-bot --role client --namespaces default >> auth.txt
//! ```

use std::io::Read;

use clap::Subcommand;
use rand::RngCore;

use super::{Exit, Outcome, out_line};
use crate::auth::table::{ENTRY_NAME_LEN_MAX, Entry, TOKEN_LEN_MAX, TOKEN_LEN_MIN};
use crate::auth::{Namespaces, Role, TaskQueues};

/// Bytes of randomness in a token from `new-token`.
const NEW_TOKEN_BYTES: usize = 32;

#[derive(Subcommand, Debug)]
pub enum AuthCmd {
    /// Print a new random token (256 bits) on stdout.
    NewToken,
    /// Read a token on stdin and print its auth-file line (its hash, never the token) on
    /// stdout: append it to the server's --auth-file.
    Hash {
        /// A name for the entry, shown in refusals and logs (A-Z a-z 0-9 . _ @ -).
        #[arg(long)]
        name: String,
        /// client (start, read, signal, cancel, terminate runs), worker (poll and complete
        /// tasks; read histories and blobs) or admin (everything).
        #[arg(long, value_parser = ["client", "worker", "admin"])]
        role: String,
        /// The namespaces it may use, separated by commas, or `*` for all.
        #[arg(long, default_value = steadfast_engine::ids::DEFAULT_NAMESPACE)]
        namespaces: String,
        /// Worker role only: the task queues it may poll and complete tasks of, separated by
        /// commas (default: every queue).
        #[arg(long)]
        queues: Option<String>,
    },
}

pub fn dispatch(cmd: AuthCmd) -> Outcome {
    match cmd {
        AuthCmd::NewToken => out_line(&new_token()),
        AuthCmd::Hash {
            name,
            role,
            namespaces,
            queues,
        } => {
            let mut input = String::new();
            std::io::stdin()
                .take(TOKEN_LEN_MAX as u64 + 2)
                .read_to_string(&mut input)
                .map_err(|e| Exit::error(format!("cannot read the token on stdin: {e}")))?;
            out_line(&entry(
                &name,
                &role,
                &namespaces,
                queues.as_deref(),
                &input,
            )?)
        }
    }
}

/// `stf_` and 64 hex digits from the OS's randomness.
pub fn new_token() -> String {
    let mut bytes = [0u8; NEW_TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("stf_{}", hex::encode(bytes))
}

/// The auth-file line for the token in `input` (its first line).
fn entry(
    name: &str,
    role: &str,
    namespaces: &str,
    queues: Option<&str>,
    input: &str,
) -> Result<String, Exit> {
    let token = input.lines().next().unwrap_or("").trim();
    if token.len() < TOKEN_LEN_MIN {
        return Err(Exit::usage(format!(
            "give the token on stdin, at least {TOKEN_LEN_MIN} characters (make one with `steadfast auth new-token`)"
        )));
    }
    if token.len() > TOKEN_LEN_MAX || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Exit::usage(format!(
            "the token must be at most {TOKEN_LEN_MAX} characters without spaces or control characters"
        )));
    }
    if name.is_empty()
        || name.len() > ENTRY_NAME_LEN_MAX
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
    {
        return Err(Exit::usage(format!(
            "--name must be 1..={ENTRY_NAME_LEN_MAX} characters of A-Z a-z 0-9 . _ @ -"
        )));
    }
    let role = Role::parse(role).ok_or_else(|| Exit::usage("--role: client, worker or admin"))?;
    let namespaces =
        Namespaces::parse(namespaces).map_err(|m| Exit::usage(format!("--namespaces: {m}")))?;
    let queues = match queues {
        None => TaskQueues::Any,
        Some(_) if role != Role::Worker => {
            return Err(Exit::usage(
                "--queues applies to --role worker only (clients and admins use no task queues)",
            ));
        }
        Some(q) => TaskQueues::parse(q).map_err(|m| Exit::usage(format!("--queues: {m}")))?,
    };
    Ok(Entry::line_with_queues(
        name,
        role,
        &namespaces,
        &queues,
        token,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Table;

    #[test]
    fn a_new_token_hashed_into_an_entry_is_admitted_by_that_entry_only() {
        let token = new_token();
        assert_eq!(token.len(), 4 + 64);
        assert_ne!(token, new_token());
        let line = entry("ci", "worker", "a,b", None, &format!("{token}\n")).unwrap();
        assert!(!line.contains(&token));
        let table = Table::parse("f", &line).unwrap();
        let p = table.find(&token).unwrap();
        assert_eq!((p.role, p.namespaces.allows("b")), (Role::Worker, true));
        assert!(table.find(&new_token()).is_none());
        assert!(p.queues.allows("any-queue"));
        let line = entry("w", "worker", "a", Some("tools,llm"), &token).unwrap();
        let p = Table::parse("f", &line)
            .unwrap()
            .find(&token)
            .unwrap()
            .clone();
        assert!(p.queues.allows("llm") && !p.queues.allows("agents"));
    }

    #[test]
    fn bad_tokens_and_names_are_usage_errors() {
        let ok = "x".repeat(TOKEN_LEN_MIN);
        for (name, role, ns, queues, input) in [
            ("ci", "client", "default", None, "short"),
            ("ci", "client", "default", None, ""),
            ("ci", "client", "default", None, "with space in the middle"),
            ("c i", "client", "default", None, ok.as_str()),
            ("ci", "root", "default", None, ok.as_str()),
            ("ci", "client", "a,,b", None, ok.as_str()),
            ("ci", "client", "default", Some("q"), ok.as_str()),
            ("ci", "worker", "default", Some("q,"), ok.as_str()),
        ] {
            let e = entry(name, role, ns, queues, input).unwrap_err();
            assert_eq!(
                e.code,
                super::super::exit::USAGE,
                "{name} {role} {ns} {input}"
            );
        }
    }
}
