//! The `x-blocking-violations` header: one module renders and parses its grammar.
//!
//! ```text
//! x-blocking-violations: count=<n>;severity=<score>;level=<low|medium|high>[;known=<n>;new_severity=<score>];first=<event>@<site>;worst=<event>@<site>[;from=<site>]
//! ```
//!
//! `<site>` is the call site `file:line` (the user's own line that made the blocking call), or `unknown`. `from`,
//! present when it differs from `worst`'s site, is the outermost user frame of `worst`'s call chain: the handler's
//! (or task's) own line that led to a blocking call inside the app's helpers, where a `spawn_blocking` usually goes. `severity` is the request's score, the sum of the weights of
//! its calls ([`Violations::severity`]), and `level` its level. `count` counts the request's calls that weigh something
//! (consecutive identical calls, merged into one record, count one by one), plus those the per-scope cap dropped.
//! `known` and `new_severity`, present together when the baseline ([`crate::config::baseline`]) knows some of the calls:
//! how many calls it knows, and the score of the others, which the test harness compares with the fail severity.
//! `first` is the earliest of them, `worst` the one with the highest weight (the earliest among equals). Trivial
//! violations (console output) never make a header on their own and are never `first` or `worst`. Inside fields, bytes
//! outside visible ASCII and the characters `%`, `;`, `=`, `@` are percent-encoded, so the value is always a valid
//! `HeaderValue`. The whole value is at most 512 bytes: long sites are shortened from the left on character boundaries (keeping the file name
//! and line, marked with a leading `..`), never the structure.

use std::fmt;

use http::HeaderValue;
use http::header::HeaderName;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use crate::catalogue::Level;
use crate::config::baseline::Baseline;
use crate::violation::{Frame, Violation, Violations};

/// `x-blocking-violations`.
pub const X_BLOCKING_VIOLATIONS: HeaderName = HeaderName::from_static("x-blocking-violations");

/// `x-blockcop-request-id`: the id under which the layer keeps a request's full violations in this process (see
/// [`request_violations`](crate::layer::request_violations)).
pub const X_BLOCKCOP_REQUEST_ID: HeaderName = HeaderName::from_static("x-blockcop-request-id");

/// The longest header value rendered or accepted, in bytes.
pub const MAX_HEADER_LEN: usize = 512;

/// Bytes encoded inside fields: controls, space, non-ASCII (always), and the grammar's own characters.
const FIELD: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b';').add(b'=').add(b'@').add(0x7f);

/// One `<event>@<site>` entry of the header.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeaderEntry {
    /// The event, e.g. `clock_nanosleep` or `slow_poll`.
    pub event: String,
    /// The call site as `file:line`, or `unknown`.
    pub site: String,
}

impl HeaderEntry {
    /// An entry.
    pub fn new(event: impl Into<String>, site: impl Into<String>) -> HeaderEntry {
        HeaderEntry { event: event.into(), site: site.into() }
    }

    fn of(v: &Violation) -> HeaderEntry {
        let site = v.call_site.location().map_or_else(|| "unknown".to_owned(), |l| format!("{}:{}", l.file, l.line));
        HeaderEntry { event: v.event.to_owned(), site }
    }

    /// The site's file and line, when the site is not `unknown`.
    pub fn file_line(&self) -> Option<(&str, u32)> {
        let (file, line) = self.site.rsplit_once(':')?;
        Some((file, line.parse().ok()?))
    }
}

impl fmt::Display for HeaderEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", utf8_percent_encode(&self.event, FIELD), utf8_percent_encode(&self.site, FIELD))
    }
}

