//! `[[user]]`, `[[team]]`, `[[channel]]`, `[[pipeline]]` and `[[workflow]]`:
//! ids, uniqueness, and every reference between them.

use std::collections::HashMap;

use toml::Spanned;

use super::{known, Item, Validator};
use crate::config::raw::{
    RawAction, RawChannel, RawPipeline, RawTeam, RawTrigger, RawUser, RawWorkflow, Str,
};
use crate::config::templates::TemplateUses;
use crate::config::{
    Action, ActionKind, Channel, Enroll, NotifyTarget, Pipeline, ReplyToClosed, Source, Status,
    Team, Trigger, Triggers, User, Workflow,
};

/// Users as far as references need them.
pub(super) struct Users {
    pub(super) list: Vec<User>,
    /// Ids, including those of users that failed to deserialize.
    pub(super) known: Vec<String>,
    /// Lower-cased email → user id.
    pub(super) emails: HashMap<String, String>,
}

pub(super) struct Teams {
    pub(super) list: Vec<Team>,
    pub(super) known: Vec<String>,
}

pub(super) struct Pipelines {
    pub(super) list: Vec<Pipeline>,
    /// Every pipeline id with its status ids; `None` when the pipeline
    /// failed to deserialize (its statuses are unknown, so not checked).
    pub(super) known: Vec<(String, Option<Vec<String>>)>,
}

impl Pipelines {
    /// Checks a reference to a pipeline; returns its statuses when known.
    fn find(&self, id: &str) -> Option<Option<&[String]>> {
        self.known
            .iter()
            .find(|(p, _)| p == id)
            .map(|(_, statuses)| statuses.as_deref())
    }

    fn ids(&self) -> String {
        known(self.known.iter().map(|(id, _)| id))
    }
}

fn is_template_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

impl Validator<'_, '_> {
    pub(super) fn users(&mut self, items: Vec<Item<RawUser>>) -> Users {
        let mut out = Users {
            list: Vec::new(),
            known: Vec::new(),
            emails: HashMap::new(),
        };
        let mut seen = HashMap::new();
        for item in items {
            let Some(raw) = item.value else {
                out.known.extend(item.id);
                continue;
            };
            let id = self.id(
                "user",
                raw.id.as_ref(),
                &item.span,
                item.broken.contains("id"),
            );
            if let (Some(id), Some(span)) = (&id, raw.id.as_ref().map(|i| i.span())) {
                self.unique(&mut seen, "user id", id, span);
                if !out.known.contains(id) {
                    out.known.push(id.clone());
                }
            }
            let email = match &raw.email {
                Some(email) => {
                    let lower = email.get_ref().trim().to_ascii_lowercase();
                    if !is_address(&lower) {
                        self.cx.at(
                            email.span(),
                            format!(
                                "invalid user email \"{}\": expected local@domain",
                                email.get_ref()
                            ),
                        );
                    } else if let Some(other) = out.emails.get(&lower) {
                        self.cx.at(
                            email.span(),
                            format!("user email \"{lower}\" is already used by user \"{other}\""),
                        );
                    } else {
                        out.emails
                            .insert(lower.clone(), id.clone().unwrap_or_default());
                    }
                    lower
                }
                None if item.broken.contains("email") => String::new(),
                None => {
                    self.cx.at(
                        item.span.clone(),
                        format!("user \"{}\" needs an email", id.as_deref().unwrap_or("")),
                    );
                    String::new()
                }
            };
            if let Some(id) = id {
                out.list.push(User {
                    name: raw.name.unwrap_or_else(|| id.clone()),
                    id,
                    email,
                });
            }
        }
        out
    }

