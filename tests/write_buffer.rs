//! A connection's WebSocket write buffer after a burst: with the default `write_buffer_bytes`,
//! the memory a connection keeps once a run of frames is flushed does not grow with the run.
//!
//! tungstenite's write buffer is a `Vec` that is drained but never shrunk, so whatever it held
//! at once stays allocated for the connection's life. This test counts the heap bytes live
//! after a run of pushes is written and flushed (its own global allocator: one test in this
//! binary, so nothing else allocates meanwhile).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicIsize, Ordering};

use activity_gateway::config::ServerConfig;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, WebSocket};

/// The system allocator, counting the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::SeqCst);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A socket that takes every byte written and has nothing to read.
struct Sink;

impl Read for Sink {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Feeds `run` frames of `frame` and flushes once, as the session's writer does.
fn send_run(ws: &mut WebSocket<Sink>, frame: &str, run: usize) {
    for _ in 0..run {
        ws.write(Message::text(frame)).expect("write");
    }
    ws.flush().expect("flush");
}

#[test]
fn a_burst_leaves_no_more_buffer_behind_than_one_push() {
    let server = ServerConfig::default();
    let config = WebSocketConfig::default()
        .read_buffer_size(server.read_buffer_bytes)
        .write_buffer_size(server.write_buffer_bytes)
        .max_message_size(Some(server.max_message_bytes))
        .max_frame_size(Some(server.max_message_bytes));
    let mut ws = WebSocket::from_raw_socket(Sink, Role::Server, Some(config));
    // A push of the load generator's size (~900 bytes with its envelope).
    let frame = "x".repeat(900);

    send_run(&mut ws, &frame, 1);
    let after_one = LIVE.load(Ordering::SeqCst);
    // Bursts of every length the writer may feed before a flush, as under load.
    for run in 2..=8 {
        send_run(&mut ws, &frame, run);
    }
    send_run(&mut ws, &frame, 1);
    let after_bursts = LIVE.load(Ordering::SeqCst);

    let kept = after_bursts - after_one;
    assert!(
        kept < 512,
        "the write buffer kept {kept} more bytes after bursts than after a single push"
    );
}
