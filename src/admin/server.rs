//! The admin socket server: one task per connection, requests answered in
//! order, reads on blocking threads through the store's read views.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::proto::{
    import_outcome_json, parse_request, Request, Response, DEFAULT_LIMIT, MAX_LIMIT, MAX_REQUEST,
};
use crate::clock;
use crate::config::ConfigCell;
use crate::desk::records::OutState;
use crate::ingest::TicketId;
use crate::smtp::reader::{read_line, Read};
use crate::store::{Done, Inbound, Store, StoreCmd, StoreError, StoredMessage, TicketFilter};

pub struct AdminCtx {
    pub store: Store,
    pub config: Arc<ConfigCell>,
    pub started: Instant,
    pub shutdown: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another postdesk is already listening on admin socket {0}")]
    InUse(PathBuf),
    #[error("cannot bind admin socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Binds the socket with mode 0660. A socket file left by a crashed daemon
/// (nobody answers on it) is replaced; a live one is an error.
pub async fn bind(path: &Path) -> Result<UnixListener, BindError> {
    let io = |source| BindError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(BindError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    // Create the socket with no world access from the start (no window in
    // which it is 0777), then set the exact mode.
    // SAFETY: umask only swaps the process file-mode mask; it cannot fail.
    let old = unsafe { libc::umask(0o117) };
    let listener = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = listener.map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, ctx: Arc<AdminCtx>, tracker: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = ctx.shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let ctx = ctx.clone();
                tracker.spawn(async move { connection(stream, ctx).await });
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, ctx: Arc<AdminCtx>) {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    loop {
        let read = tokio::select! {
            r = read_line(&mut reader, MAX_REQUEST) => r,
            () = ctx.shutdown.cancelled() => return,
        };
        let response = match read {
            Ok(Read::Line(line)) => {
                let trimmed = line.trim_ascii();
                if trimmed.is_empty() {
                    continue;
                }
                match parse_request(trimmed) {
                    Ok(req) => handle(req, &ctx).await,
                    Err(resp) => resp,
                }
            }
            Ok(Read::TooLong) => {
                let resp = Response::err(
                    "bad_request",
                    format!("request longer than {MAX_REQUEST} bytes"),
                );
                let _ = w.write_all(resp.to_line().as_bytes()).await;
                return;
            }
            Ok(Read::Eof) | Err(_) => return,
        };
        if w.write_all(response.to_line().as_bytes()).await.is_err() {
            return;
        }
    }
}

fn limit(l: Option<usize>) -> usize {
    l.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
}

async fn handle(req: Request, ctx: &AdminCtx) -> Response {
    let result = match req {
        Request::Health {} => {
            let uptime = ctx.started.elapsed().as_secs();
            let cfg = ctx.config.get();
            match (ctx.store.counts().await, ctx.store.nodes().await) {
                (Ok((tickets, pending)), Ok(nodes)) => {
                    let mut body = json!({
                        "version": env!("CARGO_PKG_VERSION"),
                        "uptime_secs": uptime,
                        "tickets": tickets,
                        "outbox_pending": pending,
                        "storage": { "engine": ctx.store.engine() },
                    });
                    if let crate::config::Storage::Postgres(pg) = &cfg.storage {
                        // Nodes on another configuration run other rules
                        // on the same tickets: say so (SPEC §8).
                        let mine = ctx.store.fingerprint().unwrap_or_default();
                        let mut warnings: Vec<String> = nodes
                            .iter()
                            .filter(|n| n.node_id != pg.node_id && n.config_hash != mine)
                            .map(|n| {
                                format!(
                                    "node {} runs another configuration than this one (config_hash {} here, {} there): keep the config and templates the same on every node",
                                    n.node_id, mine, n.config_hash
                                )
                            })
                            .collect();
                        warnings.extend(ctx.store.duplicate_node());
                        // Whether a 250 survives the loss of the database
                        // server: only with a synchronous standby.
                        if let Ok(Some((commit, standbys))) = ctx.store.durability().await {
                            let replicated = !standbys.trim().is_empty()
                                && matches!(
                                    commit.as_str(),
                                    "on" | "remote_write" | "remote_apply"
                                );
                            body["storage"]["synchronous_commit"] = json!(commit);
                            body["storage"]["synchronous_standby_names"] = json!(standbys);
                            body["storage"]["replicated"] = json!(replicated);
                        }
                        body["node"] = json!(pg.node_id);
                        body["config_hash"] = json!(mine);
                        body["nodes"] = to_value(nodes);
                        body["warnings"] = json!(warnings);
                    }
                    Ok(body)
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        Request::Tickets {
            status,
            pipeline,
            limit: l,
        } => {
            let filter = TicketFilter {
                status,
                pipeline,
                limit: limit(l),
            };
            ctx.store.tickets(filter).await.map(to_value)
        }
        Request::Ticket { id } => match ctx.store.ticket(id).await {
            Ok(Some(t)) => Ok(to_value(t)),
            Ok(None) => return Response::err("not_found", format!("no ticket {id}")),
            Err(e) => Err(e),
        },
        Request::Conversations { limit: l } => {
            let n = limit(l);
            ctx.store.conversations(n).await.map(to_value)
        }
        Request::Reload {} => {
            // Blocking work (files, template compilation): off the runtime.
            let cell = ctx.config.clone();
            return match tokio::task::spawn_blocking(move || reload(&cell)).await {
                Ok(resp) => resp,
                Err(_) => Response::err(
                    "internal",
                    "the reload did not finish; the old config stays",
                ),
            };
        }
        Request::Stats {} => {
            let mut data = crate::metrics::snapshot();
            data["uptime_secs"] = json!(ctx.started.elapsed().as_secs());
            Ok(data)
        }
        Request::Import {
            raw_base64,
            channel,
        } => {
            use base64::Engine as _;
            let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(raw_base64.as_bytes())
            else {
                return Response::err("bad_request", "raw_base64 is not valid base64");
            };
            let config = ctx.config.get();
            let channel = match channel {
                Some(c) if config.channel(&c).is_some() => c,
                Some(c) => return Response::err("not_found", format!("no channel \"{c}\"")),
                None => match config.channels.first() {
                    Some(c) => c.id.clone(),
                    None => return Response::err("bad_request", "the config has no channel"),
                },
            };
            // Parsed on a blocking thread, not on the runtime's worker
            // that serves the SMTP sessions.
            let parsing = tokio::task::spawn_blocking(move || {
                Inbound::imported(&config, raw, &channel, clock::now_millis())
            });
            let Ok(inb) = parsing.await else {
                return Response::err("internal", "parsing the message failed");
            };
            // Imported messages keep their order (a thread's parent before
            // its replies, a ticket before mail to its plus address), on any
            // engine: `submit` applies them one after the other.
            match ctx.store.submit(inb).await {
                Ok(o) => Ok(import_outcome_json(&o)),
                Err(e) => Err(e),
            }
        }
        Request::Merge { source, target } => {
            let cmd = StoreCmd::Merge {
                config: ctx.config.get(),
                source,
                target,
            };
            return ticket_after(ctx, cmd, target).await;
        }
        Request::SetStatus { id, status } => {
            let cmd = StoreCmd::SetStatus {
                config: ctx.config.get(),
                id,
                status,
            };
            return ticket_after(ctx, cmd, id).await;
        }
        Request::Assign { id, owner } => {
            let cmd = StoreCmd::Assign {
                config: ctx.config.get(),
                id,
                owner,
            };
            return ticket_after(ctx, cmd, id).await;
        }
        Request::Reply { id, body, user } => {
            if body.trim().is_empty() {
                return Response::err("bad_request", "the reply body is empty");
            }
            let cmd = StoreCmd::Reply {
                config: ctx.config.get(),
                id,
                body,
                user,
            };
            match ctx.store.command(cmd).await {
                Ok(Done::Queued(out)) => ctx
                    .store
                    .outbox_entry(out)
                    .await
                    .map(|o| o.map(to_value).unwrap_or(Value::Null)),
                Ok(_) => Ok(Value::Null),
                Err(e) => return store_error(e),
            }
        }
        Request::Message { message_id } => {
            let Some(id) = crate::ingest::normalize_message_id(&message_id) else {
                return Response::err("bad_request", format!("not a Message-ID: \"{message_id}\""));
            };
            match ctx.store.message(id).await {
                Ok(Some(StoredMessage { ticket, view, raw })) => {
                    use base64::Engine as _;
                    let mut v = to_value(view);
                    v["ticket"] = json!(ticket);
                    v["raw_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&raw));
                    Ok(v)
                }
                Ok(None) => {
                    return Response::err("not_found", format!("no stored message {message_id}"))
                }
                Err(e) => Err(e),
            }
        }
        Request::Outbox { state, limit: l } => {
            let state = match state.as_deref() {
                None => None,
                Some(name) => match OutState::parse(name) {
                    Some(state) => Some(state),
                    None => {
                        return Response::err(
                            "bad_request",
                            format!(
                                "unknown state \"{name}\" (known: queued, sent, failed, bounced)"
                            ),
                        )
                    }
                },
            };
            let n = limit(l);
            ctx.store.outbox(state, n).await.map(to_value)
        }
    };
    match result {
        Ok(data) => Response::ok(data),
        Err(e) => store_error(e),
    }
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::NotFound(m) => Response::err("not_found", m),
        StoreError::Invalid(m) => Response::err("bad_request", m),
        e => {
            tracing::error!(error = %e, "admin request failed");
            Response::err("store_error", e.to_string())
        }
    }
}

/// Runs a command, then answers with the ticket as it is after the commit.
async fn ticket_after(ctx: &AdminCtx, cmd: StoreCmd, id: TicketId) -> Response {
    if let Err(e) = ctx.store.command(cmd).await {
        return store_error(e);
    }
    match ctx.store.ticket(id).await {
        Ok(Some(t)) => Response::ok(to_value(t.ticket)),
        Ok(None) => Response::err("not_found", format!("no ticket {id}")),
        Err(e) => store_error(e),
    }
}

/// Validates the config file again and swaps it in if clean.
pub fn reload(cell: &ConfigCell) -> Response {
    match cell.reload() {
        Ok(summary) => Response::ok(summary),
        Err(problems) => {
            let list: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
            let mut resp = Response::err(
                "invalid_config",
                format!("config has {} problem(s); the old config stays", list.len()),
            );
            if let Some(e) = resp.error.as_mut() {
                e.problems = Some(list);
            }
            resp
        }
    }
}

fn to_value<T: serde::Serialize>(v: T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}
