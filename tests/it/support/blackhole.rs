//! A loopback TCP proxy that can black-hole its connections: the peer vanishes without a FIN or
//! an RST (as behind a dead NAT entry or a partitioned network), so the client's socket stays
//! open and simply never hears back. Connections black-holed once stay dead after `heal`; new
//! connections made after `heal` are forwarded again. It can also hold back one request: the
//! first client write containing a marker reaches the server only after a delay (an answer lost
//! to the client's time limit, while the server still acts on the request).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Blackhole {
    port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    /// Bumped by `cut`: connections from an earlier epoch never forward again.
    epoch: AtomicU64,
    /// While set, nothing is forwarded (new connections are accepted and left hanging).
    cut: AtomicBool,
    /// The next client write containing this marker is held this long before it is forwarded.
    hold: Mutex<Option<(Vec<u8>, Duration)>>,
}

impl Blackhole {
    /// Starts forwarding `127.0.0.1:<port()>` to `127.0.0.1:<target>`.
    pub async fn start(target: u16) -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            epoch: AtomicU64::new(0),
            cut: AtomicBool::new(false),
            hold: Mutex::new(None),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move { relay(client, target, state).await });
            }
        });
        Blackhole { port, state, task }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Every open connection goes silent for good; new ones hang until `heal`.
    pub fn cut(&self) {
        self.state.epoch.fetch_add(1, Ordering::SeqCst);
        self.state.cut.store(true, Ordering::SeqCst);
    }

    /// New connections are forwarded again (the ones cut stay dead).
    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// The next client write that contains `marker` reaches the server `delay` late (once); the
    /// writes after it on that connection queue behind it, as on a slow link.
    pub fn hold_next(&self, marker: &[u8], delay: Duration) {
        *self.state.hold.lock().unwrap() = Some((marker.to_vec(), delay));
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, target: u16, state: Arc<State>) {
    let epoch = state.epoch.load(Ordering::SeqCst);
    let live = {
        let state = state.clone();
        move || !state.cut.load(Ordering::SeqCst) && state.epoch.load(Ordering::SeqCst) == epoch
    };
    if !live() {
        // Accepted while cut: keep the socket open and say nothing, ever.
        let _held = client;
        std::future::pending::<()>().await;
        return;
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = {
        let live = live.clone();
        async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match cr.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) if live() => {
                        let held = {
                            let mut hold = state.hold.lock().unwrap();
                            match hold.as_ref() {
                                Some((marker, _))
                                    if buf[..n].windows(marker.len()).any(|w| w == marker) =>
                                {
                                    hold.take().map(|(_, delay)| delay)
                                }
                                _ => None,
                            }
                        };
                        if let Some(delay) = held {
                            tokio::time::sleep(delay).await;
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                    // Swallowed: the server never sees it; the client's socket stays open.
                    Ok(_) => std::future::pending::<()>().await,
                }
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) if live() => {
                    if cw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                Ok(_) => std::future::pending::<()>().await,
            }
        }
    };
    // Both directions run until one side closes; a cut direction never finishes.
    tokio::join!(up, down);
}
