//! The HTTP side of [`crate::Exporter`]: one thread of its own that reads scrapes, parses
//! their request heads with `httparse`, and asks the owner's loop for the text.
//!
//! Everything an unauthenticated peer can send is bounded: the head to [`HEAD_MAX`] bytes,
//! the time to send it to [`CONNECTION_TIME`], the connections read side by side to
//! `OPEN_MAX` (non-blocking, on one thread whatever the number of peers: a newer connection
//! closes the oldest silent one; each is read as soon as it is taken, so a scrape waiting
//! behind a flood of silent connections is answered), the time to take an answer to
//! `WRITE_TIME`. A body
//! is never read: every answer closes the connection, so what follows the head does not
//! matter (a huge `Content-Length` costs nothing). And nothing here runs on the owner's
//! thread: its loop only hands over the text when a scrape waits ([`crate::Exporter::poll`]).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest request head read; a longer one is answered 431.
pub const HEAD_MAX: usize = 8 * 1024;
/// The most time one connection gets, from accept to the end of the answer.
pub const CONNECTION_TIME: Duration = Duration::from_secs(2);
/// How long a scrape waits for the owner's loop to render the text.
const RENDER_WAIT: Duration = Duration::from_secs(1);
/// How often the accept loop looks at the stop flag when nobody connects.
const IDLE: Duration = Duration::from_millis(20);

/// A scrape waiting for the text: the owner's loop sends it here.
pub type Scrape = SyncSender<Arc<str>>;

/// Connections read at once; a newer one closes the oldest that has sent nothing (or the
/// oldest, when all have sent something).
const OPEN_MAX: usize = 16;
/// How long writing a whole answer may take (a client that does not take it is dropped).
const WRITE_TIME: Duration = Duration::from_millis(500);

/// A connection whose request head is still coming.
struct Open {
    conn: TcpStream,
    since: Instant,
    head: Box<[u8; HEAD_MAX]>,
    got: usize,
}

/// Serves `listener` (non-blocking) until `stop`, sending each scrape to `scrapes`. Up to
/// [`OPEN_MAX`] connections are read side by side (non-blocking), so silent or slow ones
/// delay nobody; each is answered once its head is complete, and closed.
pub fn serve(listener: TcpListener, scrapes: Sender<Scrape>, stop: Arc<AtomicBool>) {
    let mut open: Vec<Open> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut busy = false;
        loop {
            match listener.accept() {
                Ok((conn, _)) => {
                    busy = true;
                    if conn.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let mut o = Open {
                        conn,
                        since: Instant::now(),
                        head: Box::new([0; HEAD_MAX]),
                        got: 0,
                    };
                    // Read at once: a scrape that waited in the backlog behind a flood of
                    // silent connections has its request there, and is answered before the
                    // connections after it could close it.
                    if let Some(asked) = read_head(&mut o) {
                        reply(o, asked, &scrapes);
                        continue;
                    }
                    if open.len() == OPEN_MAX {
                        // The oldest that has sent nothing goes first; one that is sending
                        // its head only when all are.
                        let silent = open.iter().position(|o| o.got == 0);
                        open.remove(silent.unwrap_or(0));
                    }
                    open.push(o);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors, say: the owner goes on, scrapes wait a moment.
                    tracing::warn!(error = %e, "metrics listener");
                    break;
                }
            }
        }
        let mut i = 0;
        while i < open.len() {
            match read_head(&mut open[i]) {
                None => i += 1,
                Some(asked) => {
                    busy = true;
                    reply(open.remove(i), asked, &scrapes);
                }
            }
        }
        if !busy {
            std::thread::sleep(IDLE);
        }
    }
}

/// Answers a connection whose head is complete, and closes it.
fn reply(mut o: Open, asked: Asked, scrapes: &Sender<Scrape>) {
    if let Err(e) = answer(&mut o.conn, asked, scrapes) {
        tracing::debug!(error = %e, "metrics request not answered");
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    /// `/metrics`: by `GET`, or by `HEAD` (`body: false`: the same head, no body).
    Metrics { body: bool },
    /// (status, reason, text, whether the text is sent: not to a `HEAD`).
    Refused(u16, &'static str, &'static str, bool),
    /// The client closed (or failed) before finishing its head: nothing to answer.
    Gone,
}

/// Reads what the connection has; what to answer once its head is complete (or cannot be:
/// too large, too slow, malformed), `None` while it is still coming.
fn read_head(o: &mut Open) -> Option<Asked> {
    loop {
        if let Some(asked) = parse(&o.head[..o.got]) {
            return Some(asked);
        }
        if o.got == HEAD_MAX {
            let text = "request head too large\n";
            return Some(Asked::Refused(
                431,
                "Request Header Fields Too Large",
                text,
                true,
            ));
        }
        match o.conn.read(&mut o.head[o.got..]) {
            Ok(0) => return Some(Asked::Gone),
            Ok(n) => o.got += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if o.since.elapsed() > CONNECTION_TIME {
                    return Some(Asked::Refused(
                        408,
                        "Request Timeout",
                        "request head too slow\n",
                        true,
                    ));
                }
                return None;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Some(Asked::Gone),
        }
    }
}

/// Answers a complete head; the connection is closed after the answer.
fn answer(conn: &mut TcpStream, asked: Asked, scrapes: &Sender<Scrape>) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    match asked {
        Asked::Metrics { body } => match render(scrapes) {
            Some(text) => respond(conn, 200, "OK", &text, body),
            None => respond(
                conn,
                503,
                "Service Unavailable",
                "the process is busy\n",
                body,
            ),
        },
        Asked::Refused(code, reason, text, body) => respond(conn, code, reason, text, body),
        Asked::Gone => Ok(()),
    }
}

