//! A TCP proxy in front of PostgreSQL, to take the database away from the
//! nodes and give it back: [`Proxy::cut`] drops every connection and
//! refuses new ones (as a database that crashed, restarts or fails over
//! looks from a node), [`Proxy::restore`] lets connections through again;
//! [`Proxy::mute`] drops what one side sends while the connections stay up
//! (a request or an answer lost on the wire), [`Proxy::drop_connections`]
//! then ends them.
//! The real server is never touched, so tests that share it run on.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    mute: Arc<Muted>,
}

/// What is dropped instead of forwarded, and how many bytes were.
#[derive(Default)]
struct Muted {
    requests: AtomicBool,
    replies: AtomicBool,
    dropped: AtomicUsize,
}

/// Which side's bytes [`Proxy::mute`] drops.
#[derive(Debug, Clone, Copy)]
pub enum Mute {
    /// What the nodes send to the database.
    Requests,
    /// What the database answers.
    Replies,
}

impl Proxy {
    /// Forwards connections to `target` from a fresh loopback port.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let mute = Arc::new(Muted::default());
        let (up2, conns2, mute2) = (up.clone(), conns.clone(), mute.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let mut list = conns2.lock().unwrap_or_else(|e| e.into_inner());
                for s in [&client, &server] {
                    if let Ok(c) = s.try_clone() {
                        list.push(c);
                    }
                }
                drop(list);
                pipe(&client, &server, mute2.clone(), Mute::Requests);
                pipe(&server, &client, mute2.clone(), Mute::Replies);
            }
        });
        Proxy {
            addr,
            up,
            conns,
            mute,
        }
    }

    /// From now on, drops what `side` sends on every connection (they
    /// stay up), until [`Proxy::drop_connections`].
    pub fn mute(&self, side: Mute) {
        match side {
            Mute::Requests => self.mute.requests.store(true, Ordering::SeqCst),
            Mute::Replies => self.mute.replies.store(true, Ordering::SeqCst),
        }
    }

    /// Bytes dropped since the proxy started.
    pub fn dropped(&self) -> usize {
        self.mute.dropped.load(Ordering::SeqCst)
    }

    /// Ends every connection there is, unmuted, and goes on taking new
    /// ones.
    pub fn drop_connections(&self) {
        self.mute.requests.store(false, Ordering::SeqCst);
        self.mute.replies.store(false, Ordering::SeqCst);
        let mut list = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        for s in list.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut list = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        for s in list.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Lets new connections through again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Copies `from` to `to` on a thread of its own until either side closes
/// (what `side` sends is dropped while it is muted).
fn pipe(from: &TcpStream, to: &TcpStream, mute: Arc<Muted>, side: Mute) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let muted = match side {
                        Mute::Requests => &mute.requests,
                        Mute::Replies => &mute.replies,
                    };
                    if muted.load(Ordering::SeqCst) {
                        mute.dropped.fetch_add(n, Ordering::SeqCst);
                        continue;
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
