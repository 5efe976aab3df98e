//! `run watch`'s rendering of live output (WatchRun deltas): the text as it arrives, under a
//! header naming the activity and attempt, with a marker where bytes were not received (a
//! late watcher past the server's buffer, or output the worker dropped).

use steadfast_proto::v1 as pb;

/// Where the live text stands.
#[derive(Default)]
pub(super) struct LiveText {
    /// The activity and attempt whose output is being shown.
    current: Option<(u32, u32)>,
    /// The offset after the last byte shown of it.
    end: u64,
    /// The text shown does not end with a newline.
    mid_line: bool,
}

impl LiveText {
    /// The text to show for `d`.
    pub(super) fn render(&mut self, d: &pb::ActivityDelta) -> String {
        let mut out = String::new();
        let key = (d.activity_id, d.attempt);
        if self.current != Some(key) {
            if self.mid_line {
                out.push('\n');
            }
            out.push_str(&format!(
                "--- live output of activity {} (attempt {}) ---\n",
                d.activity_id, d.attempt
            ));
            self.current = Some(key);
            self.end = 0;
        }
        if d.offset > self.end {
            out.push_str(&format!("[... {} bytes skipped ...]", d.offset - self.end));
        }
        out.push_str(&d.text);
        self.end = d.offset + d.text.len() as u64;
        if !out.is_empty() {
            self.mid_line = !out.ends_with('\n');
        }
        out
    }

    /// Ends a partly shown line before an event line; true when a newline is due.
    pub(super) fn end_line(&mut self) -> bool {
        std::mem::take(&mut self.mid_line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: u32, attempt: u32, offset: u64, text: &str) -> pb::ActivityDelta {
        pb::ActivityDelta {
            activity_id: id,
            attempt,
            offset,
            text: text.into(),
        }
    }

    #[test]
    fn headers_markers_and_line_ends() {
        let mut l = LiveText::default();
        assert_eq!(
            l.render(&d(3, 1, 0, "Hello")),
            "--- live output of activity 3 (attempt 1) ---\nHello"
        );
        assert_eq!(l.render(&d(3, 1, 5, " world")), " world");
        assert!(l.end_line());
        assert!(!l.end_line());
        assert_eq!(
            l.render(&d(3, 2, 100, "again\n")),
            "--- live output of activity 3 (attempt 2) ---\n[... 100 bytes skipped ...]again\n"
        );
        assert!(!l.end_line());
    }
}
