#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property-based fuzzing of postdesk's pure input handling (proptest, stable
//! Rust). Every property here says "never panics" plus what must hold of the
//! result. See `tests/FUZZING.md` for how to run it longer and where failing
//! cases are kept.
//!
//! The default case counts keep the whole binary well under a minute in a
//! debug build on two cores; `PROPTEST_CASES=n` replaces all of them.

use std::collections::{HashMap, HashSet};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine as _;
use postdesk::admin::proto::{parse_request, Response, COMMANDS};
use postdesk::ingest::bounce::{self, Bounce, MAX_DIAGNOSTIC_CHARS};
use postdesk::ingest::parse::MAX_TEXT_BYTES;
use postdesk::ingest::thread::{decide, SubjectTag, ThreadInput, ThreadView, ThreadedBy};
use postdesk::ingest::{classify, maybe_bounce, normalize_message_id, parse, ParsedMail, TicketId};
use postdesk::smtp::command::{parse_path, verb, with_enhanced_code};
use postdesk::smtp::reader::{read_line, Read};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::FileFailurePersistence;
use serde_json::Value;

/// Where proptest records the seed of every failing case; each property
/// replays all of them first. Kept in the repository (see FUZZING.md).
const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/fuzz.txt");

/// `default_cases` unless `PROPTEST_CASES` is set (proptest's own default
/// config reads that variable; `with_cases` would override it).
fn config(default_cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = default_cases;
    }
    c.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS)));
    // Rejected cases (see `release_semantics`) must not end a long run.
    c.max_global_rejects = c.max_global_rejects.max(c.cases);
    c
}

// ---------------------------------------------------------------------------
// Hostile mail: headers, encoded words, MIME trees.
// ---------------------------------------------------------------------------

const KNOWN_HEADERS: &[&str] = &[
    "Message-ID",
    "In-Reply-To",
    "References",
    "Subject",
    "From",
    "To",
    "Cc",
    "Reply-To",
    "Sender",
    "Date",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-Disposition",
    "MIME-Version",
    "Auto-Submitted",
    "Precedence",
    "List-Id",
    "List-Unsubscribe",
    "X-Autoreply",
    "X-Autorespond",
    "X-Auto-Response-Suppress",
    "X-Postdesk-Ticket",
    "Received",
    "Return-Path",
];

type Header = (Vec<u8>, Vec<u8>);

fn header_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => select(KNOWN_HEADERS).prop_map(|s| s.as_bytes().to_vec()),
        2 => "[A-Za-z][A-Za-z0-9-]{0,30}".prop_map(String::into_bytes),
        1 => vec(any::<u8>(), 0..24),
    ]
}

fn encoded_word() -> impl Strategy<Value = Vec<u8>> {
    let charset = prop_oneof![
        select(
            &[
                "utf-8",
                "UTF-8",
                "iso-8859-1",
                "x-bogus",
                "utf-16",
                "UTF-32",
                "utf-7",
                "gb2312",
                "shift_jis",
                "iso-2022-jp",
                "ks_c_5601-1987",
                "",
                "*",
                "utf-8*en",
            ][..]
        )
        .prop_map(String::from),
        "[ -~]{0,16}",
    ];
    let payload = prop_oneof![
        "[A-Za-z0-9+/=]{0,60}",
        "[ -~]{0,60}",
        vec(any::<u8>(), 0..45).prop_map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
    ];
    (
        charset,
        select(&["B", "Q", "b", "q", "X", ""][..]),
        payload,
        any::<bool>(),
    )
        .prop_map(|(charset, enc, payload, closed)| {
            let end = if closed { "?=" } else { "" };
            format!("=?{charset}?{enc}?{payload}{end}").into_bytes()
        })
}

fn message_id_list() -> impl Strategy<Value = Vec<u8>> {
    let id = prop_oneof![
        "<[a-zA-Z0-9.$%+_-]{0,16}@[a-zA-Z0-9.-]{0,12}>",
        "<?[ -~]{0,24}>?",
        Just(String::from("<>")),
    ];
    (
        vec(id, 0..6),
        select(&[" ", ",", ", ", "\r\n ", "\t", "", "\n "][..]),
    )
        .prop_map(|(ids, sep)| ids.join(sep).into_bytes())
}

fn address_list() -> impl Strategy<Value = Vec<u8>> {
    let one = prop_oneof![
        "\"?[ -~]{0,20}\"? <[a-zA-Z0-9.+-]{0,10}@[a-z0-9.-]{0,10}>",
        "[a-zA-Z0-9.+-]{0,10}@[a-z0-9.-]{0,10}( \\([ -~]{0,10}\\))?",
        "[a-z]{0,8}: [a-z]{1,5}@[a-z]{1,5}, [a-z]{1,5}@[a-z]{1,5};",
        "[ -~]{0,40}",
    ];
    (vec(one, 1..5), select(&[", ", ",", ",\r\n ", " "][..]))
        .prop_map(|(parts, sep)| parts.join(sep).into_bytes())
}

fn folded_value() -> impl Strategy<Value = Vec<u8>> {
    (
        vec("[ -~]{0,30}", 1..6),
        select(
            &[
                "\r\n ",
                "\r\n\t",
                "\n ",
                "\r\n",
                "\r",
                " \r\n \r\n ",
                "\r\n  ",
            ][..],
        ),
    )
        .prop_map(|(parts, sep)| parts.join(sep).into_bytes())
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    let nasty_byte = prop_oneof![
        Just(0u8),
        Just(b'\r'),
        Just(b'\n'),
        Just(b' '),
        Just(b'\t'),
        Just(b':'),
        Just(b'<'),
        Just(b'>'),
        Just(b'@'),
        Just(b'='),
        Just(b'?'),
        Just(b'"'),
        Just(0xffu8),
        b'a'..=b'z',
    ];
    prop_oneof![
        3 => "[ -~]{0,80}".prop_map(String::into_bytes),
        2 => vec(any::<u8>(), 0..120),
        2 => vec(nasty_byte, 0..80),
        1 => (select(&[b'a', b' ', 0u8, 0xff, b'=', b'<'][..]), 900usize..12_000)
            .prop_map(|(c, n)| vec![c; n]),
        2 => vec(encoded_word(), 1..4).prop_map(|w| w.join(&b" "[..])),
        2 => message_id_list(),
        2 => address_list(),
        1 => folded_value(),
        1 => "[A-Za-z]{0,4},? ?[0-9]{0,3} [A-Za-z]{0,4} [0-9]{0,6} [0-9:]{0,9} [+-]?[0-9]{0,5}"
            .prop_map(String::into_bytes),
    ]
}

fn header() -> impl Strategy<Value = Header> {
    (header_name(), header_value())
}

/// A header that stays a header: token name, printable value, maybe folded
/// (never into a blank line, which would end the header block).
fn benign_header() -> impl Strategy<Value = Header> {
    let folded = (
        vec("[!-~][ -~]{0,29}", 1..5),
        select(&["\r\n ", "\r\n\t", "\r\n  "][..]),
    )
        .prop_map(|(parts, sep)| parts.join(sep).into_bytes());
    (
        "[A-Za-z][A-Za-z0-9-]{0,20}".prop_map(String::into_bytes),
        prop_oneof!["[ -~]{0,60}".prop_map(String::into_bytes), folded],
    )
}