/// The parsed (or to-be-rendered) `x-blocking-violations` value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ViolationsHeader {
    /// How many weighted calls (and slow polls) the request had, identical calls merged into one record counted
    /// one by one, as `blockcop report`'s `calls` column counts them; plus the violations the cap dropped.
    pub count: u64,
    /// The request's score: the sum of the weights of its calls.
    pub severity: u32,
    /// The level of `severity`.
    pub level: Level,
    /// The earliest violation.
    pub first: HeaderEntry,
    /// The violation with the highest weight (the earliest among equals).
    pub worst: HeaderEntry,
    /// The outermost user frame of `worst`'s call chain as `file:line`, when it differs from `worst`'s site: the
    /// handler's own line. [`Violation::call_chain`] has the whole chain.
    pub from: Option<String>,
    /// The calls the baseline knows, when there are some.
    pub known: Option<KnownCalls>,
}

/// A request's calls the baseline knows ([`crate::config::baseline`]): the `known` and `new_severity` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KnownCalls {
    /// How many of the request's counted calls the baseline knows.
    pub calls: u64,
    /// The score of the calls it does not know: what fails a request.
    pub new_severity: u32,
}

/// Why a header value did not parse: where, and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed x-blocking-violations at byte {position}: expected {expected}")]
#[non_exhaustive]
pub struct HeaderParseError {
    /// The byte offset in the value where parsing failed.
    pub position: usize,
    /// What the grammar expected there.
    pub expected: String,
}

fn err<T>(position: usize, expected: impl Into<String>) -> Result<T, HeaderParseError> {
    Err(HeaderParseError { position, expected: expected.into() })
}

impl ViolationsHeader {
    /// The header for a request's violations; `None` when none weighs anything (and none was dropped). Trivial
    /// violations (console output) never make a header on their own, are not counted and are never `first` or
    /// `worst`; they stay in the run file.
    pub fn from_violations(violations: &Violations) -> Option<ViolationsHeader> {
        ViolationsHeader::from_violations_with(violations, &Baseline::default())
    }

    /// As [`from_violations`](Self::from_violations), with [`known`](Self::known) set when `baseline` knows some
    /// of the calls.
    pub fn from_violations_with(violations: &Violations, baseline: &Baseline) -> Option<ViolationsHeader> {
        let first = violations.weighted().next();
        let worst = violations.weighted().rev().max_by_key(|v| v.weight);
        let from = worst
            .and_then(|w| w.call_chain.first())
            .and_then(Frame::location)
            .map(|l| format!("{}:{}", l.file, l.line));
        let (first, worst) = match (first, worst) {
            (Some(f), Some(w)) => (HeaderEntry::of(f), HeaderEntry::of(w)),
            _ if violations.dropped > 0 => {
                let e = HeaderEntry::new("dropped", "unknown");
                (e.clone(), e)
            }
            _ => return None,
        };
        let from = from.filter(|f| *f != worst.site);
        let severity = violations.severity();
        let (calls, new_severity) = baseline.split(violations);
        let known = (calls > 0).then_some(KnownCalls { calls, new_severity });
        Some(ViolationsHeader {
            count: violations.weighted().map(|v| u64::from(v.count)).sum::<u64>() + violations.dropped,
            severity,
            level: Level::of(severity),
            first,
            worst,
            from,
            known,
        })
    }

    /// The score the test harness compares with the fail severity: that of the calls the baseline does not know
    /// ([`KnownCalls::new_severity`]), the whole [`severity`](Self::severity) when it knows none.
    pub fn new_severity(&self) -> u32 {
        self.known.map_or(self.severity, |k| k.new_severity)
    }

    /// Renders the value: always valid as a `HeaderValue`, at most [`MAX_HEADER_LEN`] bytes.
    pub fn render(&self) -> String {
        let mut head = format!("count={};severity={};level={}", self.count, self.severity, self.level);
        if let Some(k) = self.known {
            head.push_str(&format!(";known={};new_severity={}", k.calls, k.new_severity));
        }
        let site = |site: &str, room: usize| {
            let site = utf8_percent_encode(site, FIELD).to_string();
            if site.len() <= room { site } else { format!("..{}", cut_left(&site, room.saturating_sub(2))) }
        };
        let entry = |e: &HeaderEntry, budget: usize| {
            let event = utf8_percent_encode(&e.event, FIELD).to_string();
            let event = cut_left(&event, budget / 2).to_owned();
            let site = site(&e.site, budget.saturating_sub(event.len() + 1));
            format!("{event}@{site}")
        };
        // ";first=" and ";worst=" take 14 bytes, ";from=" 6; the rest is shared by the entries.
        let parts = if self.from.is_some() { 3 } else { 2 };
        let budget = (MAX_HEADER_LEN - head.len() - 14 - 6 * (parts - 2)) / parts;
        let mut value = format!("{head};first={};worst={}", entry(&self.first, budget), entry(&self.worst, budget));
        if let Some(from) = &self.from {
            value.push_str(";from=");
            value.push_str(&site(from, budget));
        }
        value
    }