    pub(super) fn teams(&mut self, items: Vec<Item<RawTeam>>, users: &[String]) -> Teams {
        let mut out = Teams {
            list: Vec::new(),
            known: Vec::new(),
        };
        let mut seen = HashMap::new();
        for item in items {
            let Some(raw) = item.value else {
                out.known.extend(item.id);
                continue;
            };
            let id = self.id(
                "team",
                raw.id.as_ref(),
                &item.span,
                item.broken.contains("id"),
            );
            if let (Some(id), Some(span)) = (&id, raw.id.as_ref().map(|i| i.span())) {
                self.unique(&mut seen, "team id", id, span);
                if !out.known.contains(id) {
                    out.known.push(id.clone());
                }
            }
            let mut members = Vec::new();
            for member in raw.members.unwrap_or_default() {
                if !users.contains(member.get_ref()) {
                    self.cx.at(
                        member.span(),
                        format!(
                            "unknown user \"{}\" (known: {})",
                            member.get_ref(),
                            known(users)
                        ),
                    );
                }
                members.push(member.into_inner());
            }
            if let Some(id) = id {
                out.list.push(Team { id, members });
            }
        }
        out
    }

    pub(super) fn pipelines(&mut self, items: Vec<Item<RawPipeline>>) -> Pipelines {
        let mut out = Pipelines {
            list: Vec::new(),
            known: Vec::new(),
        };
        let mut seen = HashMap::new();
        for item in items {
            let Some(raw) = item.value else {
                if let Some(id) = item.id {
                    out.known.push((id, None));
                }
                continue;
            };
            let id = self.id(
                "pipeline",
                raw.id.as_ref(),
                &item.span,
                item.broken.contains("id"),
            );
            if let (Some(id), Some(span)) = (&id, raw.id.as_ref().map(|i| i.span())) {
                self.unique(&mut seen, "pipeline id", id, span);
            }
            let label = id.clone().unwrap_or_default();

            let mut statuses = Vec::new();
            let mut status_seen = HashMap::new();
            match raw.statuses {
                None if item.broken.contains("statuses") => {}
                None => self.cx.at(
                    item.span.clone(),
                    format!("pipeline \"{label}\" needs at least one status (statuses = [ ... ])"),
                ),
                Some(list) => {
                    let list_span = list.span();
                    let list = list.into_inner();
                    if list.is_empty() {
                        self.cx.at(
                            list_span,
                            format!("pipeline \"{label}\" needs at least one status"),
                        );
                    }
                    for status in list {
                        let span = status.span();
                        let status = status.into_inner();
                        let Some(sid) = self.id("status", status.id.as_ref(), &span, false) else {
                            continue;
                        };
                        if let Some(sid_span) = status.id.as_ref().map(|i| i.span()) {
                            let line = self.cx.line(&sid_span);
                            if let Some(first) = status_seen.get(&sid) {
                                self.cx.at(
                                    sid_span,
                                    format!(
                                        "duplicate status id \"{sid}\" in pipeline \"{label}\" \
                                         (first defined on line {first})"
                                    ),
                                );
                            } else {
                                status_seen.insert(sid.clone(), line);
                            }
                        }
                        statuses.push(Status {
                            name: status.name.unwrap_or_else(|| sid.clone()),
                            id: sid,
                            closed: status.closed.unwrap_or(false),
                        });
                    }
                }
            }
            // Unknown (not empty) when the statuses were written wrongly:
            // then references to them cannot be checked.
            let status_ids: Option<Vec<String>> = (!item.broken.contains("statuses"))
                .then(|| statuses.iter().map(|s| s.id.clone()).collect());

            let initial_status = match &raw.initial_status {
                Some(s) => {
                    self.status_ref(s, &label, status_ids.as_deref());
                    s.get_ref().clone()
                }
                None => statuses.first().map(|s| s.id.clone()).unwrap_or_default(),
            };
            let reply_to_closed = match &raw.reply_to_closed {
                None => ReplyToClosed::Reopen,
                Some(r) => match r.get_ref().as_str() {
                    "reopen" => ReplyToClosed::Reopen,
                    "new_ticket" => ReplyToClosed::NewTicket,
                    other => {
                        self.cx.at(
                            r.span(),
                            format!(
                                "unknown reply_to_closed \"{other}\" (known: reopen, new_ticket)"
                            ),
                        );
                        ReplyToClosed::Reopen
                    }
                },
            };
            let triggers = raw.triggers.unwrap_or_default();
            let triggers = Triggers {
                email_sent_to_customer: self.trigger(
                    triggers.email_sent_to_customer,
                    "email_sent_to_customer",
                    &label,
                    status_ids.as_deref(),
                ),
                customer_replied: self.trigger(
                    triggers.customer_replied,
                    "customer_replied",
                    &label,
                    status_ids.as_deref(),
                ),
            };

            if let Some(id) = id {
                out.known.push((id.clone(), status_ids));
                out.list.push(Pipeline {
                    name: raw.name.unwrap_or_else(|| id.clone()),
                    id,
                    statuses,
                    initial_status,
                    reply_to_closed,
                    triggers,
                });
            }
        }
        out
    }

