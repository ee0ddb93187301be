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

/// Replaces the password of a `scheme://user:password@host` URL with `***`. The text
/// is taken as one URL, so the password is everything between the first `:` and the
/// last `@`, whatever it holds (`)`, quotes, `/`, spaces): a URL that does not parse
/// is shown safely in its own error message.
pub fn redact_url(raw: &str) -> String {
    match raw.find("://") {
        Some(pos) => {
            let (head, tail) = raw.split_at(pos + 3);
            let mut out = String::with_capacity(raw.len());
            out.push_str(head);
            let (userinfo, used) = redact_authority(tail, tail.len());
            out.push_str(&userinfo);
            out.push_str(&tail[used..]);
            out
        }
        None => raw.to_string(),
    }
}

/// Redacts every `scheme://user:password@` found anywhere in `text` (log lines,
/// GStreamer error messages that quote their location, status output).
///
/// A password may hold any character a URL's user info allows, `)` and `'` among
/// them (and `://`), so the user info is taken to run to the last `@` before the URL
/// has ended for sure, at whitespace. A path holding `@`, or a second URL glued to
/// the first, is redacted too: too much hidden beats a password shown.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let span = tail.find(char::is_whitespace).unwrap_or(tail.len());
        let (userinfo, used) = redact_authority(tail, span);
        out.push_str(&userinfo);
        rest = &tail[used..];
    }
    out.push_str(rest);
    out
}

/// The start of `tail` (text after `://`) with `user:password@` made `user:***@` when
/// the last `@` within `tail[..span]` closes a user info; and how much of `tail` it
/// consumed.
fn redact_authority(tail: &str, span: usize) -> (String, usize) {
    match tail[..span].rfind('@') {
        Some(at) => {
            let userinfo = &tail[..at];
            let mut out = String::with_capacity(at + 5);
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            (out, at + 1)
        }
        None => (String::new(), 0),
    }
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
            // A password may hold `)` and `'` (user info allows them) or `@`.
            (
                "Camera starting url=rtsp://admin:pa)ss@10.0.0.5/s",
                "Camera starting url=rtsp://admin:***@10.0.0.5/s",
            ),
            ("(rtsp://a:x'y@h/x)", "(rtsp://a:***@h/x)"),
            ("\"rtsp://a:p@q@h/x\"", "\"rtsp://a:***@h/x\""),
            ("rtsp://a:b@h/x,mqtt://u:v@m", "rtsp://a:***@m"),
        ];
        for (input, want) in rows {
            assert_eq!(redact_text(input), want, "input {input}");
            assert!(!redact_text(input).contains("hunter2"));
        }
    }

    #[test]
    fn a_single_url_is_redacted_to_its_last_at_sign_whatever_the_password_holds() {
        let rows = [
            ("rtsp://u:pa ss/w)rd@h/x", "rtsp://u:***@h/x"),
            ("rtsp://u:p'q${x@h", "rtsp://u:***@h"),
            ("rtsp://h/s", "rtsp://h/s"),
            ("not a url", "not a url"),
        ];
        for (input, want) in rows {
            assert_eq!(redact_url(input), want, "input {input}");
        }
    }
}