fn boundary() -> impl Strategy<Value = String> {
    prop_oneof![
        // Short ones collide with content and with each other.
        2 => select(&["a", "ab", "abc", "=_", "--", "b1", "", " "][..]).prop_map(String::from),
        3 => "[A-Za-z0-9'()+_,./:=? -]{1,70}",
        1 => "[ -~]{0,90}",
    ]
}

#[derive(Debug, Clone)]
enum Boundary {
    /// Declared and used as is.
    Same(String),
    /// Declared quoted, used bare.
    Quoted(String),
    /// Not declared at all, used anyway.
    Missing(String),
    /// Declared one, used another.
    Mismatched(String, String),
}

impl Boundary {
    fn declared(&self) -> Option<String> {
        match self {
            Boundary::Same(b) | Boundary::Mismatched(b, _) => Some(b.clone()),
            Boundary::Quoted(b) => Some(format!("\"{b}\"")),
            Boundary::Missing(_) => None,
        }
    }

    fn used(&self) -> &str {
        match self {
            Boundary::Same(b)
            | Boundary::Quoted(b)
            | Boundary::Missing(b)
            | Boundary::Mismatched(_, b) => b,
        }
    }
}

fn boundary_kind() -> impl Strategy<Value = Boundary> {
    prop_oneof![
        4 => boundary().prop_map(Boundary::Same),
        1 => boundary().prop_map(Boundary::Quoted),
        1 => boundary().prop_map(Boundary::Missing),
        1 => (boundary(), boundary()).prop_map(|(a, b)| Boundary::Mismatched(a, b)),
    ]
}

#[derive(Debug, Clone)]
enum Part {
    Leaf {
        headers: Vec<Header>,
        content_type: Option<String>,
        encoding: Option<String>,
        body: Vec<u8>,
    },
    Multi {
        headers: Vec<Header>,
        subtype: String,
        boundary: Boundary,
        preamble: Vec<u8>,
        parts: Vec<Part>,
        close: bool,
        epilogue: Vec<u8>,
    },
    /// `message/rfc822`: a whole message inside.
    Message {
        headers: Vec<Header>,
        inner: Box<Part>,
    },
}

fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => vec(any::<u8>(), 0..400),
        // Base64 garbage: bad alphabet, bad padding, odd line breaks.
        2 => "[A-Za-z0-9+/=\r\n !*-]{0,400}".prop_map(String::into_bytes),
        1 => (vec(any::<u8>(), 0..300), 1usize..100).prop_map(|(b, width)| {
            let text = base64::engine::general_purpose::STANDARD.encode(b);
            let lines: Vec<&str> = text
                .as_bytes()
                .chunks(width)
                .map(|c| std::str::from_utf8(c).unwrap_or(""))
                .collect();
            lines.join("\r\n").into_bytes()
        }),
        // Quoted-printable garbage: soft breaks, bad escapes, a trailing '='.
        2 => "([=][0-9A-Za-z\r\n ]{0,2}|[ -~\t\r\n]){0,200}".prop_map(String::into_bytes),
        1 => "(<[a-z!/]{0,6}( [a-z]{1,5}=\"[ -!#-~]{0,10}\")?>|[ -~&;#]{0,20}){0,30}"
            .prop_map(String::into_bytes),
        // Lines that look like boundaries or the end of DATA.
        1 => vec(
            select(&["--a", "--a--", "--", ".", "..", "--b1", "=_", "\r\n", "text"][..]),
            0..20
        )
        .prop_map(|l| l.join("\r\n").into_bytes()),
        1 => "\\PC{0,200}".prop_map(String::into_bytes),
    ]
}

fn leaf() -> impl Strategy<Value = Part> {
    let content_type = proptest::option::weighted(
        0.8,
        prop_oneof![
            4 => select(&[
                "text/plain",
                "text/plain; charset=utf-8",
                "text/plain; charset=x-bogus",
                "text/plain; charset=utf-16",
                "text/plain; charset=\"iso-2022-jp\"",
                "text/plain; charset=",
                "text/html",
                "text/html; charset=windows-1252",
                "application/octet-stream",
                "image/png; name=x.png",
                "message/rfc822",
                "multipart/mixed",
                "multipart/alternative; boundary=",
                "text",
                "/",
                ";;;",
                "",
            ][..])
            .prop_map(String::from),
            1 => "[ -~]{0,40}",
        ],
    );
    let encoding = proptest::option::weighted(
        0.7,
        select(
            &[
                "7bit",
                "8bit",
                "binary",
                "base64",
                "BASE64",
                "quoted-printable",
                "x-uuencode",
                "bogus",
                "",
            ][..],
        )
        .prop_map(String::from),
    );
    (vec(header(), 0..3), content_type, encoding, body_bytes()).prop_map(
        |(headers, content_type, encoding, body)| Part::Leaf {
            headers,
            content_type,
            encoding,
            body,
        },
    )
}

fn multipart_subtype() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(&["mixed", "alternative", "related", "digest", "report", "signed"][..])
            .prop_map(String::from),
        1 => "[ -~]{0,12}",
    ]
}

fn small_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(Vec::new()),
        1 => vec(any::<u8>(), 0..40),
        1 => "[ -~\r\n]{0,40}".prop_map(String::into_bytes),
    ]
}

fn multi(parts: Vec<Part>) -> impl Strategy<Value = Part> {
    (
        vec(header(), 0..2),
        multipart_subtype(),
        boundary_kind(),
        small_bytes(),
        prop::bool::weighted(0.8),
        small_bytes(),
    )
        .prop_map(
            move |(headers, subtype, boundary, preamble, close, epilogue)| Part::Multi {
                headers,
                subtype,
                boundary,
                preamble,
                parts: parts.clone(),
                close,
                epilogue,
            },
        )
}

/// A random MIME tree, a few levels deep.
fn mime_tree() -> impl Strategy<Value = Part> {
    leaf().prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            3 => vec(inner.clone(), 0..6).prop_flat_map(multi),
            1 => (vec(header(), 0..2), inner).prop_map(|(headers, inner)| Part::Message {
                headers,
                inner: Box::new(inner),
            }),
        ]
    })
}

/// One chain nested up to 50 levels (multipart and message/rfc822 mixed).
fn deep_tree() -> impl Strategy<Value = Part> {
    (
        vec((prop::bool::weighted(0.3), boundary_kind()), 1..=50),
        leaf(),
    )
        .prop_map(|(levels, leaf)| {
            levels
                .into_iter()
                .fold(leaf, |inner, (rfc822, boundary)| match rfc822 {
                    true => Part::Message {
                        headers: Vec::new(),
                        inner: Box::new(inner),
                    },
                    false => Part::Multi {
                        headers: Vec::new(),
                        subtype: "mixed".into(),
                        boundary,
                        preamble: Vec::new(),
                        parts: vec![inner],
                        close: true,
                        epilogue: Vec::new(),
                    },
                })
        })
}

