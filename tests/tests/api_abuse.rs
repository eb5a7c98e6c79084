//! Hostile HTTP clients against one real node: oversized bodies, invalid UTF-8, huge headers,
//! slow-loris clients and 10,000 open connections. Each must get a 4xx or be cut off, and the
//! node must go on answering well-behaved clients meanwhile and afterwards.

use std::time::{Duration, Instant};

use anyhow::Context;
use orgmesh_tests::{HARNESS_TOKEN, Node, NodeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short, so the slow-loris test need not wait the default 10 s.
const HEADER_TIMEOUT_MS: u64 = 1500;

async fn start() -> anyhow::Result<Node> {
    raise_open_files();
    let opts =
        NodeOptions { api_toml: format!("header_timeout_ms = {HEADER_TIMEOUT_MS}\n"), ..Default::default() };
    Node::start("acme", &opts).await
}

/// The test process holds thousands of sockets itself.
fn raise_open_files() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on a local, fully initialised struct.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn addr(node: &Node) -> String {
    node.api.trim_start_matches("http://").trim_end_matches('/').to_string()
}

/// Sends `request` on a fresh connection and reads until the server closes it or `wait` passes:
/// the response's status (0 if none came) and its text.
async fn raw(node: &Node, request: &[u8], wait: Duration) -> anyhow::Result<(u16, String)> {
    let mut tcp = TcpStream::connect(addr(node)).await?;
    // The server may answer (and close) before it read everything, e.g. a 413 or 431.
    let _ = tcp.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, tcp.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, text))
}

/// The node still serves a well-behaved client: `/healthz` and an authenticated list.
async fn still_serving(node: &Node, when: &str) -> anyhow::Result<()> {
    let (status, _) = node.get("/healthz").await.with_context(|| format!("healthz {when}"))?;
    anyhow::ensure!(status == 200, "healthz {when}: {status}");
    let (status, body) = node.get("/v1/tasks?limit=1").await.with_context(|| format!("list {when}"))?;
    anyhow::ensure!(status == 200, "list {when}: {status} {body}");
    Ok(())
}