    /// The value as a `HeaderValue`.
    pub fn to_header_value(&self) -> HeaderValue {
        // render() only emits visible ASCII, which is always a valid header value.
        HeaderValue::from_str(&self.render()).unwrap_or_else(|_| HeaderValue::from_static("count=0"))
    }

    /// Parses a header value.
    ///
    /// Fields may come in any order; unknown fields are ignored so that newer servers stay readable.
    ///
    /// # Errors
    ///
    /// A [`HeaderParseError`] with the byte position and what was expected: for a value over 512 bytes, a byte
    /// outside visible ASCII, a field without `=`, a repeated or missing field, a number that does not parse, an
    /// unknown level or one that disagrees with the severity, an entry without `@`, or a bad percent-encoding.
    ///
    /// # Examples
    ///
    /// ```
    /// use blockcop::{Level, ViolationsHeader};
    ///
    /// let value = "count=1;severity=50;level=high;first=clock_nanosleep@src/db.rs:56;worst=clock_nanosleep@src/db.rs:56";
    /// let header = ViolationsHeader::parse(value).expect("a header blockcop wrote");
    /// assert_eq!((header.count, header.severity, header.level), (1, 50, Level::High));
    /// assert_eq!((header.worst.event.as_str(), header.worst.site.as_str()), ("clock_nanosleep", "src/db.rs:56"));
    /// ```
    pub fn parse(value: &str) -> Result<ViolationsHeader, HeaderParseError> {
        if value.len() > MAX_HEADER_LEN {
            return err(MAX_HEADER_LEN, format!("at most {MAX_HEADER_LEN} bytes (the value has {})", value.len()));
        }
        if let Some(i) = value.bytes().position(|b| !(0x21..=0x7e).contains(&b)) {
            return err(i, "visible ASCII (other bytes are percent-encoded)");
        }
        let (mut count, mut severity, mut level, mut first, mut worst) = (None, None, None, None, None);
        let (mut from, mut known, mut new_severity) = (None, None, None);
        let mut pos = 0;
        for field in value.split(';') {
            let start = pos;
            pos += field.len() + 1;
            let Some((key, raw)) = field.split_once('=') else {
                return err(start, "`key=value`");
            };
            let at = start + key.len() + 1;
            let slot_taken = |taken: bool| if taken { err(start, format!("`{key}` only once")) } else { Ok(()) };
            match key {
                "count" => {
                    slot_taken(count.is_some())?;
                    count = Some(number(raw, at, key)?);
                }
                "severity" => {
                    slot_taken(severity.is_some())?;
                    severity = Some(number(raw, at, key)?);
                }
                "level" => {
                    slot_taken(level.is_some())?;
                    level = Some(match raw.parse::<Level>() {
                        Ok(level) => level,
                        Err(_) => return err(at, "`low`, `medium` or `high`"),
                    });
                }
                "first" | "worst" => {
                    let slot = if key == "first" { &mut first } else { &mut worst };
                    slot_taken(slot.is_some())?;
                    *slot = Some(parse_entry(raw, at)?);
                }
                "from" => {
                    slot_taken(from.is_some())?;
                    from = Some(parse_site(raw, at)?);
                }
                "known" => {
                    slot_taken(known.is_some())?;
                    known = Some(number(raw, at, key)?);
                }
                "new_severity" => {
                    slot_taken(new_severity.is_some())?;
                    new_severity = Some(number(raw, at, key)?);
                }
                _ => {}
            }
        }
        let end = value.len();
        let missing = |name: &str| HeaderParseError { position: end, expected: format!("a `{name}` field") };
        let severity = severity.ok_or_else(|| missing("severity"))?;
        let level = level.ok_or_else(|| missing("level"))?;
        if level != Level::of(severity) {
            let at = value.find("level=").map_or(end, |i| i + "level=".len());
            return err(at, format!("level `{}` for severity {severity}", Level::of(severity)));
        }
        let known = match (known, new_severity) {
            (Some(calls), Some(new_severity)) => Some(KnownCalls { calls, new_severity }),
            (None, None) => None,
            (Some(_), None) => return Err(missing("new_severity` field beside the `known")),
            (None, Some(_)) => return Err(missing("known` field beside the `new_severity")),
        };
        Ok(ViolationsHeader {
            count: count.ok_or_else(|| missing("count"))?,
            severity,
            level,
            first: first.ok_or_else(|| missing("first"))?,
            worst: worst.ok_or_else(|| missing("worst"))?,
            from,
            known,
        })
    }
}