/// One multipart with many parts.
fn wide_tree() -> impl Strategy<Value = Part> {
    vec(leaf(), 50..300).prop_flat_map(multi)
}

fn render(part: &Part, eol: &[u8], out: &mut Vec<u8>) {
    let header = |out: &mut Vec<u8>, name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(eol);
    };
    match part {
        Part::Leaf {
            headers,
            content_type,
            encoding,
            body,
        } => {
            for (n, v) in headers {
                header(out, n, v);
            }
            if let Some(ct) = content_type {
                header(out, b"Content-Type", ct.as_bytes());
            }
            if let Some(cte) = encoding {
                header(out, b"Content-Transfer-Encoding", cte.as_bytes());
            }
            out.extend_from_slice(eol);
            out.extend_from_slice(body);
        }
        Part::Multi {
            headers,
            subtype,
            boundary,
            preamble,
            parts,
            close,
            epilogue,
        } => {
            for (n, v) in headers {
                header(out, n, v);
            }
            let ct = match boundary.declared() {
                Some(b) => format!("multipart/{subtype}; boundary={b}"),
                None => format!("multipart/{subtype}"),
            };
            header(out, b"Content-Type", ct.as_bytes());
            out.extend_from_slice(eol);
            out.extend_from_slice(preamble);
            let used = boundary.used().as_bytes();
            for p in parts {
                out.extend_from_slice(eol);
                out.extend_from_slice(b"--");
                out.extend_from_slice(used);
                out.extend_from_slice(eol);
                render(p, eol, out);
            }
            if *close {
                out.extend_from_slice(eol);
                out.extend_from_slice(b"--");
                out.extend_from_slice(used);
                out.extend_from_slice(b"--");
                out.extend_from_slice(eol);
            }
            out.extend_from_slice(epilogue);
        }
        Part::Message { headers, inner } => {
            for (n, v) in headers {
                header(out, n, v);
            }
            header(out, b"Content-Type", b"message/rfc822");
            out.extend_from_slice(eol);
            render(inner, eol, out);
        }
    }
}

/// CRLF most often; bare LF and bare CR too.
const EOLS: &[&[u8]] = &[b"\r\n", b"\r\n", b"\n", b"\r"];

/// Byte strings worth inserting into a message.
const INSERTS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"\0",
    b"--",
    b"=?",
    b"?=",
    b":",
];

/// Top-level headers, then the MIME tree (whose own headers follow them).
fn message_from(body: impl Strategy<Value = Part>) -> impl Strategy<Value = Vec<u8>> {
    (vec(header(), 0..12), body, select(EOLS)).prop_map(|(headers, body, eol)| {
        let mut out = Vec::new();
        for (n, v) in &headers {
            out.extend_from_slice(n);
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(eol);
        }
        render(&body, eol, &mut out);
        out
    })
}

fn hostile_message() -> impl Strategy<Value = Vec<u8>> {
    message_from(mime_tree())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let insert = prop_oneof![
        vec(any::<u8>(), 1..8),
        select(INSERTS).prop_map(<[u8]>::to_vec),
    ];
    vec(
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
            (any::<usize>(), insert).prop_map(|(i, b)| Mutation::Insert(i, b)),
            (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        ],
        0..16,
    )
}

fn mutate(mut bytes: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = bytes.len();
        match m {
            Mutation::Flip(i, b) if len > 0 => bytes[i % len] ^= b,
            Mutation::Flip(..) => {}
            Mutation::Insert(i, b) => {
                let at = i % (len + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Delete(i, n) if len > 0 => {
                let at = i % len;
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Delete(..) => {}
        }
    }
    bytes
}

// mail-parser 0.11 has checks that exist only in debug builds: a
// `debug_assert!` ("Invalid part ID, could not find multipart.") and integer
// arithmetic that overflows on some malformed MIME (quoted_printable.rs). A
// release build — the daemon we ship — compiles neither, so by default such a
// panic *inside mail-parser* rejects the case instead of failing the property;
// any other panic (ours, or an out-of-bounds slice anywhere) still fails it.
// `FUZZ_STRICT=1` turns this off. The clean fix is to build mail-parser
// without debug assertions and overflow checks in the dev profile
// (`[profile.dev.package.mail-parser]`), after which nothing is ever rejected.

thread_local! {
    /// Where the last panic on this thread happened (file, message).
    static LAST_PANIC: std::cell::RefCell<Option<(String, String)>> =
        const { std::cell::RefCell::new(None) };
}

fn panic_message(info: &std::panic::PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

fn is_debug_only_dependency_check(file: &str, message: &str) -> bool {
    file.contains("mail-parser-")
        && (message.starts_with("Invalid part ID")
            || (message.starts_with("attempt to ") && message.ends_with(" with overflow")))
}

/// Records every panic's location; stays quiet about the debug-only
/// mail-parser checks (proptest shrinks through thousands of them).
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let file = info
                .location()
                .map(|l| l.file().to_string())
                .unwrap_or_default();
            let message = panic_message(info);
            let quiet = is_debug_only_dependency_check(&file, &message);
            LAST_PANIC.with(|p| *p.borrow_mut() = Some((file, message)));
            if !quiet {
                default(info);
            }
        }));
    });
}

fn strict() -> bool {
    std::env::var_os("FUZZ_STRICT").is_some_and(|v| v != "0")
}

/// Runs `f`, turning a debug-only mail-parser check into a rejected case (see
/// above); every other panic goes on unwinding.
fn release_semantics<T>(
    f: impl FnOnce() -> T + std::panic::UnwindSafe,
) -> Result<T, TestCaseError> {
    install_panic_hook();
    match std::panic::catch_unwind(f) {
        Ok(v) => Ok(v),
        Err(payload) => {
            let last = LAST_PANIC.with(|p| p.borrow_mut().take());
            match last {
                Some((file, message))
                    if !strict() && is_debug_only_dependency_check(&file, &message) =>
                {
                    Err(TestCaseError::reject(format!(
                        "debug-only check in {file}: {message}"
                    )))
                }
                _ => std::panic::resume_unwind(payload),
            }
        }
    }
}

/// Everything target 1 promises of `parse`.
fn check_parse(raw: &[u8]) -> Result<ParsedMail, TestCaseError> {
    let first = release_semantics(|| parse(raw))?;
    prop_assert!(!first.message_id.is_empty());
    prop_assert!(first.text.len() <= MAX_TEXT_BYTES);
    let again = release_semantics(|| parse(raw))?;
    prop_assert_eq!(&first, &again, "parse is not deterministic");
    Ok(first)
}

fn mail_from() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z]{1,8}@[a-z]{1,8}\\.example",
        select(
            &[
                "MAILER-DAEMON@mx.example",
                "postmaster",
                "support@acme.example"
            ][..]
        )
        .prop_map(String::from),
        "\\PC{0,20}",
        any::<String>(),
    ]
}