    /// Checks that `status` is one of `statuses` (of pipeline `pipeline`),
    /// when those are known.
    fn status_ref(&mut self, status: &Str, pipeline: &str, statuses: Option<&[String]>) {
        let Some(statuses) = statuses else { return };
        if !statuses.contains(status.get_ref()) {
            self.cx.at(
                status.span(),
                format!(
                    "unknown status \"{}\" in pipeline \"{pipeline}\" (known: {})",
                    status.get_ref(),
                    known(statuses)
                ),
            );
        }
    }

    fn trigger(
        &mut self,
        raw: Option<Spanned<RawTrigger>>,
        name: &str,
        pipeline: &str,
        statuses: Option<&[String]>,
    ) -> Trigger {
        let Some(raw) = raw else {
            return Trigger {
                enabled: false,
                set_status: None,
            };
        };
        let span = raw.span();
        let raw = raw.into_inner();
        // Writing the trigger at all means wanting it, unless it says not.
        let enabled = raw.enabled.unwrap_or(true);
        match &raw.set_status {
            Some(status) => self.status_ref(status, pipeline, statuses),
            None if enabled => self.cx.at(
                span,
                format!("trigger {name} is enabled but has no set_status"),
            ),
            None => {}
        }
        Trigger {
            enabled,
            set_status: raw.set_status.map(Spanned::into_inner),
        }
    }

    pub(super) fn channels(
        &mut self,
        items: Vec<Item<RawChannel>>,
        pipelines: &Pipelines,
        user_emails: &HashMap<String, String>,
    ) -> Vec<Channel> {
        let mut out = Vec::new();
        let mut seen = HashMap::new();
        // Lower-cased address → the channel that has it.
        let mut owners: HashMap<String, String> = HashMap::new();
        for item in items {
            let Some(raw) = item.value else { continue };
            let id = self.id(
                "channel",
                raw.id.as_ref(),
                &item.span,
                item.broken.contains("id"),
            );
            if let (Some(id), Some(span)) = (&id, raw.id.as_ref().map(|i| i.span())) {
                self.unique(&mut seen, "channel id", id, span);
            }
            let label = id.clone().unwrap_or_default();

            let mut addresses = Vec::new();
            match &raw.addresses {
                None if item.broken.contains("addresses") => {}
                None => self.cx.at(
                    item.span.clone(),
                    format!(
                        "channel \"{label}\" needs addresses, e.g. addresses = [\"support@acme.example\"]"
                    ),
                ),
                Some(list) if list.get_ref().is_empty() => self.cx.at(
                    list.span(),
                    format!("channel \"{label}\" needs at least one address"),
                ),
                Some(_) => {}
            }
            for addr in raw.addresses.iter().flat_map(|l| l.get_ref()) {
                let lower = addr.get_ref().trim().to_ascii_lowercase();
                if !is_address(&lower) {
                    self.cx.at(
                        addr.span(),
                        format!(
                            "invalid channel address \"{}\": expected local@domain, e.g. \"support@acme.example\"",
                            addr.get_ref()
                        ),
                    );
                } else if lower.split('@').next().is_some_and(|l| l.contains('+')) {
                    self.cx.at(
                        addr.span(),
                        format!(
                            "channel address \"{}\" must not contain '+' before the '@' \
                             (plus forms like support+42@acme.example are accepted automatically)",
                            addr.get_ref()
                        ),
                    );
                } else if let Some(other) = owners.get(&lower) {
                    let message = if *other == label {
                        format!("address \"{lower}\" is listed twice in channel \"{label}\"")
                    } else {
                        format!("address \"{lower}\" is already used by channel \"{other}\"")
                    };
                    self.cx.at(addr.span(), message);
                } else if let Some(user) = user_emails.get(&lower) {
                    self.cx.at(
                        addr.span(),
                        format!("channel address \"{lower}\" is also the email of user \"{user}\""),
                    );
                } else {
                    owners.insert(lower.clone(), label.clone());
                }
                addresses.push(lower);
            }

            let pipeline = match &raw.pipeline {
                Some(p) => {
                    if pipelines.find(p.get_ref()).is_none() {
                        self.cx.at(
                            p.span(),
                            format!(
                                "unknown pipeline \"{}\" (known: {})",
                                p.get_ref(),
                                pipelines.ids()
                            ),
                        );
                    }
                    p.get_ref().clone()
                }
                None if item.broken.contains("pipeline") => String::new(),
                None => {
                    self.cx.at(
                        item.span.clone(),
                        format!(
                            "channel \"{label}\" needs a pipeline (known: {})",
                            pipelines.ids()
                        ),
                    );
                    String::new()
                }
            };

            let source = raw
                .source
                .as_ref()
                .map_or(Source::Email, |s| self.source(s));

            if let Some(id) = id {
                out.push(Channel {
                    id,
                    addresses,
                    pipeline,
                    source,
                    automation: raw.automation.unwrap_or(true),
                });
            }
        }
        out
    }