impl fmt::Display for ViolationsHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::str::FromStr for ViolationsHeader {
    type Err = HeaderParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ViolationsHeader::parse(s)
    }
}

/// A numeric field's value; `at` is its byte offset in the value.
fn number<T: std::str::FromStr>(raw: &str, at: usize, key: &str) -> Result<T, HeaderParseError> {
    raw.parse().or_else(|_| err(at, format!("a whole number for `{key}`")))
}

fn parse_entry(raw: &str, at: usize) -> Result<HeaderEntry, HeaderParseError> {
    let Some((event, site)) = raw.split_once('@') else {
        return err(at, "`<event>@<site>`");
    };
    if event.is_empty() {
        return err(at, "an event name before `@`");
    }
    let event = decode(event, at)?;
    let site = parse_site(site, at + raw.len() - site.len())?;
    Ok(HeaderEntry { event, site })
}

/// A percent-encoded field, decoded; `at` is its byte offset in the value.
fn decode(s: &str, at: usize) -> Result<String, HeaderParseError> {
    if let Some(i) = bad_escape(s) {
        return err(at + i, "`%` followed by two hex digits");
    }
    percent_decode_str(s).decode_utf8().map(|c| c.into_owned()).or_else(|_| err(at, "UTF-8 once decoded"))
}

/// A `<site>`: `unknown` or `file:line`, percent-encoded.
fn parse_site(raw: &str, at: usize) -> Result<String, HeaderParseError> {
    let site = decode(raw, at)?;
    if site != "unknown" {
        let ok = site.rsplit_once(':').is_some_and(|(f, l)| !f.is_empty() && l.parse::<u32>().is_ok());
        if !ok {
            return err(at, "`unknown` or `file:line`");
        }
    }
    Ok(site)
}

fn bad_escape(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (0..b.len())
        .find(|&i| b[i] == b'%' && !(i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()))
}