/// `classify` with a channel predicate that never panics either.
fn classify_any(p: &ParsedMail, mail_from: &str) -> bool {
    classify(p, mail_from, |a| {
        a.eq_ignore_ascii_case("support@acme.example") || a.len() % 7 == 3
    })
    .is_some()
}

proptest! {
    #![proptest_config(config(256))]

    /// Target 1a: Arbitrary bytes up to 8 KiB.
    #[test]
    fn ingest_parse_arbitrary_bytes(raw in vec(any::<u8>(), 0..8192)) {
        check_parse(&raw)?;
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// Target 1b: Structured but hostile messages: random headers, encoded words,
    /// MIME trees with good, missing and mismatched boundaries.
    #[test]
    fn ingest_parse_hostile_messages(raw in hostile_message()) {
        check_parse(&raw)?;
    }

    /// Target 1b: The same, with random bytes flipped, inserted and deleted.
    #[test]
    fn ingest_parse_mutated_messages(raw in hostile_message(), muts in mutations()) {
        check_parse(&mutate(raw, &muts))?;
    }

    /// Target 2: `classify` never panics on whatever `parse` makes of hostile mail,
    /// and `MAIL FROM:<>` is always automatic.
    #[test]
    fn classify_never_panics_and_null_sender_is_automatic(
        raw in hostile_message(),
        from in mail_from(),
    ) {
        let p = check_parse(&raw)?;
        let _ = classify_any(&p, &from);
        prop_assert!(classify_any(&p, ""), "MAIL FROM:<> not classified automatic");
    }
}

proptest! {
    #![proptest_config(config(48))]

    /// Target 1b: Nesting up to 50 levels deep.
    #[test]
    fn ingest_parse_deep_nesting(raw in message_from(deep_tree())) {
        check_parse(&raw)?;
    }
}

proptest! {
    #![proptest_config(config(24))]

    /// Target 1b: Hundreds of parts in one multipart.
    #[test]
    fn ingest_parse_many_parts(raw in message_from(wide_tree())) {
        check_parse(&raw)?;
    }
}

proptest! {
    #![proptest_config(config(8))]

    /// Target 1: The decoded text is capped at `MAX_TEXT_BYTES`, on a char boundary,
    /// whether the body is plain, base64 or unparseable.
    #[test]
    fn ingest_text_is_capped(
        extra in 0usize..4096,
        fill in select(&["a", "é", "€", "😀"][..]),
        base64_body in any::<bool>(),
        headers in any::<bool>(),
    ) {
        let body = fill.repeat((MAX_TEXT_BYTES + extra) / fill.len() + 1);
        let mut raw = Vec::new();
        if headers {
            raw.extend_from_slice(b"Subject: big\r\nContent-Type: text/plain; charset=utf-8\r\n");
        }
        if base64_body {
            raw.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n\r\n");
            let encoded = base64::engine::general_purpose::STANDARD.encode(&body);
            raw.extend_from_slice(encoded.as_bytes());
        } else {
            raw.extend_from_slice(b"\r\n");
            raw.extend_from_slice(body.as_bytes());
        }
        check_parse(&raw)?;
    }
}

// ---------------------------------------------------------------------------
// 2. Classify: Auto-Submitted: auto-replied, however written.
// ---------------------------------------------------------------------------

fn random_case(s: &str, flips: &[bool]) -> String {
    s.chars()
        .zip(flips.iter().cycle())
        .map(|(c, up)| {
            if *up {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

fn auto_submitted_header() -> impl Strategy<Value = Vec<u8>> {
    (
        vec(any::<bool>(), 1..16),
        select(&["", " ", "\t", "  "][..]),
        select(&["", " ", "  ", "\t", "\r\n ", "\r\n\t", " \r\n  ", "\n "][..]),
        vec(any::<bool>(), 1..16),
        select(
            &[
                "",
                " ",
                "\t",
                "; reason=vacation",
                " (vacation)",
                ";\r\n owner=x@y",
                ";owner-email=\"a@b\"",
            ][..],
        ),
    )
        .prop_map(|(name_case, before_colon, after_colon, value_case, tail)| {
            format!(
                "{}{before_colon}:{after_colon}{}{tail}\r\n",
                random_case("Auto-Submitted", &name_case),
                random_case("auto-replied", &value_case),
            )
            .into_bytes()
        })
}

proptest! {
    #![proptest_config(config(128))]

    /// Target 2: Any message carrying `Auto-Submitted: auto-replied` is automatic,
    /// whatever the envelope sender and whatever surrounds the header.
    #[test]
    fn classify_auto_replied_is_automatic(
        before in vec(benign_header(), 0..6),
        auto in auto_submitted_header(),
        after in vec(header(), 0..6),
        body in mime_tree(),
        from in mail_from(),
    ) {
        let mut raw = Vec::new();
        for (n, v) in &before {
            raw.extend_from_slice(n);
            raw.extend_from_slice(b": ");
            raw.extend_from_slice(v);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(&auto);
        for (n, v) in &after {
            raw.extend_from_slice(n);
            raw.extend_from_slice(b": ");
            raw.extend_from_slice(v);
            raw.extend_from_slice(b"\r\n");
        }
        render(&body, b"\r\n", &mut raw);
        let p = check_parse(&raw)?;
        prop_assert!(
            classify_any(&p, &from),
            "not automatic: {:?} (markers {:?})",
            String::from_utf8_lossy(&auto),
            p.markers
        );
    }
}

// ---------------------------------------------------------------------------
// 3. Threading over a random view.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct Map {
    ids: HashMap<String, TicketId>,
    tickets: HashSet<TicketId>,
    participants: HashSet<(TicketId, String)>,
}

impl ThreadView for Map {
    type Error = std::convert::Infallible;
    fn ticket_for_message_id(&self, id: &str) -> Result<Option<TicketId>, Self::Error> {
        Ok(self.ids.get(id).copied())
    }
    fn ticket_exists(&self, t: TicketId) -> Result<bool, Self::Error> {
        Ok(self.tickets.contains(&t))
    }
    fn is_participant(&self, t: TicketId, email: &str) -> Result<bool, Self::Error> {
        Ok(self.participants.contains(&(t, email.to_string())))
    }
}

/// A small pool so that inputs and the view collide often.
fn pool_id() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-f]@x",
        1 => "\\PC{0,12}",
    ]
}

fn email() -> impl Strategy<Value = String> {
    select(
        &[
            "bob@example.com",
            "alice@acme.example",
            "eve@evil.example",
            "",
        ][..],
    )
    .prop_map(String::from)
}

fn ticket() -> impl Strategy<Value = TicketId> {
    prop_oneof![6 => 0u64..12, 1 => any::<u64>()].prop_map(TicketId)
}

fn view() -> impl Strategy<Value = Map> {
    (
        vec((pool_id(), ticket()), 0..8),
        vec(ticket(), 0..8),
        vec((ticket(), email()), 0..8),
    )
        .prop_map(|(ids, tickets, participants)| Map {
            ids: ids.into_iter().collect(),
            tickets: tickets.into_iter().collect(),
            participants: participants.into_iter().collect(),
        })
}

fn subject() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => ("\\PC{0,8}", ticket(), "\\PC{0,8}").prop_map(|(a, t, b)| format!("{a}[#{t}]{b}")),
        1 => ("\\PC{0,8}", ticket(), "\\PC{0,8}")
            .prop_map(|(a, t, b)| format!("{a}(Ticket {t}){b}")),
        1 => "\\PC{0,30}",
        1 => any::<String>(),
    ]
}

