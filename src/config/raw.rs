//! The file as written: serde structs mirroring SPEC §2 key for key, and the
//! walk over the spanned document that finds every unknown key.
//!
//! PURE: works on the parsed document (`toml::de::DeTable`, which keeps the
//! byte span of every key and value). Every field is optional here, so that a
//! missing key becomes a problem with a helpful message (or a default) in
//! `validate`, never a bare serde error. Fields whose position a problem may
//! need to point at are `Spanned`.
//!
//! Closed sets (`source`, `transport`, `reply_to_closed`) are plain strings
//! here and parsed in `validate`, so that a typo in one gets our message
//! (`unknown source "sms" (known: email, chat, messenger)`) and does not
//! stop the rest of its table from being checked.
//!
//! Unknown keys are *not* rejected by serde (`deny_unknown_fields` stops at
//! the first one); instead [`check_unknown_keys`] walks the document against
//! the field lists of these structs — taken from serde itself by
//! [`fields`], so the two can never drift apart — and reports them all.

use std::collections::BTreeSet;
use std::ops::Range;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A string value with its position in the file.
pub(super) type Str = Spanned<String>;

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a table: [server]")]
pub(super) struct RawServer {
    pub hostname: Option<Str>,
    pub listen: Option<Spanned<Vec<Str>>>,
    pub max_message_size: Option<Spanned<RawSize>>,
    pub max_sessions: Option<Spanned<usize>>,
    pub max_sessions_per_client: Option<Spanned<usize>>,
    pub data_dir: Option<Str>,
    pub admin_socket: Option<Str>,
    pub templates: Option<Str>,
    pub store_cache: Option<Spanned<RawSize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a table: [outbound]")]
pub(super) struct RawOutbound {
    pub transport: Option<Str>,
    pub dir: Option<Str>,
    pub url: Option<Str>,
    pub username: Option<Str>,
    pub password_file: Option<Str>,
    pub from: Option<Str>,
    pub subject_tag: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a table: [branding]")]
pub(super) struct RawBranding {
    pub enabled: Option<bool>,
    pub text: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a table: [limits]")]
pub(super) struct RawLimits {
    pub auto_replies_per_contact_per_hour: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a table: [security]")]
pub(super) struct RawSecurity {
    pub trusted_authserv_id: Option<Str>,
    pub require_auth_to_join: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a table: [storage]")]
pub(super) struct RawStorage {
    pub engine: Option<Str>,
    pub url_file: Option<Str>,
    pub node_id: Option<Str>,
    pub pool_size: Option<Spanned<usize>>,
    pub writers: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a table: [business_hours]")]
pub(super) struct RawBusinessHours {
    pub timezone: Option<Str>,
    pub days: Option<Spanned<Vec<Str>>>,
    pub hours: Option<Str>,
    pub holidays: Option<Vec<Str>>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a table: [[user]]")]
pub(super) struct RawUser {
    pub id: Option<Str>,
    pub name: Option<String>,
    pub email: Option<Str>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a table: [[team]]")]
pub(super) struct RawTeam {
    pub id: Option<Str>,
    pub members: Option<Vec<Str>>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a table: [[channel]]")]
pub(super) struct RawChannel {
    pub id: Option<Str>,
    pub addresses: Option<Spanned<Vec<Str>>>,
    pub pipeline: Option<Str>,
    pub source: Option<Str>,
    pub automation: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a table: [[pipeline]]")]
pub(super) struct RawPipeline {
    pub id: Option<Str>,
    pub name: Option<String>,
    pub statuses: Option<Spanned<Vec<Spanned<RawStatus>>>>,
    pub initial_status: Option<Str>,
    pub reply_to_closed: Option<Str>,
    pub triggers: Option<RawTriggers>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a status like { id = \"new\", name = \"New\" }")]
pub(super) struct RawStatus {
    pub id: Option<Str>,
    pub name: Option<String>,
    pub closed: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a table: [pipeline.triggers]")]
pub(super) struct RawTriggers {
    pub email_sent_to_customer: Option<Spanned<RawTrigger>>,
    pub customer_replied: Option<Spanned<RawTrigger>>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a trigger like { enabled = true, set_status = \"waiting_on_us\" }")]
pub(super) struct RawTrigger {
    pub enabled: Option<bool>,
    pub set_status: Option<Str>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a table: [[workflow]]")]
pub(super) struct RawWorkflow {
    pub id: Option<Str>,
    pub pipeline: Option<Str>,
    pub enroll: Option<Spanned<RawEnroll>>,
    pub reenroll: Option<bool>,
    pub enabled: Option<bool>,
    pub actions: Option<Vec<Spanned<RawAction>>>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "an enrollment like { status = \"new\" } or { source = \"chat\" }")]
pub(super) struct RawEnroll {
    pub status: Option<Str>,
    pub source: Option<Str>,
}

#[derive(Debug, Deserialize)]
#[serde(
    expecting = "an action like { send_email = \"ticket_received\" }, { notify = { team = \"tier1\" } } or { set_status = \"closed\" }"
)]
pub(super) struct RawAction {
    pub send_email: Option<Str>,
    pub notify: Option<Spanned<RawNotify>>,
    pub set_status: Option<Str>,
    pub comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    expecting = "a notify target like { team = \"tier1\" }, { user = \"alice\" } or { owner = true }"
)]
pub(super) struct RawNotify {
    pub team: Option<Str>,
    pub user: Option<Str>,
    pub owner: Option<Spanned<bool>>,
}

/// A size as written: a number of bytes, or a string with a unit ("25MiB").
/// Parsed by `validate::parse_size`, so a bad unit is a problem with our
/// own message rather than serde's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RawSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size like \"25MiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                i64::try_from(v)
                    .map(RawSize::Bytes)
                    .map_err(|_| E::custom("size is too large"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// The top-level keys: the sections of SPEC §2.
pub(super) const TOP_LEVEL: &[&str] = &[
    "server",
    "outbound",
    "branding",
    "limits",
    "security",
    "storage",
    "business_hours",
    "user",
    "team",
    "channel",
    "pipeline",
    "workflow",
];

/// The keys serde knows for struct `T`, in declaration order.
///
/// Asks `T`'s derived `Deserialize` to deserialize from a deserializer that
/// only records the field list handed to `deserialize_struct`.
pub(super) fn fields<T: de::DeserializeOwned>() -> &'static [&'static str] {
    let mut names: &'static [&'static str] = &[];
    // The capture always "fails" after recording; the error carries nothing.
    let _ = T::deserialize(FieldNames(&mut names));
    names
}

struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("fields captured"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// An unknown key: where it is, and the message to report.
pub(super) struct UnknownKey {
    pub span: Range<usize>,
    pub message: String,
}

/// Every key the file has that no struct knows, in any section, nested
/// tables included. Values of the wrong type are not descended into (serde
/// reports those).
pub(super) fn check_unknown_keys(root: &DeTable<'_>) -> Vec<UnknownKey> {
    let mut out = Vec::new();
    keys(&mut out, root, TOP_LEVEL, "at the top level");
    for (name, known) in [
        ("server", fields::<RawServer>()),
        ("outbound", fields::<RawOutbound>()),
        ("branding", fields::<RawBranding>()),
        ("limits", fields::<RawLimits>()),
        ("security", fields::<RawSecurity>()),
        ("storage", fields::<RawStorage>()),
        ("business_hours", fields::<RawBusinessHours>()),
    ] {
        if let Some(table) = table_at(root, name) {
            keys(&mut out, table, known, &format!("in [{name}]"));
        }
    }
    for (name, known) in [
        ("user", fields::<RawUser>()),
        ("team", fields::<RawTeam>()),
        ("channel", fields::<RawChannel>()),
    ] {
        for table in tables_in(root, name) {
            keys(&mut out, table, known, &format!("in [[{name}]]"));
        }
    }
    for pipeline in tables_in(root, "pipeline") {
        keys(
            &mut out,
            pipeline,
            fields::<RawPipeline>(),
            "in [[pipeline]]",
        );
        for status in tables_in(pipeline, "statuses") {
            keys(
                &mut out,
                status,
                fields::<RawStatus>(),
                "in a pipeline status",
            );
        }
        if let Some(triggers) = table_at(pipeline, "triggers") {
            let known = fields::<RawTriggers>();
            keys(&mut out, triggers, known, "in [pipeline.triggers]");
            for name in known {
                if let Some(trigger) = table_at(triggers, name) {
                    let section = format!("in [pipeline.triggers.{name}]");
                    keys(&mut out, trigger, fields::<RawTrigger>(), &section);
                }
            }
        }
    }
    for workflow in tables_in(root, "workflow") {
        keys(
            &mut out,
            workflow,
            fields::<RawWorkflow>(),
            "in [[workflow]]",
        );
        if let Some(enroll) = table_at(workflow, "enroll") {
            keys(
                &mut out,
                enroll,
                fields::<RawEnroll>(),
                "in a workflow's enroll",
            );
        }
        for action in tables_in(workflow, "actions") {
            keys(
                &mut out,
                action,
                fields::<RawAction>(),
                "in a workflow action",
            );
            if let Some(notify) = table_at(action, "notify") {
                keys(
                    &mut out,
                    notify,
                    fields::<RawNotify>(),
                    "in a notify action",
                );
            }
        }
    }
    out
}

fn keys(out: &mut Vec<UnknownKey>, table: &DeTable<'_>, known: &[&str], section: &str) {
    for (key, _) in table.iter() {
        let name: &str = key.get_ref();
        if known.contains(&name) {
            continue;
        }
        let message = if section == "in [outbound]" && name == "password" {
            "passwords are never written inline: put the password in a file and set \
             password_file to its path"
                .to_owned()
        } else {
            format!(
                "unknown key \"{name}\" {section} (known: {})",
                known.join(", ")
            )
        };
        out.push(UnknownKey {
            span: key.span(),
            message,
        });
    }
}

fn table_at<'a, 'i>(table: &'a DeTable<'i>, key: &str) -> Option<&'a DeTable<'i>> {
    match table.get(key).map(|v| v.get_ref()) {
        Some(DeValue::Table(t)) => Some(t),
        _ => None,
    }
}

fn tables_in<'a, 'i>(table: &'a DeTable<'i>, key: &str) -> impl Iterator<Item = &'a DeTable<'i>> {
    let items = match table.get(key).map(|v| v.get_ref()) {
        Some(DeValue::Array(items)) => Some(items.iter()),
        _ => None,
    };
    items
        .into_iter()
        .flatten()
        .filter_map(|v| match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        })
}

/// The dotted path (`statuses[1].closed`) of the deepest key whose key or
/// value span contains `span`, or `None` if no key does. Used to name the
/// key a serde error is about.
pub(super) fn path_at(value: &DeValue<'_>, span: &Range<usize>) -> Option<String> {
    let inside = |outer: Range<usize>| outer.start <= span.start && span.end <= outer.end;
    match value {
        DeValue::Table(table) => {
            for (key, val) in table.iter() {
                let name: &str = key.get_ref();
                if let Some(sub) = path_at(val.get_ref(), span) {
                    let sep = if sub.starts_with('[') { "" } else { "." };
                    return Some(format!("{name}{sep}{sub}"));
                }
                if inside(key.span()) || inside(val.span()) {
                    return Some(name.to_owned());
                }
            }
            None
        }
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(sub) = path_at(item.get_ref(), span) {
                    let sep = if sub.starts_with('[') { "" } else { "." };
                    return Some(format!("[{i}]{sep}{sub}"));
                }
                if inside(item.span()) {
                    return Some(format!("[{i}]"));
                }
            }
            None
        }
        _ => None,
    }
}

/// A table section (`[server]`): absent, not a table (already reported), or
/// read, with the span of its header.
pub(super) enum Section<T> {
    Absent,
    Broken,
    Read(Read<T>),
}

/// A section read from the file. Keys whose value had the wrong type were
/// reported, dropped and listed in `broken`, so that validation can skip
/// what depends on them (a "missing key" for a key that *is* written but
/// wrong would only be noise).
pub(super) struct Read<T> {
    pub value: T,
    pub span: Range<usize>,
    pub broken: BTreeSet<String>,
}

impl<T> Read<T> {
    pub fn broken(&self, key: &str) -> bool {
        self.broken.contains(key)
    }
}

/// One `[[item]]` of an array of tables. `value` is `None` only when the
/// item could not be read at all (already reported); `id` is read straight
/// from the document even then, so references to a broken item do not turn
/// into "unknown id" noise.
pub(super) struct Item<T> {
    pub span: Range<usize>,
    pub id: Option<String>,
    pub value: Option<T>,
    pub broken: BTreeSet<String>,
}

/// The file's sections, each read on its own.
pub(super) struct RawConfig {
    pub server: Section<RawServer>,
    pub outbound: Section<RawOutbound>,
    pub branding: Section<RawBranding>,
    pub limits: Section<RawLimits>,
    pub security: Section<RawSecurity>,
    pub storage: Section<RawStorage>,
    pub business_hours: Section<RawBusinessHours>,
    pub users: Vec<Item<RawUser>>,
    pub teams: Vec<Item<RawTeam>>,
    pub channels: Vec<Item<RawChannel>>,
    pub pipelines: Vec<Item<RawPipeline>>,
    pub workflows: Vec<Item<RawWorkflow>>,
}