/// The last `max` bytes (at most) of an encoded field, starting on a character boundary of the decoded text: never
/// inside a `%XX` escape, nor at an escape that continues a multi-byte character (`%80`–`%BF`), so the kept part
/// always decodes to UTF-8.
fn cut_left(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let b = s.as_bytes();
    let mut start = s.len() - max;
    for back in 1..=2 {
        if start >= back && b[start - back] == b'%' {
            start += 3 - back;
            break;
        }
    }
    let continuation = |i: usize| {
        b.get(i) == Some(&b'%')
            && b.get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .is_some_and(|byte| byte & 0xc0 == 0x80)
    };
    while continuation(start) {
        start += 3;
    }
    &s[start.min(s.len())..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ViolationsHeader {
        ViolationsHeader {
            count: 3,
            severity: 50,
            level: Level::High,
            first: HeaderEntry::new("open64", "test-apps/notes/src/handlers.rs:41"),
            worst: HeaderEntry::new("clock_nanosleep", "test-apps/notes/src/handlers.rs:88"),
            from: None,
            known: None,
        }
    }

    #[test]
    fn known_calls_render_after_the_level_and_parse_back_only_as_a_pair() {
        let h = ViolationsHeader { known: Some(KnownCalls { calls: 2, new_severity: 10 }), ..sample() };
        let rendered = h.render();
        assert!(rendered.starts_with("count=3;severity=50;level=high;known=2;new_severity=10;first="), "{rendered}");
        assert_eq!(ViolationsHeader::parse(&rendered).unwrap(), h);
        assert_eq!(h.new_severity(), 10);
        assert_eq!(sample().new_severity(), 50);
        let half = rendered.replace(";new_severity=10", "");
        let e = ViolationsHeader::parse(&half).unwrap_err();
        assert_eq!((e.position, e.expected.as_str()), (half.len(), "a `new_severity` field beside the `known` field"));
        let e = ViolationsHeader::parse(&rendered.replace("known=2", "known=two")).unwrap_err();
        assert_eq!((e.position, e.expected.as_str()), (37, "a whole number for `known`"));
    }

    #[test]
    fn renders_the_grammar() {
        assert_eq!(
            sample().render(),
            "count=3;severity=50;level=high;first=open64@test-apps/notes/src/handlers.rs:41;\
             worst=clock_nanosleep@test-apps/notes/src/handlers.rs:88"
        );
    }

    #[test]
    fn round_trips() {
        let h = sample();
        assert_eq!(ViolationsHeader::parse(&h.render()).unwrap(), h);
        let odd = ViolationsHeader {
            count: 1,
            severity: 0,
            level: Level::Low,
            first: HeaderEntry::new("we;ird=ev@nt", "src/dir with space/é.rs:7"),
            worst: HeaderEntry::new("write", "unknown"),
            from: None,
            known: None,
        };
        let rendered = odd.render();
        assert!(rendered.contains("we%3Bird%3Dev%40nt@src/dir%20with%20space/%C3%A9.rs:7"), "{rendered}");
        assert!(HeaderValue::from_str(&rendered).is_ok());
        assert_eq!(ViolationsHeader::parse(&rendered).unwrap(), odd);
        assert_eq!(odd.first.file_line(), Some(("src/dir with space/é.rs", 7)));
        assert_eq!(odd.worst.file_line(), None);
    }

    #[test]
    fn from_names_the_handler_line_of_the_worst_call_chain() {
        let frame = |file: &str, line| crate::Frame {
            function: Some("f".into()),
            file: Some(file.into()),
            line: Some(line),
            column: Some(9),
        };
        let site = crate::SourceLocation { file: "src/db.rs".into(), line: 56, column: Some(9) };
        let mut v: Violation = crate::report::run::ViolationRecord {
            event: "pread64".into(),
            category: crate::Category::BlockingIo,
            weight: 50,
            level: Level::High,
            duration_us: 1,
            count: 1,
            detail: String::new(),
            call_site: crate::CallSite::Source(site),
            blocking_api: None,
            blocking_api_crate: None,
            stack: [].into(),
            call_chain: [frame("src/server/handlers.rs", 65), frame("src/db.rs", 56)].into(),
            stack_id: None,
            thread: None,
            stuck: None,
        }
        .to_violation();
        let h = ViolationsHeader::from_violations(&Violations { list: vec![v.clone()], dropped: 0 }).unwrap();
        assert_eq!(h.from.as_deref(), Some("src/server/handlers.rs:65"));
        let rendered = h.render();
        assert!(rendered.ends_with(";worst=pread64@src/db.rs:56;from=src/server/handlers.rs:65"), "{rendered}");
        assert_eq!(ViolationsHeader::parse(&rendered).unwrap(), h);
        // A call made by the handler itself has nothing further out to name.
        v.call_chain.remove(0);
        let h = ViolationsHeader::from_violations(&Violations { list: vec![v], dropped: 0 }).unwrap();
        assert_eq!(h.from, None);
        assert!(!h.render().contains("from="));
        let e = ViolationsHeader::parse("count=1;severity=50;level=high;first=a@unknown;worst=a@unknown;from=x")
            .unwrap_err();
        assert_eq!((e.position, e.expected.as_str()), (68, "`unknown` or `file:line`"));
        // Long sites share the 512 bytes three ways.
        let long = |name: &str| format!("{}/{name}.rs:88", "very/deep/directory".repeat(40));
        let h = ViolationsHeader {
            first: HeaderEntry::new("open64", long("first")),
            worst: HeaderEntry::new("open64", long("worst")),
            from: Some(long("from")),
            ..sample()
        };
        let back = ViolationsHeader::parse(&h.render()).unwrap();
        assert!(h.render().len() <= MAX_HEADER_LEN);
        assert!(back.from.as_deref().is_some_and(|f| f.starts_with("..") && f.ends_with("/from.rs:88")), "{back:?}");
    }

    #[test]
    fn long_sites_are_shortened_never_the_structure() {
        let long = format!("{}/handlers.rs:88", "very/deep/directory".repeat(40));
        let h = ViolationsHeader {
            first: HeaderEntry::new("open64", long.clone()),
            worst: HeaderEntry::new("clock_nanosleep", format!("{}é.rs:12", "é".repeat(200))),
            ..sample()
        };
        let rendered = h.render();
        assert!(rendered.len() <= MAX_HEADER_LEN, "{} bytes", rendered.len());
        assert!(HeaderValue::from_str(&rendered).is_ok());
        let back = ViolationsHeader::parse(&rendered).unwrap();
        assert_eq!((back.count, back.severity, back.level), (3, 50, Level::High));
        assert!(
            back.first.site.starts_with("..") && back.first.site.ends_with("/handlers.rs:88"),
            "{}",
            back.first.site
        );
        assert_eq!(back.first.file_line().map(|(_, l)| l), Some(88));
        assert!(back.worst.site.ends_with("é.rs:12"), "{}", back.worst.site);
    }

    #[test]
    fn malformed_values_say_where_and_what() {
        let cases: &[(&str, usize, &str)] = &[
            ("count=1;severity=50;level=high;first=a@unknown", 46, "a `worst` field"),
            ("count=x;severity=50;level=high;first=a@unknown;worst=a@unknown", 6, "a whole number for `count`"),
            ("count=1;severity=-1;level=high;first=a@unknown;worst=a@unknown", 17, "a whole number for `severity`"),
            ("count=1;severity=50;level=huge;first=a@unknown;worst=a@unknown", 26, "`low`, `medium` or `high`"),
            ("count=1;severity=50;level=low;first=a@unknown;worst=a@unknown", 26, "level `high` for severity 50"),
            ("count=1;severity=50;level=high;first=nosite;worst=a@unknown", 37, "`<event>@<site>`"),
            ("count=1;severity=50;level=high;first=a@src/x.rs;worst=a@unknown", 39, "`unknown` or `file:line`"),
            ("count=1;severity=50;level=high;first=a%4@unknown;worst=a@unknown", 38, "`%` followed by two hex digits"),
            ("count=1;count=2", 8, "`count` only once"),
            ("count=1;severity", 8, "`key=value`"),
            ("count=1;severity=50;level=high;first=é@unknown", 37, "visible ASCII (other bytes are percent-encoded)"),
            ("count=1 ;severity=50", 7, "visible ASCII (other bytes are percent-encoded)"),
        ];
        for (value, position, expected) in cases {
            let e = ViolationsHeader::parse(value).unwrap_err();
            assert_eq!((e.position, e.expected.as_str()), (*position, *expected), "{value}");
        }
        let e = ViolationsHeader::parse(&"a".repeat(600)).unwrap_err();
        assert_eq!(e.position, 512);
        assert_eq!(
            e.to_string(),
            "malformed x-blocking-violations at byte 512: expected at most 512 bytes (the value has 600)"
        );
    }

    #[test]
    fn non_ascii_sites_are_shortened_on_character_boundaries() {
        // Each `用` encodes as nine bytes (`%E7%94%A8`): a cut at a byte budget lands inside one most of the time.
        for n in 15..60 {
            let h = ViolationsHeader {
                first: HeaderEntry::new("open64", format!("src/{}.rs:7", "用".repeat(n))),
                worst: HeaderEntry::new("clock_nanosleep", format!("{}/é.rs:12", "ü".repeat(n * 2))),
                from: Some(format!("src/{}/h.rs:3", "日本".repeat(n))),
                ..sample()
            };
            let rendered = h.render();
            let back = ViolationsHeader::parse(&rendered).unwrap_or_else(|e| panic!("{e}: {rendered}"));
            assert!(back.first.site.ends_with("用.rs:7"), "{}", back.first.site);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        /// Whatever a violation's event and site are, the rendered header parses back: unchanged when it fits, and
        /// otherwise with each shortened site a `..`-marked suffix of the original that keeps its line.
        #[test]
        fn every_header_round_trips(
            count: u64,
            severity: u32,
            first_event in "\\PC{1,40}",
            worst_event in "[a-z_0-9]{1,20}|\\PC{1,300}",
            first_file in "\\PC{1,400}",
            worst_file in "[a-z/]{1,30}|\\PC{1,400}",
            from_file in proptest::option::of("\\PC{1,300}"),
            known in proptest::option::of((proptest::num::u64::ANY, proptest::num::u32::ANY)),
            lines: [u32; 3],
            worst_unknown: bool,
        ) {
            let worst_site = if worst_unknown { "unknown".to_owned() } else { format!("{worst_file}:{}", lines[1]) };
            let h = ViolationsHeader {
                count,
                severity,
                level: Level::of(severity),
                first: HeaderEntry::new(first_event, format!("{first_file}:{}", lines[0])),
                worst: HeaderEntry::new(worst_event, worst_site),
                from: from_file.map(|f| format!("{f}:{}", lines[2])),
                known: known.map(|(calls, new_severity)| KnownCalls { calls, new_severity }),
            };
            let rendered = h.render();
            proptest::prop_assert!(rendered.len() <= MAX_HEADER_LEN);
            proptest::prop_assert!(HeaderValue::from_str(&rendered).is_ok());
            let back = ViolationsHeader::parse(&rendered).map_err(|e| {
                proptest::test_runner::TestCaseError::fail(format!("{e}: {rendered}"))
            })?;
            proptest::prop_assert_eq!((back.count, back.severity, back.level), (h.count, h.severity, h.level));
            proptest::prop_assert_eq!(back.known, h.known);
            let kept = |original: &str, parsed: &str| {
                parsed == original
                    || parsed.strip_prefix("..").is_some_and(|tail| original.ends_with(tail) && tail.contains(':'))
            };
            for (original, parsed) in [(&h.first, &back.first), (&h.worst, &back.worst)] {
                proptest::prop_assert!(kept(&original.site, &parsed.site), "{} -> {}", original.site, parsed.site);
                proptest::prop_assert!(original.event.ends_with(&parsed.event) && !parsed.event.is_empty());
                proptest::prop_assert_eq!(
                    original.file_line().map(|(_, l)| l),
                    parsed.file_line().map(|(_, l)| l)
                );
            }
            proptest::prop_assert_eq!(h.from.is_some(), back.from.is_some());
            if let (Some(original), Some(parsed)) = (&h.from, &back.from) {
                proptest::prop_assert!(kept(original, parsed), "{} -> {}", original, parsed);
            }
        }
    }

    #[test]
    fn unknown_fields_and_any_order_are_accepted() {
        let h = ViolationsHeader::parse("worst=a@x.rs:1;future=1;first=b@unknown;level=medium;severity=10;count=2")
            .unwrap();
        assert_eq!((h.count, h.severity, h.level), (2, 10, Level::Medium));
        assert_eq!(h.first, HeaderEntry::new("b", "unknown"));
    }
}