    pub(super) fn workflows(
        &mut self,
        items: Vec<Item<RawWorkflow>>,
        pipelines: &Pipelines,
        users: &[String],
        teams: &[String],
        uses: &mut TemplateUses,
    ) -> Vec<Workflow> {
        let mut out = Vec::new();
        let mut seen = HashMap::new();
        for item in items {
            let Some(raw) = item.value else { continue };
            let id = self.id(
                "workflow",
                raw.id.as_ref(),
                &item.span,
                item.broken.contains("id"),
            );
            if let (Some(id), Some(span)) = (&id, raw.id.as_ref().map(|i| i.span())) {
                self.unique(&mut seen, "workflow id", id, span);
            }
            let label = id.clone().unwrap_or_default();

            // Outer None: no such pipeline; inner None: statuses unknown.
            let mut statuses: Option<Option<&[String]>> = None;
            let pipeline = match &raw.pipeline {
                Some(p) => {
                    statuses = pipelines.find(p.get_ref());
                    if statuses.is_none() {
                        self.cx.at(
                            p.span(),
                            format!(
                                "unknown pipeline \"{}\" (known: {})",
                                p.get_ref(),
                                pipelines.ids()
                            ),
                        );
                    }
                    p.get_ref().clone()
                }
                None if item.broken.contains("pipeline") => {
                    statuses = Some(None);
                    String::new()
                }
                None => {
                    self.cx.at(
                        item.span.clone(),
                        format!(
                            "workflow \"{label}\" needs a pipeline (known: {})",
                            pipelines.ids()
                        ),
                    );
                    String::new()
                }
            };

            let enroll = match raw.enroll {
                None if item.broken.contains("enroll") => Enroll {
                    status: None,
                    source: None,
                },
                None => {
                    self.cx.at(
                        item.span.clone(),
                        format!(
                            "workflow \"{label}\" needs enroll, e.g. enroll = {{ status = \"new\" }}"
                        ),
                    );
                    Enroll {
                        status: None,
                        source: None,
                    }
                }
                Some(enroll) => {
                    let span = enroll.span();
                    let enroll = enroll.into_inner();
                    if enroll.status.is_none() && enroll.source.is_none() {
                        self.cx.at(
                            span,
                            "enroll needs a status, a source, or both, e.g. { status = \"new\" }",
                        );
                    }
                    if let (Some(status), Some(known_statuses)) = (&enroll.status, statuses) {
                        self.status_ref(status, &pipeline, known_statuses);
                    }
                    Enroll {
                        source: enroll.source.as_ref().map(|s| self.source(s)),
                        status: enroll.status.map(Spanned::into_inner),
                    }
                }
            };

            let mut actions = Vec::new();
            for action in raw.actions.unwrap_or_default() {
                let known_statuses = statuses.flatten();
                if let Some(action) =
                    self.action(action, &pipeline, known_statuses, users, teams, uses)
                {
                    actions.push(action);
                }
            }

            if let Some(id) = id {
                out.push(Workflow {
                    id,
                    pipeline,
                    enroll,
                    reenroll: raw.reenroll.unwrap_or(false),
                    enabled: raw.enabled.unwrap_or(true),
                    actions,
                });
            }
        }
        out
    }

