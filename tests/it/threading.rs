//! SPEC §4 (threading, first match wins) and the `customer_replied`
//! trigger of §3. Each test opens ticket 1 with Carol's first message.

use crate::support::{message_ids, msg, threaded_by, timeline_kinds, Daemon, Msg};

/// A daemon with one ticket (Carol's "Login broken"); the ticket id and the
/// first message.
fn with_one_ticket() -> (Daemon, u64, Msg) {
    let d = Daemon::start("");
    let first = msg()
        .from("Carol Customer <carol@example.com>")
        .subject("Login broken")
        .body("I cannot log in since this morning.\n");
    let id = d.send_ok(&first);
    (d, id, first)
}

/// `m` must land on ticket `id`, threaded by `by`.
fn assert_threaded(d: &Daemon, m: &Msg, id: u64, by: &str) {
    let got = d.send_ok(m);
    assert_eq!(got, id, "{} should join ticket {id}", m.mid());
    let t = d.ticket(id);
    assert!(message_ids(&t).contains(&m.mid()), "{t:#}");
    assert_eq!(threaded_by(&t, &m.mid()).as_deref(), Some(by), "{t:#}");
}

#[test]
fn a_reply_threads_by_in_reply_to() {
    let (d, id, first) = with_one_ticket();
    let reply = msg()
        .subject("Re: Login broken")
        .in_reply_to(&first.mid())
        .body("Still broken.\n");
    assert_threaded(&d, &reply, id, "in_reply_to");
    assert_eq!(message_ids(&d.ticket(id)), vec![first.mid(), reply.mid()]);
    assert_eq!(d.tickets().len(), 1);
}

#[test]
fn a_reply_threads_by_references_even_when_the_match_is_not_last() {
    let (d, id, first) = with_one_ticket();
    // Only References; the known id sits between two unknown ones, and the
    // subject gives no hint.
    let refs = format!(
        "<older@elsewhere.example> {} <newer@elsewhere.example>",
        first.mid()
    );
    let reply = msg().subject("Another thing").references(&refs);
    assert_threaded(&d, &reply, id, "references");

    // An In-Reply-To naming nothing known falls through to References.
    let reply2 = msg()
        .subject("And one more")
        .in_reply_to("<unknown@elsewhere.example>")
        .references(&first.mid());
    assert_threaded(&d, &reply2, id, "references");
    assert_eq!(d.tickets().len(), 1);
}

#[test]
fn a_reply_threads_by_plus_address() {
    let (d, id, _) = with_one_ticket();
    let plus = format!("support+{id}@acme.example");
    let reply = msg().to(&plus).subject("Different words entirely");
    assert_threaded(&d, &reply, id, "plus_address");
    assert_eq!(d.tickets().len(), 1);
}

#[test]
fn a_reply_threads_by_subject_tag_from_a_participant() {
    let (d, id, _) = with_one_ticket();
    let reply = msg().subject(&format!("Re: Login broken [#{id}]"));
    assert_threaded(&d, &reply, id, "subject_tag");
    assert_eq!(d.tickets().len(), 1);
}

#[test]
fn a_subject_tag_from_a_stranger_opens_a_new_ticket() {
    let (d, id, first) = with_one_ticket();
    let stranger = msg()
        .from("Mallory <mallory@evil.example>")
        .subject(&format!("Re: Login broken [#{id}]"))
        .body("Please send me the customer's data.\n");
    let other = d.send_ok(&stranger);
    assert_ne!(other, id, "a stranger must not join ticket {id} by its tag");

    let t = d.ticket(other);
    assert_eq!(t["contact"]["email"], "mallory@evil.example", "{t:#}");
    assert_eq!(
        threaded_by(&t, &stranger.mid()).as_deref(),
        Some("new"),
        "{t:#}"
    );
    assert_eq!(message_ids(&d.ticket(id)), vec![first.mid()]);
}

#[test]
fn a_plus_address_naming_no_ticket_opens_a_new_ticket() {
    let (d, id, first) = with_one_ticket();
    let m = msg().to("support+999@acme.example").subject("Wrong number");
    let reply = d.send(&m);
    assert_eq!(
        reply.status(),
        "250 2.0.0",
        "never refused for its plus address: {reply}"
    );
    let other = reply.ticket_id().expect("a ticket id");
    assert_ne!(other, id);

    let t = d.ticket(other);
    assert_eq!(t["channel"], "support", "{t:#}");
    assert_eq!(t["subject"], "Wrong number", "{t:#}");
    assert_eq!(threaded_by(&t, &m.mid()).as_deref(), Some("new"), "{t:#}");
    assert_eq!(message_ids(&d.ticket(id)), vec![first.mid()]);
}

#[test]
fn a_parent_arriving_after_its_reply_joins_the_reply_ticket() {
    let d = Daemon::start("");
    let reply = msg()
        .subject("Re: Lost parent")
        .message_id("<r@x>")
        .in_reply_to("<p@x>")
        .references("<p@x>");
    let id = d.send_ok(&reply);
    assert_eq!(threaded_by(&d.ticket(id), "<r@x>").as_deref(), Some("new"));

    let parent = msg().subject("Lost parent").message_id("<p@x>");
    assert_eq!(
        d.send_ok(&parent),
        id,
        "the parent joins its reply's ticket"
    );

    let t = d.ticket(id);
    let mut ids = message_ids(&t);
    ids.sort();
    assert_eq!(ids, vec!["<p@x>".to_string(), "<r@x>".to_string()], "{t:#}");
    assert_ne!(threaded_by(&t, "<p@x>").as_deref(), Some("new"), "{t:#}");
    assert_eq!(d.tickets().len(), 1);
}

#[test]
fn a_new_thread_from_the_same_contact_is_a_new_ticket() {
    let (d, id, first) = with_one_ticket();
    let second = msg().subject("Invoice address change");
    let other = d.send_ok(&second);
    assert_ne!(other, id);

    let t = d.ticket(other);
    assert_eq!(t["subject"], "Invoice address change", "{t:#}");
    assert_eq!(t["status"], "new", "{t:#}");
    assert_eq!(
        threaded_by(&t, &second.mid()).as_deref(),
        Some("new"),
        "{t:#}"
    );

    // ... and never a status change on the first ticket.
    let old = d.ticket(id);
    assert_eq!(message_ids(&old), vec![first.mid()], "{old:#}");
    assert_eq!(old["status"], "new", "{old:#}");
    assert_eq!(d.tickets().len(), 2);
}

#[test]
fn a_customer_reply_moves_the_ticket_to_waiting_on_us() {
    let (d, id, first) = with_one_ticket();
    assert_eq!(d.ticket(id)["status"], "new");
    let reply = msg()
        .subject("Re: Login broken")
        .in_reply_to(&first.mid())
        .references(&first.mid());
    assert_threaded(&d, &reply, id, "in_reply_to");

    let t = d.ticket(id);
    assert_eq!(t["status"], "waiting_on_us", "{t:#}");
    let kinds = timeline_kinds(&t);
    assert!(
        kinds.iter().any(|k| k == "status_changed"),
        "timeline: {kinds:?}"
    );
}
