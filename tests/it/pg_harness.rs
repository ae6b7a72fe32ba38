//! The PostgreSQL side of the harness itself (`support::pg`): a test
//! database is created, answers through `psql`, and is gone once dropped.
//! Skips (passing, loudly) without a PostgreSQL unless
//! `POSTDESK_REQUIRE_PG=1`.

use crate::support::pg::{psql, psql_bin, require_pg_or_skip};

#[test]
fn a_test_database_answers_and_is_dropped_with_its_value() {
    let Some(db) = require_pg_or_skip() else {
        return;
    };
    assert!(
        db.name().starts_with("t_") && db.name().len() > 2,
        "{}",
        db.name()
    );
    assert_eq!(psql(db.url(), "SELECT 1"), "1\n");
    // The URL names the test's own database, not the admin one.
    assert_eq!(
        psql(db.url(), "SELECT current_database()").trim(),
        db.name()
    );
    psql(
        db.url(),
        "CREATE TABLE probe (n int); INSERT INTO probe VALUES (41), (1);",
    );
    assert_eq!(psql(db.url(), "SELECT sum(n) FROM probe"), "42\n");

    let exists = format!(
        "SELECT count(*) FROM pg_database WHERE datname = '{}'",
        db.name()
    );
    let admin = db.admin_url().to_string();
    assert_eq!(psql(&admin, &exists), "1\n");
    // A session left open on it does not keep it from being dropped.
    let mut idle = std::process::Command::new(psql_bin())
        .args(["-X", "-q", "-c", "SELECT pg_sleep(60)"])
        .arg(db.url())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok();
    if idle.is_some() {
        crate::support::wait_until(crate::support::DEADLINE, "the idle session", || {
            let n = psql(
                &admin,
                &format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}'",
                    db.name()
                ),
            );
            if n.trim() == "0" {
                Err(n)
            } else {
                Ok(())
            }
        });
    }
    drop(db);
    assert_eq!(psql(&admin, &exists), "0\n", "dropped with its value");
    if let Some(child) = idle.as_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn two_test_databases_are_two_databases() {
    let Some(a) = require_pg_or_skip() else {
        return;
    };
    let Some(b) = require_pg_or_skip() else {
        return;
    };
    assert_ne!(a.name(), b.name());
    psql(a.url(), "CREATE TABLE only_in_a (n int)");
    assert_eq!(
        psql(
            b.url(),
            "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'"
        ),
        "0\n"
    );
}