#[derive(Debug, Clone)]
struct Input {
    message_id: String,
    in_reply_to: Vec<String>,
    references: Vec<String>,
    /// The plus address's ticket and whether its key was valid.
    plus: Option<(TicketId, bool)>,
    subject: String,
    sender: Option<String>,
    agent: bool,
    pattern: String,
}

impl Input {
    fn thread_input(&self) -> ThreadInput<'_> {
        ThreadInput {
            message_id: &self.message_id,
            in_reply_to: &self.in_reply_to,
            references: &self.references,
            plus: self.plus,
            subject: &self.subject,
            sender: self.sender.as_deref(),
            sender_is_agent: self.agent,
        }
    }
}

fn thread_input() -> impl Strategy<Value = Input> {
    (
        pool_id(),
        vec(pool_id(), 0..3),
        vec(pool_id(), 0..6),
        proptest::option::of((ticket(), any::<bool>())),
        subject(),
        proptest::option::of(email()),
        prop::bool::weighted(0.2),
        prop_oneof![
            4 => Just(String::from("[#{id}]")),
            1 => Just(String::from("(Ticket {id})")),
            1 => "\\PC{0,6}",
        ],
    )
        .prop_map(
            |(message_id, in_reply_to, references, plus, subject, sender, agent, pattern)| Input {
                message_id,
                in_reply_to,
                references,
                plus,
                subject,
                sender,
                agent,
                pattern,
            },
        )
}

proptest! {
    #![proptest_config(config(1024))]

    /// Target 3: `decide` never panics, is deterministic, and every match it makes
    /// is justified by the view.
    #[test]
    fn thread_decide_is_justified(input in thread_input(), view in view()) {
        let tag = SubjectTag::new(&input.pattern);
        let ti = input.thread_input();
        let Ok(got) = decide(&ti, &tag, &view);
        let Ok(again) = decide(&ti, &tag, &view);
        prop_assert_eq!(&got, &again, "decide is not deterministic");

        let mapped = |id: &str| view.ids.get(id).copied();
        let via = got.via.clone().unwrap_or_default();
        match (got.ticket, got.by) {
            (None, ThreadedBy::New) => prop_assert!(got.via.is_none()),
            (None, by) => prop_assert!(false, "{:?} without a ticket", by),
            (Some(_), ThreadedBy::New) => prop_assert!(false, "New with a ticket"),
            (Some(t), ThreadedBy::MessageId) => {
                prop_assert_eq!(&via, &input.message_id);
                prop_assert_eq!(mapped(&via), Some(t));
            }
            (Some(t), ThreadedBy::InReplyTo) => {
                prop_assert!(input.in_reply_to.contains(&via));
                prop_assert_eq!(mapped(&via), Some(t));
            }
            (Some(t), ThreadedBy::References) => {
                prop_assert!(input.references.contains(&via));
                prop_assert_eq!(mapped(&via), Some(t));
            }
            (Some(t), ThreadedBy::PlusAddress) => {
                let Some((plus, signed)) = input.plus else {
                    return Err(TestCaseError::fail("plus address match without one"));
                };
                prop_assert_eq!(plus, t);
                prop_assert!(view.tickets.contains(&t));
                // A bare plus address only from a participant or an agent.
                let participant = input
                    .sender
                    .as_ref()
                    .is_some_and(|s| view.participants.contains(&(t, s.clone())));
                prop_assert!(signed || input.agent || participant);
            }
            (Some(t), ThreadedBy::SubjectTag) => {
                prop_assert!(view.tickets.contains(&t));
                prop_assert_eq!(tag.find(&input.subject), Some(t));
                let participant = input
                    .sender
                    .as_ref()
                    .is_some_and(|s| view.participants.contains(&(t, s.clone())));
                prop_assert!(
                    input.agent || participant,
                    "subject tag matched for a non-participant non-agent sender"
                );
            }
        }

        // Header threading wins: a mapped own id or In-Reply-To id decides.
        if mapped(&input.message_id).is_some() {
            prop_assert_eq!(got.by, ThreadedBy::MessageId);
        } else if input.in_reply_to.iter().any(|id| mapped(id).is_some()) {
            prop_assert_eq!(got.by, ThreadedBy::InReplyTo);
        } else if input.references.iter().any(|id| mapped(id).is_some()) {
            prop_assert_eq!(got.by, ThreadedBy::References);
        }
    }
}

// ---------------------------------------------------------------------------
// 4. Subject tags.
// ---------------------------------------------------------------------------

/// `find` gives up on more than 18 digits (so the id fits a u64 without
/// overflow checks); ticket numbers never get near that.
const MAX_TAG_ID: u64 = 999_999_999_999_999_999;

/// Target 4: The smallest case `subject_tag_never_panics` found: a pattern that
/// starts with `{id}` (valid config, e.g. `subject_tag = "{id}]"`) and an
/// empty subject. `find` slices `""[1..]` and panics — in the store writer.
#[test]
fn subject_tag_leading_id_and_empty_subject() {
    assert_eq!(SubjectTag::new("{id}]").find(""), None);
}

proptest! {
    #![proptest_config(config(1024))]

    /// Target 4: Arbitrary patterns and subjects never panic.
    #[test]
    fn subject_tag_never_panics(
        pattern in prop_oneof![
            any::<String>(),
            ("\\PC{0,6}", "\\PC{0,6}").prop_map(|(a, b)| format!("{a}{{id}}{b}")),
        ],
        subject in prop_oneof![any::<String>(), "\\PC{0,40}"],
        id in any::<u64>(),
    ) {
        let tag = SubjectTag::new(&pattern);
        let _ = tag.find(&subject);
        let _ = tag.render(TicketId(id));
        if !pattern.contains("{id}") {
            prop_assert_eq!(tag.find(&subject), None);
        }
    }

    /// Target 4: The default pattern finds the tag it renders, wherever it stands.
    #[test]
    fn subject_tag_default_round_trips(
        prefix in prop_oneof![any::<String>(), "[\\[#0-9\\] a-z]{0,12}"],
        suffix in prop_oneof![any::<String>(), "[\\[#0-9\\] a-z]{0,12}"],
        id in prop_oneof![1u64..1000, 1..=MAX_TAG_ID],
    ) {
        let tag = SubjectTag::new("[#{id}]");
        // A tag already in the prefix comes first and rightly wins.
        prop_assume!(tag.find(&prefix).is_none());
        let subject = format!("{prefix}{}{suffix}", tag.render(TicketId(id)));
        prop_assert_eq!(tag.find(&subject), Some(TicketId(id)), "{:?}", subject);
    }

    /// Target 4: Any pattern with `{id}` finds its own rendering, unless its suffix
    /// starts with a digit (then the tag is ambiguous by construction).
    #[test]
    fn subject_tag_any_pattern_round_trips(
        prefix in "\\PC{0,6}",
        suffix in "\\PC{0,6}",
        id in 1..=MAX_TAG_ID,
    ) {
        prop_assume!(!(prefix.is_empty() && suffix.is_empty()));
        prop_assume!(!suffix.starts_with(|c: char| c.is_ascii_digit()));
        let tag = SubjectTag::new(&format!("{prefix}{{id}}{suffix}"));
        prop_assert_eq!(tag.find(&tag.render(TicketId(id))), Some(TicketId(id)));
    }
}

