//! PURE: `Authentication-Results` (RFC 8601) — the parser, and the verdict
//! of the operator's own MTA on a message (SPEC §12).
//!
//! Only the topmost header carrying the trusted authserv-id counts: the
//! MTA prepends its own, and anything below it (or with another id) may have
//! been written by the sender. A parse is a real parse of the grammar —
//! comments, quoted strings, versions, `none` — never a substring test.
//!
//! Never does I/O.

/// One parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthResults {
    pub authserv_id: String,
    pub version: Option<u32>,
    /// Empty for `; none`.
    pub results: Vec<MethodResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodResult {
    /// Lower-case (`dkim`, `spf`, `dmarc`, …).
    pub method: String,
    pub version: Option<u32>,
    /// Lower-case (`pass`, `fail`, …).
    pub result: String,
    pub reason: Option<String>,
    pub props: Vec<Property>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// Lower-case (`header`, `smtp`, `policy`, `body`).
    pub ptype: String,
    /// Lower-case (`d`, `i`, `from`, `mailfrom`, …).
    pub name: String,
    /// As written (a quoted string unquoted).
    pub value: String,
}

impl MethodResult {
    fn prop(&self, ptype: &str, name: &str) -> Option<&str> {
        self.props
            .iter()
            .find(|p| p.ptype == ptype && p.name == name)
            .map(|p| p.value.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Text(String),
    Eq,
    Semi,
}

/// The header value as tokens, comments dropped; `None` for an unclosed
/// comment or quoted string.
fn lex(value: &str) -> Option<Vec<Tok>> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Tok>| {
        if !word.is_empty() {
            out.push(Tok::Text(std::mem::take(word)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '(' => {
                flush(&mut word, &mut out);
                let mut depth = 1usize;
                while depth > 0 {
                    match chars.next()? {
                        '\\' => {
                            chars.next()?;
                        }
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                }
            }
            '"' => {
                flush(&mut word, &mut out);
                let mut quoted = String::new();
                loop {
                    match chars.next()? {
                        '\\' => quoted.push(chars.next()?),
                        '"' => break,
                        c => quoted.push(c),
                    }
                }
                out.push(Tok::Text(quoted));
            }
            ';' => {
                flush(&mut word, &mut out);
                out.push(Tok::Semi);
            }
            '=' => {
                flush(&mut word, &mut out);
                out.push(Tok::Eq);
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out);
    // CFWS may stand inside `method / version` and `ptype . property`
    // (RFC 8601 appendix B.7): glue a `/` or `.` to its neighbours.
    let mut glued: Vec<Tok> = Vec::with_capacity(out.len());
    for tok in out {
        match (glued.last_mut(), tok) {
            (Some(Tok::Text(prev)), Tok::Text(next))
                if prev.ends_with(['/', '.']) || next.starts_with(['/', '.']) =>
            {
                prev.push_str(&next);
            }
            (_, tok) => glued.push(tok),
        }
    }
    Some(glued)
}

/// Parses one header value (what follows `Authentication-Results:`).
pub fn parse(value: &str) -> Option<AuthResults> {
    let toks = lex(value)?;
    let mut groups = toks.split(|t| *t == Tok::Semi);
    let head = groups.next()?;
    let (authserv_id, version) = match head {
        [Tok::Text(id)] => (id.clone(), None),
        [Tok::Text(id), Tok::Text(v)] => (id.clone(), Some(v.parse::<u32>().ok()?)),
        _ => return None,
    };
    let mut results = Vec::new();
    for group in groups {
        match group {
            // A trailing or doubled `;`, as some MTAs write.
            [] => {}
            [Tok::Text(none)] if none.eq_ignore_ascii_case("none") => {}
            [Tok::Text(method), Tok::Eq, Tok::Text(result), rest @ ..] => {
                results.push(resinfo(method, result, rest)?);
            }
            _ => return None,
        }
    }
    Some(AuthResults {
        authserv_id,
        version,
        results,
    })
}

fn resinfo(method: &str, result: &str, rest: &[Tok]) -> Option<MethodResult> {
    let (method, version) = match method.split_once('/') {
        Some((m, v)) => (m, Some(v.trim().parse::<u32>().ok()?)),
        None => (method, None),
    };
    if method.is_empty() || result.is_empty() {
        return None;
    }
    let mut out = MethodResult {
        method: method.to_ascii_lowercase(),
        version,
        result: result.to_ascii_lowercase(),
        reason: None,
        props: Vec::new(),
    };
    let mut rest = rest;
    while !rest.is_empty() {
        let [Tok::Text(key), Tok::Eq, Tok::Text(value), tail @ ..] = rest else {
            return None;
        };
        rest = tail;
        let key = key.to_ascii_lowercase();
        if key == "reason" {
            out.reason = Some(value.clone());
            continue;
        }
        let (ptype, name) = key.split_once('.').unwrap_or((key.as_str(), ""));
        out.props.push(Property {
            ptype: ptype.to_string(),
            name: name.to_string(),
            value: value.clone(),
        });
    }
    Some(out)
}

/// What the trusted MTA said about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthStatus {
    Pass,
    Fail,
    None,
}

impl AuthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthStatus::Pass => "pass",
            AuthStatus::Fail => "fail",
            AuthStatus::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: AuthStatus,
    /// The results in words, e.g. `dmarc=pass (header.from=acme.example)`.
    pub summary: String,
    /// What passed the From domain: `dmarc=pass` or
    /// `dkim=pass header.d=acme.example`.
    pub proof: Option<String>,
}

/// `headers`: the values of every `Authentication-Results` of the message,
/// topmost first. `from_domain`: the From address's domain.
pub fn verdict(headers: &[String], trusted_id: &str, from_domain: Option<&str>) -> Verdict {
    let none = |summary: String| Verdict {
        status: AuthStatus::None,
        summary,
        proof: None,
    };
    // Which header is whose is read from the authserv-id alone, so that a
    // damaged result list in the MTA's own header cannot make us skip to a
    // lower (forgeable) one.
    let ours = headers.iter().find(|h| {
        lex(h)
            .or_else(|| lex(h.split(';').next().unwrap_or_default()))
            .and_then(|t| match t.first() {
                Some(Tok::Text(id)) => Some(id.eq_ignore_ascii_case(trusted_id)),
                _ => None,
            })
            .unwrap_or(false)
    });
    let Some(header) = ours else {
        return none(format!("no Authentication-Results from {trusted_id}"));
    };
    // The MTA's own header that does not parse: trust nothing below it.
    let Some(parsed) = parse(header) else {
        return none(format!(
            "the Authentication-Results of {trusted_id} could not be parsed"
        ));
    };
    // RFC 8601 §2.2: a version we do not know is a header we cannot read.
    if parsed.version.is_some_and(|v| v != 1) {
        return none(format!(
            "the Authentication-Results of {trusted_id} has an unknown version"
        ));
    }
    let summary = if parsed.results.is_empty() {
        "none".to_string()
    } else {
        parsed
            .results
            .iter()
            .map(describe)
            .collect::<Vec<_>>()
            .join("; ")
    };
    let results = &parsed.results;
    let of = |m: &'static str| results.iter().filter(move |r| r.method == m);
    let aligned = |r: &MethodResult| {
        let d = r.prop("header", "d").or_else(|| {
            r.prop("header", "i")
                .and_then(|i| i.rsplit_once('@').map(|x| x.1))
        });
        match (d, from_domain) {
            (Some(d), Some(f)) => aligned(d, f),
            _ => false,
        }
    };
    // A dmarc pass counts for the From domain we read (a message with two
    // From headers may have had the other one checked).
    let dmarc_for_from = |r: &MethodResult| match (r.prop("header", "from"), from_domain) {
        (Some(checked), Some(f)) => checked.trim().eq_ignore_ascii_case(f.trim()),
        (Some(_), None) => false,
        (None, _) => true,
    };
    let proof = if of("dmarc").any(|r| r.result == "pass" && dmarc_for_from(r)) {
        Some("dmarc=pass".to_string())
    } else {
        of("dkim")
            .find(|r| r.result == "pass" && aligned(r))
            .map(|r| match r.prop("header", "d") {
                Some(d) => format!("dkim=pass header.d={d}"),
                None => format!(
                    "dkim=pass header.i={}",
                    r.prop("header", "i").unwrap_or_default()
                ),
            })
    };
    let failed = |r: &MethodResult| r.result == "fail" || r.result == "permerror";
    let status = if proof.is_some() {
        AuthStatus::Pass
    } else if of("dmarc").any(failed)
        || (of("dmarc").next().is_none()
            && (of("dkim").any(|r| failed(r) && aligned(r))
                || of("spf").any(|r| r.result == "fail")))
    {
        AuthStatus::Fail
    } else {
        AuthStatus::None
    };
    Verdict {
        status,
        summary,
        proof,
    }
}

/// Relaxed alignment without a public-suffix list: the same domain, or one
/// a subdomain of the other.
fn aligned(d: &str, from: &str) -> bool {
    let (d, from) = (
        d.trim().to_ascii_lowercase(),
        from.trim().to_ascii_lowercase(),
    );
    // A bare top-level domain (`d=com`, `d=example`) aligns with nothing.
    if d.is_empty() || from.is_empty() || !d.contains('.') || !from.contains('.') {
        return false;
    }
    d == from || from.ends_with(&format!(".{d}")) || d.ends_with(&format!(".{from}"))
}

fn describe(r: &MethodResult) -> String {
    let props: Vec<String> = r
        .props
        .iter()
        .filter(|p| !(p.ptype == "header" && p.name == "b"))
        .map(|p| format!("{}.{}={}", p.ptype, p.name, p.value))
        .collect();
    if props.is_empty() {
        format!("{}={}", r.method, r.result)
    } else {
        format!("{}={} ({})", r.method, r.result, props.join(" "))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn check(value: &str, expect: Option<(&str, &[(&str, &str)])>) {
        let got = parse(value);
        let got = got.as_ref().map(|a| {
            (
                a.authserv_id.as_str(),
                a.results
                    .iter()
                    .map(|r| (r.method.as_str(), r.result.as_str()))
                    .collect::<Vec<_>>(),
            )
        });
        let expect = expect.map(|(id, rs)| (id, rs.to_vec()));
        assert_eq!(got, expect, "{value}");
    }

    #[test]
    fn rfc8601_appendix_b_examples() {
        // B.2: nothing done.
        check("example.org 1; none", Some(("example.org", &[])));
        // B.3: SPF.
        check(
            "example.com; spf=pass smtp.mailfrom=example.net",
            Some(("example.com", &[("spf", "pass")])),
        );
        // B.4: SMTP AUTH, with a comment.
        check(
            "example.com; auth=pass (cram-md5) smtp.auth=sender@example.net; spf=pass smtp.mailfrom=example.net",
            Some(("example.com", &[("auth", "pass"), ("spf", "pass")])),
        );
        // B.5: several headers' worth; one with a version.
        check(
            "example.com; sender-id=fail header.from=example.com; dkim=pass (good signature) header.d=example.com",
            Some(("example.com", &[("sender-id", "fail"), ("dkim", "pass")])),
        );
        check(
            "example.com; iprev=pass policy.iprev=192.0.2.200",
            Some(("example.com", &[("iprev", "pass")])),
        );
        // B.6: DKIM with header.i and a reason.
        let a = parse("mail-router.example.net; dkim=pass (good signature) header.d=newyork.example.com header.b=oINEO8hg; dkim=fail (bad signature) header.d=newyork.example.com header.b=EToRSuvU").unwrap();
        assert_eq!(a.results.len(), 2);
        assert_eq!(
            a.results[0].prop("header", "d"),
            Some("newyork.example.com")
        );
        // B.7: comments everywhere and a version on the method.
        let a = parse("foo.example.net (foobar) 1 (baz); dkim (Because I like it) / 1 (One yay) = (wait for it) fail policy (A dot can go here) . (like that) expired (this surprised me) = (as I wasn't expecting it) 1362471462").unwrap();
        assert_eq!(a.results[0].version, Some(1));
        assert_eq!(a.results[0].prop("policy", "expired"), Some("1362471462"));
        assert_eq!(a.authserv_id, "foo.example.net");
        assert_eq!(a.version, Some(1));
        assert_eq!(a.results[0].method, "dkim");
        assert_eq!(a.results[0].result, "fail");
    }

    #[test]
    fn quoted_strings_case_reasons_and_broken_values() {
        let a = parse(r#"MX.Acme.Example; DKIM=Pass reason="good sig; really" header.d="acme.example" header.i=@acme.example;"#).unwrap();
        assert_eq!(a.authserv_id, "MX.Acme.Example");
        assert_eq!(a.results[0].method, "dkim");
        assert_eq!(a.results[0].result, "pass");
        assert_eq!(a.results[0].reason.as_deref(), Some("good sig; really"));
        assert_eq!(a.results[0].prop("header", "i"), Some("@acme.example"));
        for broken in [
            "",
            "; dkim=pass",
            "mx (unclosed; dkim=pass",
            "mx; dkim=\"pass",
            "mx; dkim pass",
            "mx; dkim=pass header.d",
            "mx one two; none",
            "mx; dkim/x=pass",
        ] {
            assert_eq!(parse(broken), None, "{broken:?}");
        }
    }

    #[test]
    fn never_panics_on_mangled_values() {
        let seeds = [
            "mx.acme.example; dkim=pass (sig) header.d=acme.example; dmarc=pass header.from=acme.example",
            "a (b (c \\) d) e) 1; spf=fail smtp.mailfrom=\"x\\\"y\"@z",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for seed in seeds {
            let bytes: Vec<char> = seed.chars().collect();
            for _ in 0..2000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let cut = (x as usize) % (bytes.len() + 1);
                let mut s: String = bytes[..cut].iter().collect();
                s.push(['(', ')', '"', '\\', ';', '=', 'é', ' '][(x >> 20) as usize % 8]);
                s.extend(&bytes[cut..]);
                let _ = parse(&s);
                let _ = verdict(&[s], "mx.acme.example", Some("acme.example"));
            }
        }
    }

    fn v(headers: &[&str], from: &str) -> (AuthStatus, Option<String>) {
        let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
        let got = verdict(&headers, "mx.acme.example", Some(from));
        (got.status, got.proof)
    }

    #[test]
    fn only_the_topmost_header_of_the_trusted_id_counts() {
        use AuthStatus::*;
        let ours_fail = "mx.acme.example; dmarc=fail header.from=acme.example";
        let forged_pass = "mx.acme.example; dmarc=pass header.from=acme.example";
        let other_pass = "evil.example; dmarc=pass header.from=acme.example";
        // A forged header below the MTA's own is ignored.
        assert_eq!(v(&[ours_fail, forged_pass], "acme.example").0, Fail);
        // Another authserv-id is ignored, even on top.
        assert_eq!(v(&[other_pass], "acme.example"), (None, Option::None));
        assert_eq!(v(&[other_pass, ours_fail], "acme.example").0, Fail);
        assert_eq!(
            v(&["MX.ACME.EXAMPLE; dmarc=pass"], "acme.example"),
            (Pass, Some("dmarc=pass".into()))
        );
        // A comment with a `;` in the MTA's authserv-id part still names it.
        assert_eq!(
            v(
                &["mx.acme.example (a; b) 1; dmarc=fail", forged_pass],
                "acme.example"
            )
            .0,
            Fail
        );
        // The MTA's own header that does not parse: no fall-through.
        assert_eq!(
            v(
                &["mx.acme.example; dmarc=\"pass", forged_pass],
                "acme.example"
            )
            .0,
            None
        );
        assert_eq!(v(&[], "acme.example").0, None);
    }

    #[test]
    fn dkim_passes_only_aligned_with_the_from_domain() {
        use AuthStatus::*;
        let dkim = |d: &str| format!("mx.acme.example; dkim=pass header.d={d} header.b=xyz");
        assert_eq!(
            v(&[&dkim("acme.example")], "acme.example"),
            (Pass, Some("dkim=pass header.d=acme.example".into()))
        );
        assert_eq!(v(&[&dkim("acme.example")], "eu.acme.example").0, Pass);
        assert_eq!(
            v(&[&dkim("evil.example")], "acme.example"),
            (None, Option::None)
        );
        assert_eq!(v(&[&dkim("notacme.example")], "acme.example").0, None);
        // Found by review: a bare TLD, a dmarc pass for another From domain,
        // an unknown header version, and header.i without header.d.
        assert_eq!(v(&[&dkim("example")], "acme.example").0, None);
        assert_eq!(
            v(
                &["mx.acme.example; dmarc=pass header.from=evil.example"],
                "acme.example"
            )
            .0,
            None
        );
        assert_eq!(
            v(&["mx.acme.example 2; dmarc=pass"], "acme.example").0,
            None
        );
        assert_eq!(
            v(
                &["mx.acme.example; dkim=pass header.i=@news.acme.example"],
                "acme.example"
            ),
            (Pass, Some("dkim=pass header.i=@news.acme.example".into()))
        );
        assert_eq!(
            v(
                &["mx.acme.example; dkim=fail header.d=acme.example"],
                "acme.example"
            )
            .0,
            Fail
        );
        assert_eq!(
            v(
                &["mx.acme.example; spf=fail smtp.mailfrom=acme.example"],
                "acme.example"
            )
            .0,
            Fail
        );
        assert_eq!(
            v(&["mx.acme.example; spf=softfail"], "acme.example").0,
            None
        );
        assert_eq!(v(&["mx.acme.example; none"], "acme.example").0, None);
        let got = verdict(
            &["mx.acme.example; dmarc=pass header.from=acme.example; spf=pass smtp.mailfrom=acme.example".into()],
            "mx.acme.example",
            Some("acme.example"),
        );
        assert_eq!(
            got.summary,
            "dmarc=pass (header.from=acme.example); spf=pass (smtp.mailfrom=acme.example)"
        );
    }
}
