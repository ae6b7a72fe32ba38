//! Several nodes on one PostgreSQL (SPEC §8; SCALE-OUT.md §5): what one
//! node promises, the cluster promises. Each race is made exact: one node
//! is held at a failpoint with its batch applied but not committed, the
//! other is shown blocked on its rows in `pg_stat_activity`, then the first
//! is let go.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::thread;

use serde_json::{json, Value};

use crate::support::cluster::Cluster;
use crate::support::daemon::run_cli;
use crate::support::{
    message_ids, msg, send_mail, timeline_kinds, wait_until, Msg, Reply, ACK_NEW, DEADLINE,
};

/// Sends `m` to `addr` from a thread of its own.
fn send_in_thread(addr: SocketAddr, m: &Msg) -> thread::JoinHandle<Reply> {
    let (from, rcpt, raw) = (m.env_from(), m.rcpt(), m.build());
    thread::spawn(move || send_mail(addr, &from, &rcpt, &raw))
}

fn ticket_of(r: &Reply, what: &str) -> u64 {
    match r.ticket_id() {
        Some(id) if r.code == 250 => id,
        _ => panic!("{what}: expected `250 ... ticket <id>`, got {r}"),
    }
}

fn kinds_count(t: &Value, kind: &str) -> usize {
    timeline_kinds(t).iter().filter(|k| *k == kind).count()
}

/// The pause env for node 0 only.
fn pause_node0<'a>(
    name: &'static str,
    file: &'a std::path::Path,
) -> impl Fn(usize) -> Vec<(String, String)> + 'a {
    move |i| {
        if i == 0 {
            vec![(
                "POSTDESK_FAILPOINTS".to_string(),
                format!("{name}=pause({})", file.display()),
            )]
        } else {
            Vec::new()
        }
    }
}

/// C1: a new message at node 1 (held before its commit) and its reply at
/// node 2 at the same moment: one ticket, one acknowledgement.
#[test]
fn one_thread_at_two_nodes_at_once_makes_one_ticket() {
    let pause_file = crate::support::daemon::temp_dir();
    let file = pause_file.path().join("commit");
    let Some(c) = Cluster::start(
        "one_thread_at_two_nodes_at_once_makes_one_ticket",
        2,
        ACK_NEW,
        pause_node0("store.before_commit", &file),
    ) else {
        return;
    };
    let a = msg().subject("Help");
    let b = msg()
        .subject("Re: Help")
        .in_reply_to(&a.mid())
        .references(&a.mid());
    std::fs::write(&file, "armed").unwrap();
    let ra = send_in_thread(c.node(0).smtp_addr(), &a);
    wait_paused(&file);
    let rb = send_in_thread(c.node(1).smtp_addr(), &b);
    c.wait_lock_waiters(1);
    std::fs::remove_file(&file).unwrap();
    let (ra, rb) = (ra.join().unwrap(), rb.join().unwrap());
    let (ta, tb) = (ticket_of(&ra, "A"), ticket_of(&rb, "B"));
    assert_eq!(ta, tb, "both messages on one ticket");
    let tickets = c.node(1).tickets();
    assert_eq!(tickets.len(), 1, "{tickets:#?}");
    let t = c.node(1).ticket(ta);
    assert_eq!(message_ids(&t)[0], a.mid(), "{t:#}");
    assert!(message_ids(&t).contains(&b.mid()), "{t:#}");
    assert_eq!(kinds_count(&t, "message_in"), 2, "{t:#}");
    assert_eq!(c.outbox_kind("auto_reply").len(), 1, "one acknowledgement");
}