// ---------------------------------------------------------------------------
// 5. Admin protocol.
// ---------------------------------------------------------------------------

const ARG_NAMES: &[&str] = &[
    "cmd",
    "id",
    "limit",
    "status",
    "pipeline",
    "body",
    "user",
    "owner",
    "state",
    "message_id",
    "extra",
];

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(ARG_NAMES).prop_map(String::from),
        1 => any::<String>(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::String),
        select(COMMANDS).prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            vec((json_key(), inner), 0..8).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Objects with a `cmd` (known or not) and plausible arguments, so that the
/// argument checks are reached.
fn json_request() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            4 => select(COMMANDS).prop_map(Value::from),
            1 => json_value(),
        ],
        vec((json_key(), json_value()), 0..4),
    )
        .prop_map(|(cmd, args)| {
            let mut map: serde_json::Map<String, Value> = args.into_iter().collect();
            map.insert("cmd".into(), cmd);
            Value::Object(map)
        })
}

fn check_line(resp: &Response) -> Result<(), TestCaseError> {
    let line = resp.to_line();
    prop_assert!(line.ends_with('\n'), "{:?}", line);
    prop_assert_eq!(line.matches('\n').count(), 1, "{:?}", line);
    let back: Value = serde_json::from_str(&line)
        .map_err(|e| TestCaseError::fail(format!("to_line is not JSON: {e}: {line:?}")))?;
    prop_assert_eq!(back.get("ok"), Some(&Value::Bool(resp.ok)));
    let typed: Response = serde_json::from_value(back)
        .map_err(|e| TestCaseError::fail(format!("to_line is not a Response: {e}: {line:?}")))?;
    prop_assert_eq!(&typed.error, &resp.error);
    Ok(())
}

fn check_request(bytes: &[u8]) -> Result<(), TestCaseError> {
    match parse_request(bytes) {
        Ok(_) => {}
        Err(resp) => {
            prop_assert!(!resp.ok);
            prop_assert!(resp.data.is_none());
            let Some(err) = &resp.error else {
                return Err(TestCaseError::fail("an error response without an error"));
            };
            prop_assert!(
                err.code == "bad_request" || err.code == "unknown_command",
                "unexpected code {:?}",
                err.code
            );
            prop_assert!(!err.message.is_empty());
            check_line(&resp)?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    /// Target 5: Arbitrary bytes, and JSON with a few bytes changed.
    #[test]
    fn admin_parse_request_arbitrary_bytes(
        bytes in prop_oneof![
            vec(any::<u8>(), 0..512),
            (json_request(), mutations()).prop_map(|(v, m)| mutate(v.to_string().into_bytes(), &m)),
            (1usize..400, select(&["[", "{\"a\":", "{\"cmd\":["][..]))
                .prop_map(|(n, open)| open.repeat(n).into_bytes()),
        ],
    ) {
        check_request(&bytes)?;
    }

    /// Target 5: Arbitrary JSON values and request-shaped objects.
    #[test]
    fn admin_parse_request_json_values(
        value in prop_oneof![json_value(), json_request()],
        pretty in any::<bool>(),
    ) {
        let bytes = if pretty {
            serde_json::to_vec_pretty(&value).unwrap()
        } else {
            serde_json::to_vec(&value).unwrap()
        };
        check_request(&bytes)?;
        check_line(&Response::ok(value))?;
    }

    /// Target 5: Any error text still makes one JSON line.
    #[test]
    fn admin_error_response_is_one_line(code in any::<String>(), message in any::<String>()) {
        check_line(&Response::err(&code, message))?;
    }
}

// ---------------------------------------------------------------------------
// 6. SMTP command helpers.
// ---------------------------------------------------------------------------

/// A line starting with some prefix (in random case) of `MAIL FROM:`.
fn path_line() -> impl Strategy<Value = Vec<u8>> {
    (
        0usize..=10,
        vec(any::<bool>(), 10),
        prop_oneof![any::<String>(), "[ <>@a-z:=\r\n]{0,30}", "\\PC{0,30}"],
    )
        .prop_map(|(n, case, rest)| {
            format!("{}{rest}", random_case(&"MAIL FROM:"[..n], &case)).into_bytes()
        })
}

proptest! {
    #![proptest_config(config(1024))]

    /// Target 6: Nothing panics on arbitrary bytes.
    #[test]
    fn smtp_command_helpers_never_panic(
        line in prop_oneof![vec(any::<u8>(), 0..600), path_line()],
        prefix in prop_oneof![
            4 => select(&["MAIL FROM:", "RCPT TO:"][..]).prop_map(String::from),
            1 => any::<String>(),
        ],
    ) {
        let _ = parse_path(&line, &prefix);
        let v = verb(&line);
        prop_assert!(v.chars().count() <= 16);
        let out = with_enhanced_code(line.clone());
        // Either untouched, or "NNN " + "X.Y.Z " + the rest.
        if out != line {
            prop_assert_eq!(out.len(), line.len() + 6);
            prop_assert_eq!(&out[..4], &line[..4]);
            prop_assert_eq!(&out[10..], &line[4..]);
        }
    }

    /// Target 6: Replies in the engine's shape get at most one enhanced code.
    #[test]
    fn smtp_enhanced_code_shapes(code in 0u16..1000, text in "[ -~]{0,40}", crlf in any::<bool>()) {
        let reply = format!("{code:03} {text}{}", if crlf { "\r\n" } else { "" });
        let out = with_enhanced_code(reply.clone().into_bytes());
        let again = with_enhanced_code(out.clone());
        prop_assert_eq!(&again, &out, "not idempotent for {:?}", reply);
    }

    /// Target 6: A well-formed `MAIL FROM:<local@domain> SIZE=n` round-trips.
    #[test]
    fn smtp_mail_from_round_trips(
        case in vec(any::<bool>(), 10),
        space in select(&["", " ", "  "][..]),
        local in "[A-Za-z0-9._+-]{1,20}",
        domain in "[a-z0-9-]{1,20}(\\.[a-z]{2,6}){0,2}",
        size in any::<u64>(),
        more in vec(("[A-Za-z0-9-]{1,10}", proptest::option::of("[!-<>-~]{0,10}")), 0..3),
        end in select(&["", "\r\n", "\n"][..]),
    ) {
        let mut line = format!(
            "{}{space}<{local}@{domain}> SIZE={size}",
            random_case("MAIL FROM:", &case)
        );
        for (k, v) in &more {
            line.push(' ');
            line.push_str(k);
            if let Some(v) = v {
                line.push('=');
                line.push_str(v);
            }
        }
        line.push_str(end);
        let got = parse_path(line.as_bytes(), "MAIL FROM:");
        prop_assert!(got.is_some(), "refused {:?}", line);
        let got = got.unwrap();
        prop_assert_eq!(&got.address, &format!("{local}@{domain}"));
        let size = size.to_string();
        prop_assert_eq!(got.param("SIZE"), Some(Some(size.as_str())));
        prop_assert_eq!(got.params.len(), 1 + more.len());
    }
}

// ---------------------------------------------------------------------------
// 7. The bounded line reader.
// ---------------------------------------------------------------------------

/// Hands out the input in the given chunk sizes; a size of 0 means "not
/// ready yet" once (the reader must cope with `Pending`); a poll after a
/// `Pending` always makes progress.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    turn: usize,
    /// The last poll said Pending: this one makes progress.
    pending: bool,
}

impl tokio::io::AsyncRead for Chunked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let size = this.sizes.get(this.turn % this.sizes.len().max(1)).copied();
        this.turn += 1;
        if size == Some(0) && !this.pending {
            this.pending = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.pending = false;
        let n = size
            .filter(|n| *n > 0)
            .unwrap_or(usize::MAX)
            .min(buf.remaining())
            .min(this.data.len() - this.pos);
        buf.put_slice(&this.data[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![
            3 => any::<u8>(),
            2 => Just(b'\n'),
            1 => Just(b'\r'),
            2 => Just(b'a'),
        ],
        0..2048,
    )
}

proptest! {
    #![proptest_config(config(512))]

    /// Target 7: Lines are bounded, reproduce the input, and TooLong/Eof are told
    /// exactly when they should be.
    #[test]
    fn smtp_read_line_is_bounded_and_faithful(
        data in stream_bytes(),
        max in prop_oneof![0usize..8, 0usize..300, Just(512), Just(1000)],
        capacity in prop_oneof![1usize..8, 1usize..300, Just(8192)],
        sizes in vec(prop_oneof![4 => 1usize..64, 1 => Just(0usize), 1 => 64usize..4096], 0..16),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let source = Chunked { data: data.clone(), pos: 0, sizes, turn: 0, pending: false };
        let mut reader = tokio::io::BufReader::with_capacity(capacity, source);
        let mut offset = 0;
        let mut steps = 0;
        loop {
            steps += 1;
            prop_assert!(steps <= data.len() + 2, "the reader does not make progress");
            let rest = &data[offset..];
            let next_line = rest.iter().position(|b| *b == b'\n').map(|i| &rest[..=i]);
            match rt.block_on(read_line(&mut reader, max)).unwrap() {
                Read::Line(line) => {
                    prop_assert!(line.len() <= max, "{} bytes > max {}", line.len(), max);
                    prop_assert_eq!(Some(&line[..]), next_line, "not the next line of the input");
                    offset += line.len();
                }
                Read::TooLong => {
                    let len = next_line.map_or(rest.len(), <[u8]>::len);
                    prop_assert!(len > max, "TooLong for a line of {} ≤ max {}", len, max);
                    break;
                }
                Read::Eof => {
                    prop_assert!(next_line.is_none(), "Eof before a whole line");
                    prop_assert!(
                        rest.len() <= max,
                        "Eof for a tail of {} > max {}",
                        rest.len(),
                        max
                    );
                    break;
                }
            }
        }
        // Reading on after TooLong (or at Eof) never panics either.
        for _ in 0..4 {
            let _ = rt.block_on(read_line(&mut reader, max));
        }
    }
}

// ---------------------------------------------------------------------------
// 8. Bounce detection.
// ---------------------------------------------------------------------------

fn dsn_address() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Za-z0-9.+-]{1,10}@[A-Za-z0-9.-]{1,12}",
        1 => "\\PC{0,20}",
        1 => Just(String::new()),
    ]
}