/// `None` while the head is incomplete.
fn parse(head: &[u8]) -> Option<Asked> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Partial) => None,
        Ok(httparse::Status::Complete(_)) => {
            let body = req.method != Some("HEAD");
            Some(match (req.method, req.path.map(path_of)) {
                (Some("GET" | "HEAD"), Some("/metrics")) => Asked::Metrics { body },
                (Some("GET" | "HEAD"), _) => {
                    Asked::Refused(404, "Not Found", "not found: try GET /metrics\n", body)
                }
                _ => Asked::Refused(405, "Method Not Allowed", "only GET /metrics\n", true),
            })
        }
        Err(httparse::Error::TooManyHeaders) => Some(Asked::Refused(
            431,
            "Request Header Fields Too Large",
            "too many headers\n",
            true,
        )),
        Err(_) => Some(Asked::Refused(
            400,
            "Bad Request",
            "not an HTTP request\n",
            true,
        )),
    }
}

/// The path of a request target, without its query: `/metrics?x` and the absolute form
/// `http://host:port/metrics` (which a server must accept, RFC 9112 §3.2.2) are `/metrics`.
fn path_of(target: &str) -> &str {
    let target = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    target.split(['?', '#']).next().unwrap_or(target)
}

/// Asks the owner's loop for the text; `None` if it does not answer in time (or is gone).
fn render(scrapes: &Sender<Scrape>) -> Option<Arc<str>> {
    let (tx, rx): (Scrape, Receiver<Arc<str>>) = std::sync::mpsc::sync_channel(1);
    scrapes.send(tx).ok()?;
    rx.recv_timeout(RENDER_WAIT).ok()
}

/// Writes the answer; its body only if `send_body` (a `HEAD` gets the head alone, with the
/// length the body would have).
fn respond(
    conn: &mut TcpStream,
    code: u16,
    reason: &str,
    body: &str,
    send_body: bool,
) -> std::io::Result<()> {
    let content_type = if code == 200 {
        // What prometheus-client writes: counters are `NAME_total` samples of a family
        // declared `NAME` (`# TYPE NAME counter`), which the older text format (0.0.4)
        // would read as untyped.
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let allow = if code == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    // The whole answer within WRITE_TIME: a timeout per write call would let a client that
    // reads a little now and then hold this thread (and every other scrape) for as long as
    // it likes.
    let by = Instant::now() + WRITE_TIME;
    write_by(conn, head.as_bytes(), by)?;
    if send_body {
        write_by(conn, body.as_bytes(), by)?;
    }
    // What the client still sends (a body) is not read: the close may reset it.
    let _ = conn.shutdown(Shutdown::Write);
    Ok(())
}

/// Writes all of `bytes` before `deadline`, or fails (`TimedOut`).
fn write_by(conn: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        conn.set_write_timeout(Some(left))?;
        match conn.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Takes every waiting scrape off `scrapes`; the text is rendered once, when one waits.
pub fn hand_over(scrapes: &Receiver<Scrape>, render: impl FnOnce() -> String) -> usize {
    let mut text: Option<Arc<str>> = None;
    let mut render = Some(render);
    let mut n = 0;
    loop {
        match scrapes.try_recv() {
            Ok(reply) => {
                let t = text.get_or_insert_with(|| {
                    Arc::from(render.take().map_or_else(String::new, |r| r()))
                });
                // The scrape may have given up waiting.
                let _ = reply.try_send(t.clone());
                n += 1;
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => return n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Any bytes a peer sends: no panic, and a head that ends (a blank line) is decided.
        #[test]
        fn any_head_is_decided_without_panicking(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            // (Blank lines before a request line are skipped, as HTTP says: those wait for
            // more, and the time limit ends them.)
            text in "[!-~][ -~]{0,200}",
        ) {
            let _ = parse(&bytes);
            let head = format!("{text}\r\n\r\n");
            let asked = parse(head.as_bytes());
            proptest::prop_assert!(asked.is_some(), "{head:?}");
        }
    }

    #[test]
    fn heads_are_answered_by_method_and_path() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Asked::Metrics { body: true })
        );
        assert_eq!(
            parse(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Some(Asked::Metrics { body: true })
        );
        assert_eq!(
            parse(b"GET http://x:9/metrics HTTP/1.1\r\n\r\n"),
            Some(Asked::Metrics { body: true }),
            "absolute form"
        );
        assert_eq!(
            parse(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Some(Asked::Metrics { body: false })
        );
        assert!(matches!(
            parse(b"HEAD /x HTTP/1.1\r\n\r\n"),
            Some(Asked::Refused(404, _, _, false))
        ));
        assert!(matches!(
            parse(b"GET http://x/other HTTP/1.1\r\n\r\n"),
            Some(Asked::Refused(404, ..))
        ));
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost"), None, "incomplete");
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\n\r\n"),
            Some(Asked::Refused(404, ..))
        ));
        assert!(matches!(
            parse(b"POST /metrics HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\nabc"),
            Some(Asked::Refused(405, ..))
        ));
        assert!(matches!(
            parse(b"\x16\x03\x01\x02\x00"),
            Some(Asked::Refused(400, ..))
        ));
        let many = format!("GET /metrics HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(40));
        assert!(matches!(
            parse(many.as_bytes()),
            Some(Asked::Refused(431, ..))
        ));
    }
}
