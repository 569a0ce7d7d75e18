//! A TCP proxy on loopback that a test can cut (every open connection is dropped at once,
//! new ones are refused while it is down) or stall (connections stay open, nothing passes
//! either way until it resumes).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: SocketAddr,
    target: Arc<parking_lot::Mutex<SocketAddr>>,
    cut: watch::Sender<u64>,
    down: Arc<AtomicBool>,
    stalled: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = watch::channel(0u64);
        let down = Arc::new(AtomicBool::new(false));
        let (stalled, _) = watch::channel(false);
        let (cut2, down2, stalled2) = (cut.clone(), down.clone(), stalled.clone());
        let target = Arc::new(parking_lot::Mutex::new(target));
        let target2 = target.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if down2.load(Ordering::Acquire) {
                    continue;
                }
                let mut rx = cut2.subscribe();
                let (stall_in, stall_out) = (stalled2.subscribe(), stalled2.subscribe());
                let target = *target2.lock();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut ri, mut wi) = inbound.into_split();
                    let (mut ro, mut wo) = outbound.into_split();
                    tokio::select! {
                        _ = forward(&mut ri, &mut wo, stall_in) => {}
                        _ = forward(&mut ro, &mut wi, stall_out) => {}
                        _ = rx.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            target,
            cut,
            down,
            stalled,
            task,
        }
    }

    /// Sends new connections to `target` from now on (a load balancer failing over).
    pub fn retarget(&self, target: SocketAddr) {
        *self.target.lock() = target;
    }

    /// Drops every open connection.
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Cuts and refuses new connections until `up`.
    pub fn down(&self) {
        self.down.store(true, Ordering::Release);
        self.cut();
    }

    pub fn up(&self) {
        self.down.store(false, Ordering::Release);
    }

    /// Holds every byte in both directions, connections open, until `resume`.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    pub fn resume(&self) {
        self.stalled.send_replace(false);
    }
}

/// Copies `from` to `to`, holding what it read while `stalled` is true.
async fn forward<R, W>(from: &mut R, to: &mut W, mut stalled: watch::Receiver<bool>)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