/// One field line of a delivery-status part, well-formed or not.
fn dsn_field() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        4 => select(&[
            "Final-Recipient",
            "Original-Recipient",
            "Action",
            "Status",
            "Diagnostic-Code",
            "Remote-MTA",
            "X-Actual-Recipient",
            "Reporting-MTA",
            "Arrival-Date",
        ][..])
        .prop_map(String::from),
        1 => "[A-Za-z-]{0,20}",
    ];
    let value = prop_oneof![
        2 => (select(&["rfc822; ", "RFC822;", "utf-8; ", "x-bogus;", ""][..]), dsn_address())
            .prop_map(|(kind, a)| format!("{kind}{a}")),
        2 => select(&["failed", "delayed", "relayed", "expanded", "FAILED", "x", ""][..])
            .prop_map(String::from),
        2 => "[0-9]{0,2}\\.[0-9]{0,4}\\.[0-9]{0,4}( \\([ -~]{0,10}\\))?",
        1 => ("smtp; [0-9]{3} ", "[ -~]{0,80}", 0usize..40)
            .prop_map(|(head, tail, n)| format!("{head}{}", tail.repeat(n))),
        1 => "\\PC{0,60}",
        1 => folded_value().prop_map(|v| String::from_utf8_lossy(&v).into_owned()),
    ];
    (name, value).prop_map(|(n, v)| format!("{n}: {v}"))
}

/// A well-formed per-recipient block, with a random field added.
fn dsn_recipient() -> impl Strategy<Value = Vec<String>> {
    (
        dsn_address(),
        proptest::option::of(dsn_address()),
        select(&["failed", "delayed", "delivered", "relayed", "expanded"][..]),
        "[245][.][0-9][.][0-9]{1,2}",
        proptest::option::of("[ -~]{0,700}"),
        dsn_field(),
    )
        .prop_map(|(to, orig, action, status, diag, extra)| {
            let mut block = vec![format!("Final-Recipient: rfc822; {to}")];
            if let Some(o) = orig {
                block.push(format!("Original-Recipient: rfc822;{o}"));
            }
            block.push(format!("Action: {action}"));
            block.push(format!("Status: {status}"));
            if let Some(d) = diag {
                block.push(format!("Diagnostic-Code: smtp; 550 {d}"));
            }
            block.push(extra);
            block
        })
}

/// Lines of a bounce's human-readable text, in the styles the heuristics read.
fn bounce_text_line() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => select(&[
            "This is the mail system at host mx.example.",
            "I'm sorry to have to inform you that your message could not be delivered.",
            "Delivery to the following recipient failed permanently:",
            "Your message could not be delivered to one or more recipients.",
            "This message was created automatically by mail delivery software.",
            "A message that you sent could not be delivered to one or more of its recipients.",
            "Delivery has been delayed; the system will keep trying.",
            "--- Below this line is a copy of the message.",
            "------ This is a copy of the message, including all the headers. ------",
            "----- Original message -----",
            "Hi. This is the qmail-send program at mx.example.",
            "The following addresses had permanent fatal errors",
            "",
        ][..])
        .prop_map(String::from),
        2 => (dsn_address(), "[245][0-9]{2}", "[ -~]{0,40}")
            .prop_map(|(a, code, why)| format!("<{a}>: host said: {code} {why}")),
        1 => dsn_address().prop_map(|a| format!("    {a}")),
        1 => "<[a-z0-9.]{0,10}@[a-z0-9.]{0,10}>".prop_map(|id| format!("Message-ID: {id}")),
        1 => ticket().prop_map(|t| format!("X-Postdesk-Ticket: {t}")),
        1 => dsn_field(),
        1 => "\\PC{0,80}",
    ]
}

