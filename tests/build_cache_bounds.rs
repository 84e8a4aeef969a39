//! The build-cache calls of the Docker adapter (`GET /system/df` and `POST /build/prune`, made
//! without bollard's models) are bounded like every other engine call: the call deadline
//! (`IMAGEGC_ENGINE_TIMEOUT`) covers a body that stalls, the answer cap stops an endless one, and
//! a 404 on `/build/prune` (Podman) is an engine without a build cache, not a missing record.
//! Against a tiny server on a unix socket; one test in this binary, since it sets the deadline in
//! its own environment.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imagegc::engine::{Engine, EngineError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nApi-Version: 1.41\r\n";

async fn serve(mut conn: UnixStream, prunes: Arc<AtomicUsize>) {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let target = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_owned();
    let json = |body: &str| {
        format!(
            "{OK}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    if target.ends_with("/version") {
        let body = r#"{"ApiVersion":"1.41","MinAPIVersion":"1.12","Version":"20.10.99"}"#;
        let _ = conn.write_all(json(body).as_bytes()).await;
    } else if target.ends_with("/info") {
        // Read at connect time for the engine's flavor: a graph-driver Docker.
        let body = r#"{"Driver":"overlay2","DockerRootDir":"/var/lib/docker"}"#;
        let _ = conn.write_all(json(body).as_bytes()).await;
    } else if target.contains("/system/df") {
        // Headers and the start of a body, then nothing.
        let _ = conn
            .write_all(format!("{OK}Content-Length: 1000000\r\n\r\n{{\"BuildCache\":[").as_bytes())
            .await;
        std::future::pending::<()>().await;
    } else if target.contains("/build/prune") {
        if prunes.fetch_add(1, Ordering::SeqCst) == 0 {
            // An answer without end.
            if conn
                .write_all(format!("{OK}Connection: close\r\n\r\n{{\"CachesDeleted\":[").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            let block = "\"aaaaaaaaaaaaaaaaaaaaaaaaa\",".repeat(2048);
            while conn.write_all(block.as_bytes()).await.is_ok() {}
        } else {
            let body = r#"{"message":"page not found"}"#;
            let reply = format!(
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    }
    let _ = conn.shutdown().await;
}

#[tokio::test]
async fn build_cache_calls_are_bounded_in_time_and_size_and_a_404_prune_is_no_build_cache() {
    // The only test of this binary: no other thread reads the environment.
    std::env::set_var(imagegc::docker::CALL_TIMEOUT_ENV, "2s");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("engine.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let prunes = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&prunes);
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(serve(conn, Arc::clone(&counter)));
        }
    });
    let docker = imagegc::docker::Docker::connect(&format!("unix://{}", socket.display()))
        .await
        .expect("connect");

    let started = Instant::now();
    let stalled = docker.build_cache().await;
    let waited = started.elapsed();
    assert!(
        matches!(&stalled, Err(EngineError::Unavailable { reason, .. })
            if reason.contains("GET /system/df: no complete answer within 2s")),
        "{stalled:?}"
    );
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(10),
        "{waited:?}"
    );

    let endless = docker
        .remove_cache_record("v54x1ylxtbn1sp5t589q363o7")
        .await;
    assert!(
        matches!(&endless, Err(EngineError::Other(m))
            if m.contains("more than 64 MiB in answer to POST /") && m.contains("/build/prune")),
        "{endless:?}"
    );

    let missing = docker
        .remove_cache_record("v54x1ylxtbn1sp5t589q363o7")
        .await;
    assert!(
        matches!(&missing, Err(EngineError::Unsupported(m)) if m.contains("no build cache")),
        "{missing:?}"
    );
    assert_eq!(prunes.load(Ordering::SeqCst), 2);
}
