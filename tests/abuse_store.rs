//! The store is not the clients' to fill or break: black-box tests against the spawned
//! gateway for what a client or a publisher must not be able to do to the history store
//! (fill it with empty streams, take ingest down with failing reads, wedge subscribers with
//! an oversized publication, stall publishers with ids the store cannot hold, flap readiness
//! on a full disk).
mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// An idempotency id with a NUL is a 400 `invalid_id` naming the item, not a 503 that the
/// publisher would retry forever; the gateway stays ready and keeps accepting publications.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_the_store_cannot_hold_is_a_400_not_a_503() {
    let gw = TestGateway::start(&[]).await;
    let mut c = gw.client().await;
    c.subscribe(&[&aa("eip155:0", ADDR_A)]).await;
    let channel = aa("eip155:1", ADDR_A);

    for id in ["bad\u{0}id", "tab\tid"] {
        let (status, body) = gw
            .publish(json!({"channel": channel, "data": {"n": 0}, "id": id}))
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "invalid_publication", "{body}");
        assert_eq!(body["errors"][0]["index"], 0, "{body}");
        assert_eq!(body["errors"][0]["code"], "invalid_id", "{body}");
    }
    let (status, _) = gw.get("/readyz").await;
    assert_eq!(status, 200);
    let (status, body) = gw
        .publish(json!({"channel": channel, "data": {"n": 1}, "id": "ok-1"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let push = c.next_push().await;
    assert_eq!(
        push["data"],
        json!({"n": 1}),
        "only the valid one is delivered"
    );
}

/// A random EVM address.
fn random_address() -> String {
    format!(
        "0x{:016x}{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

/// The gateway's SQLite file (the default store of `TestGateway`).
async fn sqlite_file(gw: &TestGateway) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let url = format!("sqlite://{}/gateway.db", gw.data_dir.path().display());
    sqlx::SqliteConnection::connect(&url)
        .await
        .expect("open the gateway's SQLite file")
}

async fn stream_rows(gw: &TestGateway) -> i64 {
    let mut db = sqlite_file(gw).await;
    sqlx::query_scalar("SELECT COUNT(*) FROM streams")
        .fetch_one(&mut db)
        .await
        .unwrap()
}

fn ack_url(gw: &TestGateway, sub: &str) -> String {
    format!("{}&ack=1", gw.ws_url(&gw.token(sub, 3600)))
}

/// A subscribe request with resume positions.
fn resume(channel: &str, position: &Value) -> (String, Value) {
    let request_id = uuid::Uuid::new_v4().to_string();
    let msg = json!({"event": "subscribe", "data": {"requestId": request_id, "channels": [channel], "positions": {channel: position}}});
    (request_id, msg)
}

/// Subscribing in ack mode reads positions and writes nothing: 10 requests of 64 random
/// accounts leave the store without a single stream row. A client that subscribed before an
/// account's first publication resumes from the position it was given and recovers every
/// publication made since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_writes_nothing_and_an_early_subscriber_recovers_everything() {
    let gw = TestGateway::start(&[]).await;
    for i in 0..10 {
        let mut c = gw.client_at(&ack_url(&gw, &format!("w{i}"))).await;
        let channels: Vec<String> = (0..64).map(|_| aa("eip155:0", &random_address())).collect();
        let refs: Vec<&str> = channels.iter().map(String::as_str).collect();
        let reply = c.subscribe(&refs).await;
        for ch in &channels {
            let p = &reply["data"]["positions"][ch];
            assert_eq!(p["offset"], 0, "{reply}");
            assert!(
                p["epoch"].as_str().is_some_and(|e| e.starts_with("none.")),
                "{reply}"
            );
        }
    }
    assert_eq!(
        stream_rows(&gw).await,
        0,
        "reading positions wrote stream rows"
    );
    let wal = std::fs::metadata(gw.data_dir.path().join("gateway.db-wal")).map_or(0, |m| m.len());
    eprintln!("WAL after 640 positions read: {wal} bytes");
    assert!(
        wal < 256 * 1024,
        "640 position reads grew the WAL to {wal} bytes"
    );

    // Subscribed before the first publication, then cut.
    let ch = aa("eip155:0", ADDR_A);
    let mut early = gw.client_at(&ack_url(&gw, "early")).await;
    let start = early.subscribe(&[&ch]).await["data"]["positions"][&ch].clone();
    drop(early);
    let pubs: Vec<Value> = (1..=3)
        .map(|n| json!({"channel": aa("eip155:1", ADDR_A), "data": {"n": n}}))
        .collect();
    let (status, body) = gw.publish(json!({"publications": pubs})).await;
    assert_eq!(status, 200, "{body}");
    let epoch = body["publications"][0]["position"]["epoch"].clone();

    let mut back = gw.client_at(&ack_url(&gw, "early")).await;
    let (rid, msg) = resume(&ch, &start);
    back.send(msg).await;
    let r = back.reply_to(&rid).await;
    assert_eq!(
        r["data"]["recovery"][&ch],
        json!({"recovered": true, "replayed": 3}),
        "{r}"
    );
    assert_eq!(
        r["data"]["positions"][&ch],
        json!({"epoch": epoch, "offset": 3})
    );
    for n in 1..=3 {
        let p = back.next_push().await;
        assert_eq!(p["data"], json!({"n": n}));
        assert_eq!(p["position"], json!({"epoch": epoch, "offset": n}));
    }
    assert_eq!(stream_rows(&gw).await, 1);
}

/// Streams that retention left without publications are removed, and the store keeps
/// working: the next publication on such an account starts a new stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_emptied_by_retention_are_removed() {
    let gw = TestGateway::start(&[
        ("GATEWAY__HISTORY__RETENTION_AGE", "200ms"),
        ("GATEWAY__HISTORY__TRIM_INTERVAL", "100ms"),
    ])
    .await;
    let addresses: Vec<String> = (0..3).map(|_| random_address()).collect();
    for a in &addresses {
        let (status, body) = gw
            .publish(json!({"channel": aa("eip155:1", a), "data": {"n": 1}}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    gw.wait_metric(
        "gateway_history_streams_removed_total",
        3.0,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(stream_rows(&gw).await, 0);

    let mut c = gw.client().await;
    c.subscribe(&[&aa("eip155:0", &addresses[0])]).await;
    let (status, body) = gw
        .publish(json!({"channel": aa("eip155:1", &addresses[0]), "data": {"n": 2}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["publications"][0]["position"]["offset"], 1, "{body}");
    assert_eq!(c.next_push().await["data"], json!({"n": 2}));
}

/// A read that fails (here: a stored payload that is not UTF-8) answers the client that asked
/// with `store_unavailable` for that channel, and nothing else: publishes are still accepted,
/// `/readyz` stays true and a well-behaved client keeps getting its pushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_read_fails_its_client_only() {
    let gw = TestGateway::start(&[]).await;
    let broken = random_address();
    let ch = aa("eip155:0", &broken);
    let (status, body) = gw
        .publish(json!({"channel": aa("eip155:1", &broken), "data": {"n": 1}}))
        .await;
    assert_eq!(status, 200, "{body}");
    let epoch = body["publications"][0]["position"]["epoch"].clone();
    {
        let mut db = sqlite_file(&gw).await;
        let done = sqlx::query("UPDATE publications SET payload = x'ff00fe'")
            .execute(&mut db)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1);
    }
    let mut good = gw.client().await;
    good.subscribe(&[&aa("eip155:0", ADDR_A)]).await;

    for _ in 0..3 {
        let mut resumer = gw.client_at(&ack_url(&gw, "r")).await;
        let (rid, msg) = resume(&ch, &json!({"epoch": epoch, "offset": 0}));
        resumer.send(msg).await;
        let r = resumer.reply_to(&rid).await;
        assert_eq!(
            r["data"]["recovery"][&ch],
            json!({"recovered": false, "replayed": 0, "reason": "store_unavailable"}),
            "{r}"
        );
        let (status, text) = gw.get("/readyz").await;
        assert_eq!(status, 200, "a failed read took readiness down: {text}");
        let (status, body) = gw
            .publish(json!({"channel": aa("eip155:1", ADDR_A), "data": {"n": 7}}))
            .await;
        assert_eq!(status, 200, "a failed read took publishing down: {body}");
        let push = tokio::time::timeout(Duration::from_secs(1), good.next_push())
            .await
            .expect("the well-behaved client got its push within 1 s");
        assert_eq!(push["data"], json!({"n": 7}));
    }
    assert_eq!(gw.metric("gateway_store_available").await, 1.0);
    assert_eq!(gw.metric("gateway_history_read_failures_total").await, 3.0);
}

/// A tmpfs mounted for one test, unmounted on drop.
struct TinyDisk {
    dir: tempfile::TempDir,
}

impl TinyDisk {
    /// Mounts a tmpfs of `mib` MiB, or says why it cannot (mounting needs root).
    fn mount(mib: u32) -> Result<TinyDisk, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(TinyDisk { dir })
    }

    /// Writes a file until the filesystem is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// On a full disk the store is down and stays down: every publish gets 503 and `/readyz`
/// stays false (no flapping while each batch fails), until space is freed; then both recover
/// by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_steady_outage() {
    let disk = match TinyDisk::mount(16) {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED a_full_disk_is_a_steady_outage: cannot mount a tmpfs ({why})");
            return;
        }
    };
    let url = format!("sqlite://{}/gateway.db", disk.dir.path().display());
    let gw = TestGateway::start(&[
        ("GATEWAY__STORAGE__URL", &url),
        ("GATEWAY__STORAGE__SQLITE_MIN_FREE_MIB", "4"),
    ])
    .await;
    let channel = aa("eip155:1", ADDR_A);
    let big = "x".repeat(200 * 1024);
    let gw = &gw;
    let (channel, big) = (&channel, &big);
    let publish = |n: u64| {
        let body = json!({"channel": channel, "data": {"n": n, "pad": big}});
        async move { gw.publish(body).await.0 }
    };
    assert_eq!(publish(0).await, 200);
    let filler = disk.fill();

    // The disk is full: publishing fails once the WAL needs room.
    let mut n = 1;
    while publish(n).await == 200 {
        n += 1;
        assert!(n < 200, "publishes kept succeeding on a full disk");
    }
    // A steady outage: for 4 s (four probes), every publish and every readiness check fails.
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < until {
        let (ready, text) = gw.get("/readyz").await;
        assert_eq!(ready, 503, "readiness flapped on a full disk: {text}");
        assert_eq!(
            publish(n).await,
            503,
            "a publish was accepted on a full disk"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gw.metric("gateway_store_available").await, 0.0);

    std::fs::remove_file(filler).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the store is writable again",
        || async { gw.get("/readyz").await.0 == 200 },
    )
    .await;
    assert_eq!(publish(n + 1).await, 200);
}

/// A publication whose push could not be queued to a subscriber is refused at publish with
/// 413 `publication_too_large` (nothing is stored or delivered), instead of closing every
/// subscriber with 1013 and being replayed to acking clients on every reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_no_queue_can_hold_is_refused_at_publish() {
    let gw = TestGateway::start(&[]).await;
    let ch = aa("eip155:0", ADDR_A);
    let mut plain = gw.client().await;
    plain.subscribe(&[&ch]).await;
    let mut acking = gw.client_at(&ack_url(&gw, "a")).await;
    acking.subscribe(&[&ch]).await;

    // A body of exactly publish.max_body_bytes (1 MiB): its push is larger than a connection's
    // whole queue (server.max_queue_bytes, 1 MiB).
    let channel = aa("eip155:1", ADDR_A);
    let frame = |pad: &str| json!({"channel": channel, "data": {"pad": pad}}).to_string();
    let pad = "x".repeat(1024 * 1024 - frame("").len());
    let body = frame(&pad);
    assert_eq!(body.len(), 1024 * 1024);
    let (status, answer) = gw
        .raw(
            "POST",
            "/v1/publish",
            Some(&gw.publisher_key),
            Some(("application/json", body.into_bytes())),
        )
        .await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"], "publication_too_large", "{answer}");
    assert_eq!(answer["errors"][0]["index"], 0, "{answer}");
    assert_eq!(answer["errors"][0]["code"], "publication_too_large");

    let (status, _) = gw
        .publish(json!({"channel": channel, "data": {"n": 1}}))
        .await;
    assert_eq!(status, 200);
    for c in [&mut plain, &mut acking] {
        let push = tokio::time::timeout(Duration::from_secs(1), c.next_push())
            .await
            .expect("the subscriber got the next push within 1 s");
        assert_eq!(
            push["data"],
            json!({"n": 1}),
            "the refused one was not delivered"
        );
    }
    assert_eq!(
        gw.metric("gateway_slow_consumer_disconnects_total").await,
        0.0
    );
}

/// A configuration whose publish bounds let through a publication that a connection's queue
/// cannot hold is refused at start, naming the keys to change.
#[test]
fn a_queue_too_small_for_the_largest_publication_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(bin())
        .env_clear()
        .env("GATEWAY__SERVER__LISTEN", "127.0.0.1:0")
        .env("GATEWAY__AUTH__HS256_SECRET", "s")
        .env("GATEWAY__PUBLISH__API_KEYS", "k")
        .env("GATEWAY__ADMIN__API_KEYS", "a")
        .env(
            "GATEWAY__STORAGE__URL",
            format!("sqlite://{}/gateway.db", dir.path().display()),
        )
        .env("GATEWAY__SERVER__MAX_QUEUE_BYTES", "65536")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the gateway");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the gateway started with a queue too small for its largest publication");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("publish.max_publication_bytes")
            && stderr.contains("server.max_queue_bytes"),
        "{stderr}"
    );
}