fn bounce_subject() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(&[
            "Undelivered Mail Returned to Sender",
            "Mail delivery failed: returning message to sender",
            "Delivery Status Notification (Failure)",
            "Delivery Status Notification (Delay)",
            "Undeliverable: hello",
            "failure notice",
            "Returned mail: see transcript for details",
            "Warning: could not send message for past 4 hours",
            "Out of office",
            "Read: hello",
        ][..])
        .prop_map(String::from),
        1 => "\\PC{0,40}",
    ]
}

#[derive(Debug, Clone)]
struct BounceShape {
    from: &'static str,
    subject: String,
    multipart: bool,
    report_type: &'static str,
    text: Vec<String>,
    status_type: &'static str,
    per_message: Vec<String>,
    recipients: Vec<Vec<String>>,
    returned_type: &'static str,
    returned: Vec<String>,
    eol: &'static str,
    close: bool,
}

impl BounceShape {
    fn render(&self) -> Vec<u8> {
        let eol = self.eol;
        let mut m = format!(
            "From: {}{eol}Subject: {}{eol}Message-ID: <bounce@mx.example>{eol}",
            self.from, self.subject
        );
        if !self.multipart {
            m.push_str(&format!("Content-Type: text/plain{eol}{eol}"));
            m.push_str(&self.text.join(eol));
            return m.into_bytes();
        }
        m.push_str(&format!(
            "MIME-Version: 1.0{eol}\
             Content-Type: multipart/report; report-type={}; boundary=\"b\"{eol}{eol}",
            self.report_type
        ));
        m.push_str(&format!(
            "--b{eol}Content-Type: text/plain{eol}{eol}{}{eol}",
            self.text.join(eol)
        ));
        m.push_str(&format!(
            "--b{eol}Content-Type: {}{eol}{eol}",
            self.status_type
        ));
        m.push_str(&self.per_message.join(eol));
        for r in &self.recipients {
            m.push_str(eol);
            m.push_str(eol);
            m.push_str(&r.join(eol));
        }
        m.push_str(&format!(
            "{eol}--b{eol}Content-Type: {}{eol}{eol}{}{eol}",
            self.returned_type,
            self.returned.join(eol)
        ));
        if self.close {
            m.push_str(&format!("--b--{eol}"));
        }
        m.into_bytes()
    }
}

/// A DSN-shaped message: `multipart/report` with a text part, a
/// delivery-status part (sometimes with hundreds of recipients) and the
/// returned message or headers; or a plain-text notice.
fn bounce_message() -> impl Strategy<Value = Vec<u8>> {
    let report_type = select(
        &[
            "delivery-status",
            "global-delivery-status",
            "feedback-report",
            "disposition-notification",
            "",
        ][..],
    );
    let status_type = select(
        &[
            "message/delivery-status",
            "message/global-delivery-status",
            "text/plain",
            "message/feedback-report",
        ][..],
    );
    let returned_type = select(
        &[
            "message/rfc822",
            "text/rfc822-headers",
            "message/global",
            "message/global-headers",
            "text/plain",
        ][..],
    );
    let recipients = prop_oneof![
        4 => vec(prop_oneof![dsn_recipient(), vec(dsn_field(), 0..6)], 0..6),
        1 => vec(prop_oneof![dsn_recipient(), vec(dsn_field(), 2..4)], 190..260),
    ];
    let from = select(
        &[
            "MAILER-DAEMON@mx.example",
            "postmaster@example.com",
            "Mail Delivery System <MAILER-DAEMON@mx.example>",
            "bob@example.com",
            "<>",
            "",
        ][..],
    );
    (
        (
            from,
            bounce_subject(),
            prop::bool::weighted(0.7),
            report_type,
        ),
        (
            vec(bounce_text_line(), 0..30),
            status_type,
            vec(dsn_field(), 0..4),
            recipients,
        ),
        (
            returned_type,
            vec(bounce_text_line(), 0..10),
            select(&["\r\n", "\r\n", "\n"][..]),
            prop::bool::weighted(0.8),
        ),
    )
        .prop_map(
            |(
                (from, subject, multipart, report_type),
                (text, status_type, per_message, recipients),
                (returned_type, returned, eol, close),
            )| {
                BounceShape {
                    from,
                    subject,
                    multipart,
                    report_type,
                    text,
                    status_type,
                    per_message,
                    recipients,
                    returned_type,
                    returned,
                    eol,
                    close,
                }
                .render()
            },
        )
}

const ACTIONS: &[&str] = &["failed", "delayed", "relayed", "delivered", "expanded"];

/// Everything `detect` promises of a `Bounce`; `None` is always fine.
fn check_bounce(raw: &[u8], mail_from: &str) -> Result<(), TestCaseError> {
    let first: Option<Bounce> = release_semantics(|| bounce::detect(raw, mail_from))?;
    let again = release_semantics(|| bounce::detect(raw, mail_from))?;
    prop_assert_eq!(&first, &again, "detect is not deterministic");
    let parsed = release_semantics(|| parse(raw))?;
    let _ = maybe_bounce(&parsed, mail_from);
    let Some(b) = first else { return Ok(()) };
    prop_assert!(
        ACTIONS.contains(&b.action.as_str()),
        "action {:?}",
        b.action
    );
    prop_assert!(
        b.recipients.len() <= 200,
        "{} recipients",
        b.recipients.len()
    );
    prop_assert!(b.original_message_ids.len() <= 16);
    let mut seen = HashSet::new();
    for id in &b.original_message_ids {
        prop_assert_eq!(normalize_message_id(id), Some(id.clone()));
        prop_assert!(seen.insert(id), "duplicate id {:?}", id);
    }
    for r in &b.recipients {
        prop_assert!(
            !r.address.chars().any(|c| c.is_ascii_uppercase()),
            "{:?}",
            r.address
        );
        if let Some(d) = &r.diagnostic {
            let n = d.chars().count();
            prop_assert!(n <= MAX_DIAGNOSTIC_CHARS, "{} chars", n);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(128))]

    /// Target 8: `bounce::detect` on arbitrary bytes, hostile MIME and DSN-shaped
    /// messages: no panic, deterministic, and the `Bounce` keeps its limits.
    #[test]
    fn bounce_detect_never_panics(
        raw in prop_oneof![
            1 => vec(any::<u8>(), 0..4096),
            2 => hostile_message(),
            4 => bounce_message(),
            1 => (bounce_message(), mutations()).prop_map(|(m, muts)| mutate(m, &muts)),
        ],
        from in prop_oneof![Just(String::new()), mail_from()],
    ) {
        check_bounce(&raw, &from)?;
    }
}