fn wait_paused(file: &std::path::Path) {
    let mut marker = file.as_os_str().to_owned();
    marker.push(".paused");
    let marker = std::path::PathBuf::from(marker);
    wait_until(DEADLINE, "node 1 held before its commit", || {
        if marker.exists() {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
}

/// C1b: the reply commits first at one node, its parent comes to the
/// other: the parent joins the reply's ticket.
#[test]
fn a_parent_after_its_reply_at_another_node_joins_the_reply() {
    let Some(c) = Cluster::start(
        "a_parent_after_its_reply_at_another_node_joins_the_reply",
        2,
        ACK_NEW,
        |_| Vec::new(),
    ) else {
        return;
    };
    let a = msg().subject("Help");
    let b = msg().subject("Re: Help").in_reply_to(&a.mid());
    let tb = c.node(1).send_ok(&b);
    let ta = c.node(0).send_ok(&a);
    assert_eq!(ta, tb);
    assert_eq!(c.node(0).tickets().len(), 1);
}

/// C2: two replies to one ticket at two nodes at once: the rules run one
/// after the other (one status change).
#[test]
fn two_replies_at_two_nodes_change_the_status_once() {
    let pause_file = crate::support::daemon::temp_dir();
    let file = pause_file.path().join("commit");
    let Some(c) = Cluster::start(
        "two_replies_at_two_nodes_change_the_status_once",
        2,
        ACK_NEW,
        pause_node0("store.before_commit", &file),
    ) else {
        return;
    };
    let a = msg().subject("Help");
    let id = c.node(0).send_ok(&a);
    let r1 = msg().subject("Re: Help").in_reply_to(&a.mid());
    let r2 = msg().subject("Re: Help").in_reply_to(&a.mid());
    std::fs::write(&file, "armed").unwrap();
    let h1 = send_in_thread(c.node(0).smtp_addr(), &r1);
    wait_paused(&file);
    let h2 = send_in_thread(c.node(1).smtp_addr(), &r2);
    c.wait_lock_waiters(1);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(ticket_of(&h1.join().unwrap(), "r1"), id);
    assert_eq!(ticket_of(&h2.join().unwrap(), "r2"), id);
    let t = c.node(1).ticket(id);
    assert_eq!(t["status"], "waiting_on_us", "{t:#}");
    let to_us = t["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "status_changed" && e["detail"]["to"] == "waiting_on_us")
        .count();
    assert_eq!(to_us, 1, "one status change for two replies: {t:#}");
    assert_eq!(kinds_count(&t, "message_in"), 3, "{t:#}");
}

/// C3: the same message at both nodes at once (an MTA retrying after a
/// timeout): stored once, both answers name one ticket.
#[test]
fn the_same_message_at_two_nodes_at_once_is_stored_once() {
    let pause_file = crate::support::daemon::temp_dir();
    let file = pause_file.path().join("commit");
    let Some(c) = Cluster::start(
        "the_same_message_at_two_nodes_at_once_is_stored_once",
        2,
        ACK_NEW,
        pause_node0("store.before_commit", &file),
    ) else {
        return;
    };
    let a = msg().subject("Twice");
    std::fs::write(&file, "armed").unwrap();
    let h1 = send_in_thread(c.node(0).smtp_addr(), &a);
    wait_paused(&file);
    let h2 = send_in_thread(c.node(1).smtp_addr(), &a);
    c.wait_lock_waiters(1);
    std::fs::remove_file(&file).unwrap();
    let (t1, t2) = (
        ticket_of(&h1.join().unwrap(), "first"),
        ticket_of(&h2.join().unwrap(), "second"),
    );
    assert_eq!(t1, t2);
    assert_eq!(c.node(0).tickets().len(), 1);
    assert_eq!(message_ids(&c.node(0).ticket(t1))[0], a.mid());
    assert_eq!(c.sql("SELECT count(*) FROM messages WHERE ticket_id IS NOT NULL AND rec->>'direction' = 'in'").trim(), "1");
    assert_eq!(c.outbox_kind("auto_reply").len(), 1);
}

/// C4: threads of three messages, each message to a random node, in a
/// shuffled order, from 8 clients at once: every thread is one ticket with
/// exactly its messages and one acknowledgement.
#[test]
fn random_threads_at_random_nodes_each_make_one_ticket() {
    let Some(c) = Cluster::start(
        "random_threads_at_random_nodes_each_make_one_ticket",
        2,
        ACK_NEW,
        |_| Vec::new(),
    ) else {
        return;
    };
    const THREADS: usize = 40;
    let mut all: Vec<(usize, Msg)> = Vec::new();
    for t in 0..THREADS {
        // One customer per thread: the hourly limit is per contact.
        let from = format!("c{t} <c{t}@example.com>");
        let root = msg().from(&from).subject(&format!("thread {t}"));
        let second = msg()
            .from(&from)
            .subject(&format!("Re: thread {t}"))
            .in_reply_to(&root.mid())
            .references(&root.mid());
        let third = msg()
            .from(&from)
            .subject(&format!("Re: thread {t}"))
            .in_reply_to(&second.mid())
            .references(&format!("{} {}", root.mid(), second.mid()));
        all.extend([(t, root), (t, second), (t, third)]);
    }
    // A fixed shuffle (xorshift), so a failure can be replayed.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in (1..all.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        all.swap(i, j);
    }
    let addrs = [c.node(0).smtp_addr(), c.node(1).smtp_addr()];
    let jobs: Vec<(usize, Msg, SocketAddr)> = all
        .into_iter()
        .map(|(t, m)| (t, m, addrs[(next() % 2) as usize]))
        .collect();
    let queue = std::sync::Mutex::new(jobs.into_iter());
    thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| loop {
                let Some((_, m, addr)) = queue.lock().unwrap().next() else {
                    return;
                };
                let raw = m.build();
                // A 451 is retried, as an MTA would (here at once).
                for attempt in 0.. {
                    let r = send_mail(addr, &m.env_from(), &m.rcpt(), &raw);
                    if r.code == 250 {
                        break;
                    }
                    assert!(r.code == 451 && attempt < 20, "{}: {r}", m.mid());
                }
            });
        }
    });
    let tickets = c.node(0).all_tickets();
    assert_eq!(tickets.len(), THREADS, "one ticket per thread");
    let mut seen = BTreeSet::new();
    for t in &tickets {
        let id = t["id"].as_u64().unwrap();
        let detail = c.node(0).ticket(id);
        let subjects: BTreeSet<String> = detail["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["direction"] == "in")
            .map(|m| {
                m["subject"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("Re: ")
                    .to_string()
            })
            .collect();
        let ins = detail["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["direction"] == "in")
            .count();
        assert_eq!(
            ins, 3,
            "ticket {id} holds its thread's three messages: {detail:#}"
        );
        assert_eq!(
            subjects.len(),
            1,
            "ticket {id} holds one thread: {subjects:?}"
        );
        assert!(seen.insert(subjects.into_iter().next().unwrap()));
    }
    assert_eq!(
        c.outbox_kind("auto_reply").len(),
        THREADS,
        "one acknowledgement each"
    );
}

/// C5: both nodes send from the one outbox: every email exactly once.
#[test]
fn the_outbox_is_shared_and_every_email_goes_out_once() {
    let Some(c) = Cluster::start(
        "the_outbox_is_shared_and_every_email_goes_out_once",
        2,
        ACK_NEW,
        |_| Vec::new(),
    ) else {
        return;
    };
    const N: usize = 60;
    thread::scope(|s| {
        for half in 0..2 {
            let node = c.node(half);
            s.spawn(move || {
                for i in 0..N / 2 {
                    node.send_ok(
                        &msg()
                            .from(&format!("c{half}x{i}@example.com"))
                            .subject(&format!("request {half}/{i}")),
                    );
                }
            });
        }
    });
    wait_until(DEADLINE, "every acknowledgement sent", || {
        let sent = c
            .outbox_kind("auto_reply")
            .iter()
            .filter(|o| o["state"] == "sent")
            .count();
        if sent == N {
            Ok(())
        } else {
            Err(format!("{sent} of {N} sent"))
        }
    });
    let counts = c.sent_by_message_id();
    assert_eq!(counts.len(), N, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "each once: {counts:?}");
    for (i, d) in c.nodes.iter().enumerate() {
        let mine = crate::support::eml::read_dir(&d.sent_dir()).len();
        assert!(
            mine > 0,
            "node {i} sent none of the {N}: one node did all the work"
        );
    }
}

/// C6b: a node killed after claiming emails and before sending them: their
/// lease runs out and the other node sends each of them once.
#[test]
fn a_node_killed_after_claiming_leaves_its_emails_to_another() {
    let pause_file = crate::support::daemon::temp_dir();
    let file = pause_file.path().join("claim");
    let lease = |i: usize| {
        let mut env = pause_node0("outbox.after_claim", &file)(i);
        env.push(("POSTDESK_LEASE_SECS".to_string(), "2".to_string()));
        env
    };
    let Some(mut c) = Cluster::start(
        "a_node_killed_after_claiming_leaves_its_emails_to_another",
        2,
        ACK_NEW,
        lease,
    ) else {
        return;
    };
    std::fs::write(&file, "armed").unwrap();
    let id = c.node(0).send_ok(&msg().subject("Claimed, then killed"));
    wait_paused(&file);
    c.nodes[0].kill9();
    std::fs::remove_file(&file).unwrap();
    wait_until(DEADLINE, "the other node sends the acknowledgement", || {
        let sent = c
            .outbox_kind("auto_reply")
            .iter()
            .filter(|o| o["state"] == "sent")
            .count();
        if sent == 1 {
            Ok(())
        } else {
            Err(format!("{:?}", c.outbox_kind("auto_reply")))
        }
    });
    let counts = c.sent_by_message_id();
    assert_eq!(counts.values().sum::<usize>(), 1, "{counts:?}");
    assert!(crate::support::eml::read_dir(&c.node(0).sent_dir()).is_empty());
    let t = c.node(1).ticket(id);
    assert_eq!(kinds_count(&t, "email_sent"), 1, "{t:#}");
}

/// C7: the per-contact hourly limit counts across nodes.
#[test]
fn the_hourly_limit_counts_across_nodes() {
    let Some(c) = Cluster::start("the_hourly_limit_counts_across_nodes", 2, ACK_NEW, |_| {
        Vec::new()
    }) else {
        return;
    };
    thread::scope(|s| {
        for half in 0..2 {
            let node = c.node(half);
            s.spawn(move || {
                for i in 0..5 {
                    node.send_ok(
                        &msg()
                            .from("Dora <dora@example.com>")
                            .subject(&format!("topic {half}/{i}")),
                    );
                }
            });
        }
    });
    assert_eq!(
        c.outbox_kind("auto_reply").len(),
        5,
        "the limit is 5 an hour"
    );
    let suppressed: usize = c
        .node(0)
        .all_tickets()
        .iter()
        .map(|t| kinds_count(&c.node(0).ticket(t["id"].as_u64().unwrap()), "suppressed"))
        .sum();
    assert_eq!(suppressed, 5);
}

/// `health` lists the live nodes.
#[test]
fn health_lists_every_live_node() {
    let Some(c) = Cluster::start("health_lists_every_live_node", 2, "", |_| Vec::new()) else {
        return;
    };
    let h = c.node(1).health();
    assert_eq!(h["storage"]["engine"], "postgres", "{h:#}");
    assert_eq!(h["node"], "n2", "{h:#}");
    let ids: Vec<&str> = h["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["n1", "n2"], "{h:#}");
    assert_eq!(h["warnings"], json!([]), "one configuration: {h:#}");
    // What a 250 waits for: the test server's own disk, no standby.
    assert_eq!(h["storage"]["synchronous_commit"], "on", "{h:#}");
    assert_eq!(h["storage"]["synchronous_standby_names"], "", "{h:#}");
    assert_eq!(h["storage"]["replicated"], false, "{h:#}");
    // A reply written at one node is read at the other at once.
    let id = c.node(0).send_ok(&msg());
    c.node(0)
        .cmd(json!({"cmd": "reply", "id": id, "body": "On it."}));
    let t = c.node(1).ticket(id);
    assert!(
        t["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["direction"] == "out"),
        "{t:#}"
    );
}

/// C10: `migrate` twice at once migrates once; a schema newer than the
/// binary and `synchronous_commit = off` each make `serve` exit 78.
#[test]
fn migrate_is_idempotent_and_serve_refuses_what_it_cannot_trust() {
    let Some(c) = Cluster::start(
        "migrate_is_idempotent_and_serve_refuses_what_it_cannot_trust",
        1,
        "",
        |_| Vec::new(),
    ) else {
        return;
    };
    let config = c.node(0).config_path().to_path_buf();
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (config, dir) = (config.clone(), c.dir().to_path_buf());
            thread::spawn(move || {
                run_cli(
                    &[
                        std::ffi::OsStr::new("migrate"),
                        std::ffi::OsStr::new("-c"),
                        config.as_os_str(),
                    ],
                    &dir,
                )
            })
        })
        .collect();
    for r in runs {
        let out = r.join().unwrap();
        assert_eq!(out.code(), Some(0), "{out}");
        assert!(out.stdout.contains("nothing to do"), "{out}");
    }
    let serve = || {
        run_cli(
            &[
                std::ffi::OsStr::new("serve"),
                std::ffi::OsStr::new("-c"),
                config.as_os_str(),
            ],
            c.dir(),
        )
    };
    c.sql("UPDATE schema_meta SET value = '99' WHERE key = 'version'");
    let out = serve();
    assert_eq!(out.code(), Some(78), "{out}");
    assert!(out.stderr.contains("newer than this postdesk"), "{out}");
    c.sql("UPDATE schema_meta SET value = '1' WHERE key = 'version'");
    let db: String = c.sql("SELECT current_database()");
    c.sql(&format!(
        "ALTER DATABASE {} SET synchronous_commit = off",
        db.trim()
    ));
    let out = serve();
    assert_eq!(out.code(), Some(78), "{out}");
    assert!(out.stderr.contains("synchronous_commit is off"), "{out}");
}

/// One message on a fresh connection; `None` when the node is gone (no
/// connection, or it broke before the final reply).
fn try_send(addr: SocketAddr, m: &Msg) -> Option<Reply> {
    let mut c = crate::support::Client::try_connect(addr).ok()?;
    if c.greeting.code != 220 {
        return None;
    }
    for step in 0..4 {
        let r = match step {
            0 => c.ehlo("client.test.example"),
            1 => c.mail_from(&m.env_from()),
            2 => c.rcpt_to(&m.rcpt()),
            _ => c.data(&m.build()),
        };
        match r.code {
            0 => return None,
            250 if step < 3 => {}
            _ => {
                let _ = c.quit();
                return Some(r);
            }
        }
    }
    None
}

/// C8: one node killed with -9 while clients send to both, each retrying
/// at the other node what got no 250: every message that got a 250 is
/// there, each stored once.
#[test]
fn a_node_killed_under_load_loses_no_accepted_message() {
    let Some(mut c) = Cluster::start(
        "a_node_killed_under_load_loses_no_accepted_message",
        2,
        ACK_NEW,
        |_| Vec::new(),
    ) else {
        return;
    };
    let addrs = [c.node(0).smtp_addr(), c.node(1).smtp_addr()];
    let accepted = std::sync::Mutex::new(Vec::<String>::new());
    let count = std::sync::atomic::AtomicUsize::new(0);
    let nodes = &mut c.nodes;
    thread::scope(|s| {
        for client in 0..6 {
            let (accepted, count) = (&accepted, &count);
            s.spawn(move || {
                for j in 0..15 {
                    let m = msg()
                        .from(&format!("k{client} <k{client}@example.com>"))
                        .subject(&format!("load {client}/{j}"));
                    let mut done = false;
                    for attempt in 0..10 {
                        let addr = addrs[(client + j + attempt) % 2];
                        if let Some(r) = try_send(addr, &m) {
                            if r.code == 250 {
                                done = true;
                                break;
                            }
                            assert_eq!(r.code, 451, "{}: {r}", m.mid());
                        }
                    }
                    assert!(done, "{} never accepted by either node", m.mid());
                    accepted.lock().unwrap().push(m.mid());
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
        wait_until(DEADLINE, "some mail accepted", || {
            let n = count.load(std::sync::atomic::Ordering::SeqCst);
            if n >= 25 {
                Ok(())
            } else {
                Err(format!("{n}"))
            }
        });
        nodes[0].kill9();
    });
    let accepted = accepted.into_inner().unwrap();
    assert_eq!(accepted.len(), 90);
    let survivor = c.node(1);
    for mid in &accepted {
        assert!(
            survivor.message(mid).is_some(),
            "{mid} got 250 but is not stored"
        );
    }
    let twice = c.sql("SELECT message_id FROM messages GROUP BY message_id HAVING count(*) > 1");
    assert!(twice.trim().is_empty(), "stored twice: {twice}");
}

/// C13: the connection breaks during `COMMIT`, so the node does not know
/// the outcome: it looks for the batch's row on a fresh connection and
/// answers by what it finds, never by a guess. Made exact with the proxy:
/// the node is held before its `COMMIT`; then either the database's
/// answer is lost (the `COMMIT` is seen done in the database first) — the
/// batch is found: `250`, not run again — or the `COMMIT` itself is (the
/// proxy dropped it) — nothing is found, so the batch is run again on a
/// new connection: `250`, the message stored once.
#[test]
fn a_commit_whose_outcome_is_unknown_is_looked_up_not_guessed() {
    use crate::support::proxy::Mute;
    let pause_file = crate::support::daemon::temp_dir();
    let file = pause_file.path().join("commit");
    let Some(c) = Cluster::start_proxied(
        "a_commit_whose_outcome_is_unknown_is_looked_up_not_guessed",
        1,
        ACK_NEW,
        pause_node0("store.before_commit", &file),
    ) else {
        return;
    };
    let d = c.node(0);
    let stored = |m: &Msg| {
        let mid = m.mid();
        let mid = mid.trim_matches(|ch| ch == '<' || ch == '>');
        c.sql(&format!(
            "SELECT count(*) FROM messages WHERE message_id = '{mid}'"
        ))
        .trim()
        .to_string()
    };

    // The answer to COMMIT is lost.
    let a = msg().subject("committed, its answer lost");
    std::fs::write(&file, "armed").unwrap();
    let ra = send_in_thread(d.smtp_addr(), &a);
    wait_paused(&file);
    c.proxy().mute(Mute::Replies);
    std::fs::remove_file(&file).unwrap();
    wait_until(
        DEADLINE,
        "the COMMIT done in the database",
        || match stored(&a).as_str() {
            "1" => Ok(()),
            n => Err(format!("{n} rows")),
        },
    );
    c.proxy().drop_connections();
    let ra = ra.join().unwrap();
    let ta = ticket_of(&ra, "the message whose COMMIT answer was lost");
    assert_eq!(stored(&a), "1");
    let logs = d.logs();
    assert!(
        logs.contains("COMMIT failed but the batch is committed"),
        "the outcome was not looked up: {logs}"
    );

    // The COMMIT itself is lost.
    let b = msg().subject("never committed");
    std::fs::write(&file, "armed").unwrap();
    let rb = send_in_thread(d.smtp_addr(), &b);
    wait_paused(&file);
    let before = c.proxy().dropped();
    c.proxy().mute(Mute::Requests);
    std::fs::remove_file(&file).unwrap();
    wait_until(DEADLINE, "the COMMIT dropped on the way", || {
        match c.proxy().dropped() > before {
            true => Ok(()),
            false => Err("nothing dropped yet".into()),
        }
    });
    c.proxy().drop_connections();
    let rb = rb.join().unwrap();
    let tb = ticket_of(&rb, "the message whose COMMIT was lost");
    assert_ne!(ta, tb);
    assert_eq!(stored(&b), "1");
    assert_eq!(d.tickets().len(), 2);
}

/// C14: a URL of several hosts with `target_session_attrs=read-write`, as
/// a node is pointed at a primary and its standby (README, "Running several
/// nodes"): the first host is a read-only server — a standby, as far as a
/// client can tell — that even has a database of the same name; the node
/// goes past it to the writable one, migrates, serves and takes mail there.
#[test]
fn a_url_of_several_hosts_finds_the_writable_server() {
    use crate::support::pg::{engine, pg_required, psql, Engine, PrivateCluster};
    if engine() == Engine::Postgres {
        return; // the default pass runs it (see support::cluster)
    }
    let standby = match PrivateCluster::start() {
        Ok(p) => p,
        Err(e) if pg_required() => panic!("no private PostgreSQL: {e}"),
        Err(e) => {
            eprintln!("SKIPPED a_url_of_several_hosts_finds_the_writable_server: {e}");
            return;
        }
    };
    let Some(c) = Cluster::start_with_url(
        "a_url_of_several_hosts_finds_the_writable_server",
        1,
        ACK_NEW,
        |_| Vec::new(),
        |db| {
            psql(&standby.url, &format!("CREATE DATABASE \"{}\"", db.name()));
            psql(
                &standby.url,
                "ALTER SYSTEM SET default_transaction_read_only = on",
            );
            psql(&standby.url, "SELECT pg_reload_conf()");
            let (s, p) = (
                url::Url::parse(&standby.url).unwrap(),
                url::Url::parse(db.url()).unwrap(),
            );
            let host = |u: &url::Url| {
                format!(
                    "{}:{}",
                    u.host_str().unwrap_or("127.0.0.1"),
                    u.port().unwrap_or(5432)
                )
            };
            format!(
                "postgres://{}@{},{}/{}?target_session_attrs=read-write",
                p.username(),
                host(&s),
                host(&p),
                db.name()
            )
        },
    ) else {
        return;
    };
    let id = c.node(0).send_ok(&msg().subject("via the writable host"));
    assert_eq!(c.node(0).ticket(id)["subject"], "via the writable host");
    let on_standby = psql(
        &standby.url,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'postdesk%'",
    );
    assert_eq!(
        on_standby.trim(),
        "0",
        "a node stayed on the read-only host"
    );
}

/// C9: the database goes away (a crash, a restart, a failover): `451`,
/// never `250`, and the node serves again by itself once it is back.
#[test]
fn the_database_going_away_gets_451_and_service_comes_back_by_itself() {
    let Some(c) = Cluster::start_proxied(
        "the_database_going_away_gets_451_and_service_comes_back_by_itself",
        1,
        ACK_NEW,
        |_| Vec::new(),
    ) else {
        return;
    };
    let d = c.node(0);
    d.send_ok(&msg().subject("before"));
    c.proxy().cut();
    let m = msg().subject("while the database is away");
    let r = d.send(&m);
    assert_eq!((r.code, r.enhanced()), (451, Some("4.3.0")), "{r}");
    c.proxy().restore();
    wait_until(DEADLINE, "the node to take mail again", || {
        let r = d.send(&m);
        if r.code == 250 {
            Ok(())
        } else {
            Err(r.to_string())
        }
    });
    assert_eq!(d.tickets().len(), 2);
    // Under load: every 250 has its rows, whatever was cut meanwhile.
    let accepted = std::sync::Mutex::new(Vec::<String>::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let addr = d.smtp_addr();
    thread::scope(|s| {
        for client in 0..4 {
            let (accepted, stop) = (&accepted, &stop);
            s.spawn(move || {
                let mut j = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    j += 1;
                    let m = msg()
                        .from(&format!("l{client}x{j}@example.com"))
                        .subject(&format!("load {client}/{j}"));
                    if let Some(r) = try_send(addr, &m) {
                        if r.code == 250 {
                            accepted.lock().unwrap().push(m.mid());
                        }
                    }
                }
            });
        }
        for _ in 0..3 {
            thread::sleep(std::time::Duration::from_millis(300));
            c.proxy().cut();
            thread::sleep(std::time::Duration::from_millis(300));
            c.proxy().restore();
        }
        thread::sleep(std::time::Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let accepted = accepted.into_inner().unwrap();
    assert!(!accepted.is_empty());
    wait_until(DEADLINE, "the node to read again", || {
        match d.request(json!({"cmd": "health"}))["ok"].as_bool() {
            Some(true) => Ok(()),
            _ => Err("health fails".into()),
        }
    });
    for mid in &accepted {
        assert!(d.message(mid).is_some(), "{mid} got 250 but is not stored");
    }
}

/// C6: a node killed while it is sending an email (the relay holds the
/// transaction): the other node sends it once the lease ran out, and the
/// email is recorded sent once; the other emails go out once each.
#[test]
fn a_node_killed_while_sending_leaves_the_email_to_another() {
    let sink = crate::support::sink::Sink::start();
    let config = crate::support::config_with(
        ACK_NEW,
        &[(
            "transport = \"file\"\ndir = \"{dir}/sent\"",
            &format!("transport = \"smtp\"\nurl = \"{}\"", sink.url()),
        )],
    );
    let lease = |_| vec![("POSTDESK_LEASE_SECS".to_string(), "2".to_string())];
    let Some(mut c) = Cluster::start(
        "a_node_killed_while_sending_leaves_the_email_to_another",
        2,
        &config,
        lease,
    ) else {
        return;
    };
    // Two other emails first, sent normally.
    for i in 0..2 {
        c.node(i).send_ok(&msg().from(&format!("o{i}@example.com")));
    }
    sink.wait_accepted(2, DEADLINE);
    sink.set_hang_rcpt(Some("held@example.com"));
    let id = c.node(0).send_ok(&msg().from("Held <held@example.com>"));
    let owner = wait_until(DEADLINE, "a node sending the held email", || {
        let owner = c.sql(
            "SELECT lease_owner FROM outbox WHERE state = 'queued' AND lease_owner IS NOT NULL",
        );
        // A lease is named by the node and the process holding it.
        match owner.trim().split('#').next() {
            Some("n1") => Ok(0),
            Some("n2") => Ok(1),
            other => Err(format!("lease owner {other:?}")),
        }
    });
    c.nodes[owner].kill9();
    sink.set_hang_rcpt(None);
    let other = 1 - owner;
    wait_until(DEADLINE, "the other node to send it", || {
        let t = c.node(other).ticket(id);
        if kinds_count(&t, "email_sent") == 1 {
            Ok(())
        } else {
            Err(format!("{:?}", timeline_kinds(&t)))
        }
    });
    let held: Vec<_> = sink
        .accepted()
        .into_iter()
        .filter(|t| t.rcpt.iter().any(|r| r == "held@example.com"))
        .collect();
    assert_eq!(
        held.len(),
        1,
        "the held email, once (it never got past RCPT at the dead node)"
    );
    assert_eq!(sink.accepted().len(), 3);
}

/// C12: two processes given one `node_id` by mistake (a config copied to
/// a second host unchanged). The email one of them holds — the relay
/// holds its transaction — is not taken over by the other (a lease is the
/// holding process's, not its name's), so it is delivered once; and the
/// node whose name was taken says so in `health`.
#[test]
fn two_nodes_given_one_node_id_do_not_send_an_email_twice() {
    let sink = crate::support::sink::Sink::start();
    let config = crate::support::config_with(
        ACK_NEW,
        &[(
            "transport = \"file\"\ndir = \"{dir}/sent\"",
            &format!("transport = \"smtp\"\nurl = \"{}\"", sink.url()),
        )],
    );
    let lease = |_| vec![("POSTDESK_LEASE_SECS".to_string(), "3".to_string())];
    let Some(c) = Cluster::start_named(
        "two_nodes_given_one_node_id_do_not_send_an_email_twice",
        &["n1", "n1"],
        &config,
        lease,
    ) else {
        return;
    };
    sink.set_hang_rcpt(Some("held@example.com"));
    let id = c.node(1).send_ok(&msg().from("Held <held@example.com>"));
    let claim = || {
        c.sql("SELECT lease_owner || ' ' || lease_token FROM outbox WHERE state = 'queued' AND lease_owner IS NOT NULL")
            .trim()
            .to_string()
    };
    let first = wait_until(DEADLINE, "a node sending the held email", || {
        let owner = claim();
        match owner.starts_with("n1#") {
            true => Ok(owner),
            false => Err(format!("lease owner {owner:?}")),
        }
    });
    // The first node's heartbeat finds its row taken (10 s; the lease ran
    // out three times over meanwhile, renewed by its holder only).
    let warnings = wait_until(DEADLINE, "node 0 to warn about its node_id", || {
        let h = c.node(0).health();
        let w = h["warnings"].to_string();
        match w.contains("storage.node_id \\\"n1\\\"") {
            true => Ok(w),
            false => Err(w),
        }
    });
    assert!(
        warnings.contains("give every node a node_id of its own"),
        "{warnings}"
    );
    assert_eq!(claim(), first, "the other process took the email over");
    sink.set_hang_rcpt(None);
    wait_until(DEADLINE, "the held email sent", || {
        let t = c.node(0).ticket(id);
        match kinds_count(&t, "email_sent") {
            1 => Ok(()),
            _ => Err(format!("{:?}", timeline_kinds(&t))),
        }
    });
    let held = sink
        .accepted()
        .into_iter()
        .filter(|t| t.rcpt.iter().any(|r| r == "held@example.com"))
        .count();
    assert_eq!(held, 1, "the held email, once");
}

/// TLS to the database, as libpq's `sslmode=verify-full` and `sslrootcert`
/// ask (the test cluster's own CA, .ci/pg-tls): every connection the node
/// keeps is encrypted, and mail is taken as before. A CA that did not sign
/// the server's certificate is refused, saying so, and so is a CA file
/// that is not there.
#[test]
fn a_node_speaks_tls_to_the_database_and_checks_its_certificate() {
    use crate::support::pg::{engine, pg_required, tls_ca, Engine};
    if engine() == Engine::Postgres {
        return; // the default pass runs it (see support::cluster)
    }
    let Some(ca) = tls_ca() else {
        assert!(
            !pg_required(),
            "POSTDESK_REQUIRE_PG=1 but the test cluster has no TLS (.ci/pg-tls: is openssl there?)"
        );
        eprintln!("a_node_speaks_tls_to_the_database_and_checks_its_certificate: SKIPPED (no TLS on the test cluster)");
        return;
    };
    let query = format!("sslmode=verify-full&sslrootcert={}", ca.display());
    let Some(c) = Cluster::start_with_url_query(
        "a_node_speaks_tls_to_the_database_and_checks_its_certificate",
        1,
        ACK_NEW,
        |_| Vec::new(),
        &query,
    ) else {
        return;
    };
    let id = c.node(0).send_ok(&msg());
    let t = c.node(0).ticket(id);
    assert_eq!(t["id"], id, "{t:#}");
    // The writers', the pool's, the outbox's connections: all TLS.
    let seen = c.sql(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.datname = current_database() AND a.application_name LIKE 'postdesk%'",
    );
    let (tls, plain) = seen.trim().split_once('|').expect("two counts");
    assert!(
        tls.parse::<u32>().unwrap_or(0) >= 2,
        "TLS connections: {seen}"
    );
    assert_eq!(plain, "0", "connections in clear: {seen}");

    // The same URL with another CA (the system's public roots): refused.
    let url_file = c.dir().join("pg.url");
    let url = std::fs::read_to_string(&url_file).expect("pg.url");
    let migrate = || {
        run_cli(
            &[
                std::ffi::OsStr::new("migrate"),
                std::ffi::OsStr::new("-c"),
                c.node(0).config_path().as_os_str(),
            ],
            c.dir(),
        )
    };
    let public = "/etc/ssl/certs/ca-certificates.crt";
    if std::path::Path::new(public).is_file() {
        std::fs::write(&url_file, url.replace(&ca.display().to_string(), public))
            .expect("write pg.url");
        let out = migrate();
        assert_ne!(out.code(), Some(0), "{out}");
        assert!(out.stderr.contains("certificate"), "{out}");
    }
    // A CA file that is not there: named.
    std::fs::write(
        &url_file,
        url.replace(&ca.display().to_string(), "/nonexistent/ca.pem"),
    )
    .expect("write pg.url");
    let out = migrate();
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(out.stderr.contains("/nonexistent/ca.pem"), "{out}");
    // A name the certificate does not hold (the server reached by its
    // address, `hostaddr`): verify-ca checks the chain only and connects;
    // verify-full checks the name too, and refuses.
    let parsed = url::Url::parse(url.trim()).expect("the test URL");
    let by_name = |mode: &str| {
        format!(
            "host=db.invalid hostaddr=127.0.0.1 port={} user={} dbname={} sslmode={mode} sslrootcert={}\n",
            parsed.port().unwrap_or(5432),
            parsed.username(),
            parsed.path().trim_start_matches('/'),
            ca.display()
        )
    };
    std::fs::write(&url_file, by_name("verify-ca")).expect("write pg.url");
    let out = migrate();
    assert_eq!(out.code(), Some(0), "verify-ca, another name: {out}");
    std::fs::write(&url_file, by_name("verify-full")).expect("write pg.url");
    let out = migrate();
    assert_ne!(out.code(), Some(0), "verify-full, another name: {out}");
    assert!(out.stderr.contains("certificate"), "{out}");
    // With the right CA again, migrate finds the schema there.
    std::fs::write(&url_file, &url).expect("write pg.url");
    let out = migrate();
    assert_eq!(out.code(), Some(0), "{out}");
}

/// PostgreSQL itself restarted (`pg_ctl restart -m fast`: every session
/// ended mid-batch, mid-COMMIT or idle) while clients send to two nodes,
/// retrying what got no 250: every message that got a 250 is stored, once;
/// both nodes take mail again by themselves; every acknowledgement queued
/// is sent, twice at most (a resend only of what was on the wire when the
/// database went away).
#[test]
fn postgresql_restarted_under_load_loses_nothing_and_both_nodes_recover() {
    let Some(c) = Cluster::start_private(
        "postgresql_restarted_under_load_loses_nothing_and_both_nodes_recover",
        2,
        ACK_NEW,
        |_| Vec::new(),
    ) else {
        return;
    };
    let addrs = [c.node(0).smtp_addr(), c.node(1).smtp_addr()];
    let accepted = std::sync::Mutex::new(Vec::<String>::new());
    let count = std::sync::atomic::AtomicUsize::new(0);
    let refused = std::sync::atomic::AtomicUsize::new(0);
    thread::scope(|s| {
        for client in 0..6 {
            let (accepted, count, refused) = (&accepted, &count, &refused);
            s.spawn(move || {
                for j in 0..15 {
                    let m = msg()
                        .from(&format!("r{client}x{j} <r{client}x{j}@example.com>"))
                        .subject(&format!("restart {client}/{j}"));
                    let mut done = false;
                    for attempt in 0..60 {
                        if let Some(r) = try_send(addrs[(client + j + attempt) % 2], &m) {
                            if r.code == 250 {
                                done = true;
                                break;
                            }
                            assert_eq!(r.code, 451, "{}: {r}", m.mid());
                        }
                        refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        thread::sleep(std::time::Duration::from_millis(100));
                    }
                    assert!(done, "{} never accepted by either node", m.mid());
                    accepted.lock().unwrap().push(m.mid());
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
        wait_until(DEADLINE, "some mail accepted", || {
            let n = count.load(std::sync::atomic::Ordering::SeqCst);
            if n >= 25 {
                Ok(())
            } else {
                Err(format!("{n}"))
            }
        });
        c.restart_database();
    });
    let accepted = accepted.into_inner().unwrap();
    assert_eq!(accepted.len(), 90);
    assert!(
        refused.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the restart was not seen: no 451, no dropped connection"
    );
    for i in 0..2 {
        c.node(i)
            .send_ok(&msg().from(&format!("after{i}@example.com")));
    }
    for mid in &accepted {
        assert!(
            c.node(1).message(mid).is_some(),
            "{mid} got 250 but is not stored"
        );
    }
    let twice = c.sql("SELECT message_id FROM messages GROUP BY message_id HAVING count(*) > 1");
    assert!(twice.trim().is_empty(), "stored twice: {twice}");
    let tickets: usize = c
        .sql("SELECT count(*) FROM tickets")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(tickets, 92, "one ticket a message");
    // Every acknowledgement goes out: once, or twice if it was on the wire.
    wait_until(DEADLINE, "the outbox to drain", || {
        let left = c.sql("SELECT count(*) FROM outbox WHERE state <> 'sent'");
        if left.trim() == "0" {
            Ok(())
        } else {
            Err(format!(
                "{} not sent: {}",
                left.trim(),
                c.sql("SELECT id, state, lease_owner, lease_until > now(), next_attempt_at FROM outbox WHERE state <> 'sent' ORDER BY id LIMIT 5")
            ))
        }
    });
    let sent = c.sent_by_message_id();
    let acks = c.outbox_kind("auto_reply");
    assert_eq!(acks.len(), 92, "one acknowledgement a ticket");
    assert_eq!(sent.len(), 92, "every acknowledgement written: {sent:?}");
    assert!(
        sent.values().all(|n| (1..=2).contains(n)),
        "each once, twice at most: {sent:?}"
    );
}