    fn source(&mut self, source: &Str) -> Source {
        match source.get_ref().as_str() {
            "email" => Source::Email,
            "chat" => Source::Chat,
            "messenger" => Source::Messenger,
            other => {
                self.cx.at(
                    source.span(),
                    format!("unknown source \"{other}\" (known: email, chat, messenger)"),
                );
                Source::Email
            }
        }
    }

    fn action(
        &mut self,
        action: Spanned<RawAction>,
        pipeline: &str,
        statuses: Option<&[String]>,
        users: &[String],
        teams: &[String],
        uses: &mut TemplateUses,
    ) -> Option<Action> {
        let span = action.span();
        let action = action.into_inner();
        let given = [
            action.send_email.is_some(),
            action.notify.is_some(),
            action.set_status.is_some(),
        ];
        match given.iter().filter(|g| **g).count() {
            0 => {
                self.cx.at(
                    span,
                    "an action needs send_email = \"TEMPLATE\", notify = { ... } or set_status = \"STATUS\"",
                );
                return None;
            }
            1 => {}
            _ => {
                self.cx.at(
                    span,
                    "an action is one of send_email, notify or set_status: split it in two",
                );
                return None;
            }
        }
        if let Some(status) = action.set_status {
            self.status_ref(&status, pipeline, statuses);
            return Some(Action {
                kind: ActionKind::SetStatus(status.into_inner()),
                comment: action.comment,
            });
        }
        let kind = match (action.send_email, action.notify) {
            (Some(_), Some(_)) | (None, None) => return None,
            (Some(name), None) => {
                if is_template_name(name.get_ref()) {
                    uses.emails.push((name.get_ref().clone(), name.span()));
                } else {
                    self.cx.at(
                        name.span(),
                        format!(
                            "invalid template name \"{}\": use letters, digits, '-' and '_' \
                             (the files are NAME.subject.hbs and NAME.text.hbs)",
                            name.get_ref()
                        ),
                    );
                }
                ActionKind::SendEmail(name.into_inner())
            }
            (None, Some(notify)) => {
                let notify_span = notify.span();
                let notify = notify.into_inner();
                uses.notify.get_or_insert(notify_span.clone());
                let given = [
                    notify.team.is_some(),
                    notify.user.is_some(),
                    notify.owner.is_some(),
                ];
                if given.iter().filter(|g| **g).count() != 1 {
                    self.cx.at(
                        notify_span,
                        "notify needs exactly one of team, user or owner, e.g. notify = { team = \"tier1\" }",
                    );
                    return None;
                }
                if let Some(team) = notify.team {
                    if !teams.contains(team.get_ref()) {
                        self.cx.at(
                            team.span(),
                            format!(
                                "unknown team \"{}\" (known: {})",
                                team.get_ref(),
                                known(teams)
                            ),
                        );
                    }
                    ActionKind::Notify(NotifyTarget::Team(team.into_inner()))
                } else if let Some(user) = notify.user {
                    if !users.contains(user.get_ref()) {
                        self.cx.at(
                            user.span(),
                            format!(
                                "unknown user \"{}\" (known: {})",
                                user.get_ref(),
                                known(users)
                            ),
                        );
                    }
                    ActionKind::Notify(NotifyTarget::User(user.into_inner()))
                } else {
                    if let Some(owner) = notify.owner.filter(|o| !*o.get_ref()) {
                        self.cx.at(
                            owner.span(),
                            "owner = false notifies nobody: write owner = true, or remove the action",
                        );
                    }
                    ActionKind::Notify(NotifyTarget::Owner)
                }
            }
        };
        Some(Action {
            kind,
            comment: action.comment,
        })
    }
}

/// `local@domain`, one '@', both sides non-empty, no spaces or brackets.
fn is_address(addr: &str) -> bool {
    match addr.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !addr
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '<' | '>' | ',' | '"'))
        }
        None => false,
    }
}
