//! Secrets: the one redaction function every printed URL goes through, and the one
//! scope in which serialising a configuration keeps them (to hand it to a worker).

use std::cell::Cell;

thread_local! {
    static REVEAL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with secrets serialised as they are (a [`crate::values::SecretUrl`] keeps
/// its password). Only for text that goes to a worker's stdin, never to a log.
pub fn reveal<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            REVEAL.with(|r| r.set(self.0));
        }
    }
    let _restore = Restore(REVEAL.with(|r| r.replace(true)));
    f()
}

/// Whether [`reveal`] is running on this thread.
pub(crate) fn revealing() -> bool {
    REVEAL.with(Cell::get)
}

/// Replaces the password of a `scheme://user:password@host` URL with `***`.
/// Works on text that is not a valid URL too, so that error messages are safe.
pub fn redact_url(raw: &str) -> String {
    redact_text(raw)
}

/// Redacts every `scheme://user:password@` found anywhere in `text` (log lines,
/// GStreamer error messages that quote their location, status output).
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace, quote or end of text.
        let end = tail
            .find(|c: char| {
                c == '/' || c.is_whitespace() || c == '"' || c == '\'' || c == '>' || c == ')'
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_in_urls_and_free_text() {
        let rows = [
            (
                "rtsp://admin:hunter2@10.0.0.5:554/stream1",
                "rtsp://admin:***@10.0.0.5:554/stream1",
            ),
            (
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                "amqp://guest:***@127.0.0.1:5672/%2f",
            ),
            ("mqtts://user:p%40ss@broker", "mqtts://user:***@broker"),
            ("rtsp://10.0.0.5/stream", "rtsp://10.0.0.5/stream"),
            (
                "rtsp://admin@10.0.0.5/stream",
                "rtsp://admin@10.0.0.5/stream",
            ),
            (
                "Could not open resource rtsp://a:b@h/x for reading, then mqtt://u:v@m",
                "Could not open resource rtsp://a:***@h/x for reading, then mqtt://u:***@m",
            ),
            ("no url here", "no url here"),
            ("rtsp://a:b:c@h/x", "rtsp://a:***@h/x"),
        ];
        for (input, want) in rows {
            assert_eq!(redact_text(input), want, "input {input}");
            assert!(!redact_text(input).contains("hunter2"));
        }
    }
}
