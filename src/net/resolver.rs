//! Host-name resolution off the event loop.
//!
//! `getaddrinfo` may hang for seconds; one helper thread does it and wakes
//! the loop with the answer. IP literals never come here.

use mio::Waker;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;

/// Requests waiting for the resolver beyond this are refused at once.
pub const MAX_PENDING: usize = 256;

/// One answer.
#[derive(Debug)]
pub struct Resolved {
    /// The host asked about.
    pub host: String,
    /// The first IPv4 address (or any address) for it, or why not.
    pub result: Result<SocketAddr, String>,
}

/// Handle to the resolver thread.
pub struct Resolver {
    tx: SyncSender<(String, u16)>,
    rx: Receiver<Resolved>,
}

impl Resolver {
    /// Starts the thread; it calls `waker.wake()` after each answer.
    pub fn start(waker: Arc<Waker>) -> std::io::Result<Self> {
        let (tx, req_rx) = mpsc::sync_channel::<(String, u16)>(MAX_PENDING);
        let (res_tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("resolver".into())
            .spawn(move || {
                for (host, port) in req_rx {
                    let result = match (host.as_str(), port).to_socket_addrs() {
                        Ok(addrs) => {
                            let addrs: Vec<SocketAddr> = addrs.collect();
                            addrs
                                .iter()
                                .find(|a| a.is_ipv4())
                                .or(addrs.first())
                                .copied()
                                .ok_or_else(|| "no address".to_string())
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    if res_tx.send(Resolved { host, result }).is_err() {
                        break;
                    }
                    let _ = waker.wake();
                }
            })?;
        Ok(Self { tx, rx })
    }

    /// Asks for `host`; false if the queue is full or the thread is gone.
    pub fn request(&self, host: &str, port: u16) -> bool {
        match self.tx.try_send((host.to_string(), port)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Answers ready now.
    pub fn drain(&self) -> Vec<Resolved> {
        self.rx.try_iter().collect()
    }
}