fn post(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {HARNESS_TOKEN}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_get_4xx_and_lose_nothing() -> anyhow::Result<()> {
    let node = start().await?;
    let wait = Duration::from_secs(5);

    // A body over the limit (1 MiB by default), declared and streamed without a length.
    let big = vec![b'a'; 4 << 20];
    let (status, text) = raw(&node, &post("/v1/tasks", "application/json", &big), wait).await?;
    assert_eq!(status, 413, "declared oversized body: {text:.300}");
    assert!(text.contains("application/problem+json"), "413 is problem+json: {text:.300}");
    let mut chunked = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {HARNESS_TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..64 {
        chunked.extend_from_slice(format!("{:x}\r\n", 64 << 10).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', 64 << 10));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, text) = raw(&node, &chunked, wait).await?;
    assert_eq!(status, 413, "chunked oversized body: {text:.300}");

    // Invalid UTF-8: in a JSON body, in the path, in a query value, in a header value.
    let (status, text) =
        raw(&node, &post("/v1/tasks", "application/json", b"{\"command\":[\"\xff\xfe\"]}"), wait).await?;
    assert!((400..500).contains(&status), "invalid UTF-8 body: {text:.300}");
    assert!(text.contains("application/problem+json"), "{text:.300}");
    for request in [
        &b"GET /v1/tasks/\xff\xfe HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"[..],
        &b"GET /v1/tasks?status=\xc3\x28 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"[..],
        &b"GET /v1/tasks HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n"
            [..],
    ] {
        let (status, text) = raw(&node, request, wait).await?;
        assert!((400..500).contains(&status), "{:?}: {text:.300}", String::from_utf8_lossy(request));
    }
    // Not JSON at all, and JSON of the wrong shape.
    for (ctype, body) in [
        ("application/json", &b"{\"command\": [\"true\""[..]),
        ("application/json", &b"[1, 2, 3]"[..]),
        ("application/json", &b"{\"command\": \"not a list\"}"[..]),
    ] {
        let (status, text) = raw(&node, &post("/v1/tasks", ctype, body), wait).await?;
        assert!((400..500).contains(&status), "{ctype} {:?}: {text:.300}", String::from_utf8_lossy(body));
        assert!(text.contains("application/problem+json"), "{text:.300}");
    }

    // A web page in the admin's browser posting a task across sites (a form or a `text/plain`
    // fetch needs no CORS preflight), and a page that rebound its DNS name to 127.0.0.1.
    let body = br#"{"command": ["sh", "-c", "echo pwned"]}"#;
    let csrf = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: {}\r\nOrigin: https://evil.example\r\nSec-Fetch-Site: cross-site\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        addr(&node),
        body.len()
    );
    let (status, text) = raw(&node, &[csrf.as_bytes(), body].concat(), wait).await?;
    assert_eq!(status, 403, "cross-site POST: {text:.300}");
    let rebound = "GET /v1/tasks HTTP/1.1\r\nHost: evil.example:7070\r\nConnection: close\r\n\r\n";
    let (status, text) = raw(&node, rebound.as_bytes(), wait).await?;
    assert_eq!(status, 403, "tokenless request for another Host: {text:.300}");

    // Huge headers: one 1 MiB value, and 5,000 small ones.
    let huge = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20));
    let (status, _) = raw(&node, huge.as_bytes(), wait).await?;
    assert!(status == 431 || status == 0, "a 1 MiB header gets 431 or a closed connection, not {status}");
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: localhost\r\n");
    for i in 0..5000 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let (status, _) = raw(&node, many.as_bytes(), wait).await?;
    assert!(status == 431 || status == 0, "5,000 headers get 431 or a closed connection, not {status}");

    still_serving(&node, "after the malformed requests").await?;
    let (_, tasks) = node.get("/v1/tasks").await?;
    assert_eq!(tasks["items"].as_array().map(Vec::len), Some(0), "no malformed request made a task: {tasks}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_clients_are_cut_off_and_others_are_served() -> anyhow::Result<()> {
    let node = start().await?;
    // 500 clients that each send a byte of their request head every 300 ms, forever.
    let mut slow = Vec::new();
    for _ in 0..500 {
        let mut tcp = TcpStream::connect(addr(&node)).await?;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\n").await?;
        slow.push(tcp);
    }
    let started = Instant::now();
    let drip = tokio::spawn(async move {
        let mut cut_off = vec![None; slow.len()];
        for round in 0u32.. {
            for (i, tcp) in slow.iter_mut().enumerate() {
                if cut_off[i].is_none() && tcp.write_all(b"X").await.is_err() {
                    cut_off[i] = Some(started.elapsed());
                }
            }
            if cut_off.iter().all(Option::is_some) || round > 100 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        cut_off
    });
    // Served while they drip.
    for _ in 0..5 {
        still_serving(&node, "during the slow-loris clients").await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cut_off = drip.await?;
    let survivors = cut_off.iter().filter(|c| c.is_none()).count();
    assert_eq!(survivors, 0, "{survivors} slow clients still connected after 30 s");
    let latest = cut_off.iter().flatten().max().copied().unwrap_or_default();
    // A write can succeed once more after the server closed; the next one fails.
    assert!(
        latest < Duration::from_millis(HEADER_TIMEOUT_MS * 4),
        "slow clients were cut off only after {latest:?} (header timeout {HEADER_TIMEOUT_MS} ms)"
    );
    still_serving(&node, "after the slow-loris clients").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_open_connections_leave_the_node_serving() -> anyhow::Result<()> {
    let node = start().await?;
    let target = addr(&node);
    let mut open = Vec::with_capacity(10_000);
    let mut refused = 0usize;
    while open.len() + refused < 10_000 {
        match TcpStream::connect(&target).await {
            Ok(tcp) => open.push(tcp),
            // The listen backlog can overflow while the node accepts; that is the kernel's
            // answer, not the node's failure.
            Err(_) => refused += 1,
        }
    }
    assert!(open.len() >= 9_000, "only {} of 10,000 connections opened ({refused} refused)", open.len());
    // Half of them send a request and keep the connection; the rest stay silent.
    for tcp in open.iter_mut().step_by(2) {
        let _ = tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    }
    still_serving(&node, "with 10,000 connections open").await?;
    // Task submission still works end to end.
    let id = node.submit(&serde_json::json!({"command": ["true"]})).await?;
    let task = node.wait_terminal(&id, Duration::from_secs(30)).await?;
    assert_eq!(task["status"], "succeeded", "{task}");
    // The silent ones are closed by the header timeout, the others at the same idle timeout.
    tokio::time::sleep(Duration::from_millis(HEADER_TIMEOUT_MS * 2)).await;
    let mut closed = 0;
    for tcp in &mut open {
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_millis(1), tcp.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed += 1;
                    break;
                }
                Ok(Ok(_)) => continue,
                Err(_) => break,
            }
        }
    }
    assert!(closed >= open.len() * 9 / 10, "only {closed} of {} idle connections were closed", open.len());
    drop(open);
    still_serving(&node, "after the 10,000 connections").await?;
    Ok(())
}
