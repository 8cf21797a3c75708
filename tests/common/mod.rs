//! Test harness: a real agentwall process on loopback ports, a real upstream that records what
//! it receives, and a raw HTTP/1.1 client for byte-exact requests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A real HTTP/1.1 upstream on loopback that records every request and counts connections.
/// `GET /slow…` answers after 3 s; anything else answers at once with body `upstream ok`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (c, s) = (connections.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, s).await;
                });
            }
        });
        Upstream {
            addr,
            connections,
            seen,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("upstream saw no request")
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve(stream: TcpStream, seen: Arc<Mutex<Vec<Seen>>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.trim_end().splitn(3, ' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).await?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(len, 0);
            reader.read_exact(&mut body).await?;
        } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).await?;
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        let slow = target.contains("/slow");
        let echo = target.contains("/echo");
        let gzip = target.contains("/gzip");
        let auth = get("authorization").unwrap_or_default();
        seen.lock().unwrap().push(Seen {
            method,
            target,
            headers,
            body,
        });
        if slow {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        if gzip {
            let stream = reader.get_mut();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 4\r\n\r\n\x1f\x8b\x08\x00")
                .await?;
            continue;
        }
        if echo {
            // Echo the credential back, in a header and split across two body chunks.
            let (a, b) = auth.split_at(auth.len() / 2);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\
                 x-echo-auth: {auth}\r\nset-cookie: a=1\r\nset-cookie: t={auth}\r\n\r\n"
            );
            let first = format!("you sent: {a}");
            let second = format!("{b} (token part {})", auth.rsplit(' ').next().unwrap_or(""));
            let stream = reader.get_mut();
            stream.write_all(head.as_bytes()).await?;
            for chunk in [first, second] {
                stream
                    .write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
                    .await?;
                stream.flush().await?;
            }
            stream.write_all(b"0\r\n\r\n").await?;
            continue;
        }
        let body = b"upstream ok";
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-upstream: yes\r\n\r\n",
            body.len()
        );
        let stream = reader.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
    }
}

/// A response read off the wire.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends raw bytes and reads one response (the connection is closed after it).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let deadline = Duration::from_secs(15);
    let _ = tokio::time::timeout(deadline, async {
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if let Some(reply) = parse_complete(&buf) {
                return Some(reply);
            }
        }
        None
    })
    .await;
    parse_complete(&buf)
        .or_else(|| parse_close_delimited(&buf))
        .unwrap_or_else(|| {
            panic!(
                "incomplete response to {:?}: {:?}",
                String::from_utf8_lossy(request),
                String::from_utf8_lossy(&buf)
            )
        })
}

/// A response without Content-Length or chunking ends when the connection closes.
fn parse_close_delimited(buf: &[u8]) -> Option<Reply> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Reply {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    })
}

fn parse_complete(buf: &[u8]) -> Option<Reply> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &buf[end + 4..];
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if let Some(len) = len {
        if rest.len() < len {
            return None;
        }
        rest[..len].to_vec()
    } else if chunked {
        let mut body = Vec::new();
        let mut r = rest;
        loop {
            let nl = r.windows(2).position(|w| w == b"\r\n")?;
            let n = usize::from_str_radix(std::str::from_utf8(&r[..nl]).ok()?.trim(), 16).ok()?;
            if n == 0 {
                break;
            }
            if r.len() < nl + 2 + n + 2 {
                return None;
            }
            body.extend_from_slice(&r[nl + 2..nl + 2 + n]);
            r = &r[nl + 2 + n + 2..];
        }
        body
    } else if status == 204 || status == 304 {
        Vec::new()
    } else {
        return None;
    };
    Some(Reply {
        status,
        headers,
        body,
    })
}

/// Sends `GET <url>` in absolute-form through the proxy.
pub async fn proxy_get(proxy: SocketAddr, url: &str, agent: &str) -> Reply {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or("");
    let req = format!(
        "GET {url} HTTP/1.1\r\nHost: {host}\r\nX-Agent-Id: {agent}\r\nConnection: close\r\n\r\n"
    );
    raw(proxy, req.as_bytes()).await
}

/// A port that was free a moment ago (agentwall binds it itself; `start` retries on a clash).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` until it returns true or the deadline passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running agentwall process with its own config, policy dir and audit store.
pub struct Agentwall {
    pub dir: tempfile::TempDir,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub child: Option<Child>,
    extra: String,
    admin_token: String,
}

impl Agentwall {
    /// Starts agentwall with `policies` (file name, text) and extra config TOML appended.
    pub async fn start(policies: &[(&str, &str)], extra_config: &str) -> Agentwall {
        Agentwall::start_with_token(policies, extra_config, "").await
    }

    /// Like `start`, with `[admin] token` set.
    pub async fn start_with_token(
        policies: &[(&str, &str)],
        extra_config: &str,
        token: &str,
    ) -> Agentwall {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        for (name, text) in policies {
            std::fs::write(dir.path().join("policies").join(name), text).unwrap();
        }
        let mut aw = Agentwall {
            dir,
            proxy: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            child: None,
            extra: extra_config.to_string(),
            admin_token: token.to_string(),
        };
        aw.launch().await;
        aw
    }

    pub fn policy_dir(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("agentwall.toml")
    }

    /// The test config: loopback ports, temp dirs, short timeouts, private egress allowed
    /// (the upstream is on loopback); `extra` TOML is merged over it.
    fn write_config(&self) {
        let d = self.dir.path();
        let base = format!(
            "[proxy]\nlisten = [\"{proxy}\"]\ngrace_period = \"1s\"\nupstream_timeout = \"1s\"\nthreads = 2\n\
             [admin]\nlisten = \"{admin}\"\ntoken = \"{token}\"\n\
             [policies]\ndir = \"{policies}\"\n\
             [audit]\ndir = \"{audit}\"\nflush_interval = \"50ms\"\n\
             [egress]\ndeny_private = false\n",
            proxy = self.proxy,
            admin = self.admin,
            token = self.admin_token,
            policies = d.join("policies").display(),
            audit = d.join("audit").display(),
        );
        let mut config: toml::Table = base.parse().unwrap();
        let extra: toml::Table = self.extra.parse().expect("extra config is TOML");
        for (key, value) in extra {
            match (config.get_mut(&key), value) {
                (Some(toml::Value::Table(base)), toml::Value::Table(more)) => base.extend(more),
                (_, value) => {
                    config.insert(key, value);
                }
            }
        }
        std::fs::write(self.config_path(), toml::to_string(&config).unwrap()).unwrap();
    }

    /// Starts (or restarts) the process on fresh ports, retrying if a port was taken meanwhile.
    pub async fn launch(&mut self) {
        for _ in 0..3 {
            self.proxy = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            self.admin = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            self.write_config();
            let log = std::fs::File::create(self.dir.path().join("agentwall.log")).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_agentwall"))
                .args(["run", "--config"])
                .arg(self.config_path())
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            self.child = Some(child);
            if self.wait_ready(Duration::from_secs(20)).await {
                return;
            }
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        panic!("agentwall did not become ready:\n{}", self.log());
    }

    async fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            if let Ok(Ok(mut s)) =
                tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(self.admin))
                    .await
            {
                let _ = s
                    .write_all(
                        b"GET /health/ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                    )
                    .await;
                let mut buf = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut buf)).await;
                if buf.starts_with(b"HTTP/1.1 200") && TcpStream::connect(self.proxy).await.is_ok()
                {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agentwall.log")).unwrap_or_default()
    }

    /// `GET` on the admin port (with an optional bearer token).
    pub async fn admin_get(&self, path_and_query: &str, token: Option<&str>) -> Reply {
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: admin\r\n{auth}Connection: close\r\n\r\n"
        );
        raw(self.admin, req.as_bytes()).await
    }

    pub async fn admin_post(&self, path: &str) -> Reply {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        raw(self.admin, req.as_bytes()).await
    }

    /// Audit records newest first, as the admin API lists them.
    pub async fn logs(&self, query: &str) -> Vec<serde_json::Value> {
        let reply = self.admin_get(&format!("/v1/logs?{query}"), None).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["records"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits (up to 5 s) for the audit record of `request_id` to be queryable.
    pub async fn record_of(&self, request_id: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let records = self.logs("limit=1000").await;
            if let Some(r) = records.into_iter().find(|r| r["request_id"] == request_id) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no audit record for {request_id}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().expect("not running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("agentwall did not exit within {within:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn write_policy(&self, name: &str, text: &str) {
        write_atomically(&self.policy_dir().join(name), text);
    }
}

/// Writes like an editor does: a temporary file, then a rename over the target.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl Drop for Agentwall {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A policy allowing every agent to reach loopback hosts, denying `/secret/**`.
pub const LOCAL_POLICY: &str = r#"
name = "local"
[[rules]]
id = "loopback"
effect = "allow"
hosts = ["127.0.0.1", "localhost"]
[[rules]]
id = "no-secrets"
effect = "deny"
reason = "secret paths are off limits"
paths = ["/secret/**"]
"#;

pub fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Generates a private key (`kind`: rsa, p256, p384, ed25519) and its public PEM.
pub fn keypair(dir: &Path, kind: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{kind}.key"));
    let public = dir.join(format!("{kind}.pub.pem"));
    let p = private.to_str().unwrap();
    match kind {
        "rsa" => openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            p,
        ]),
        "p256" => openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            p,
        ]),
        "p384" => openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            p,
        ]),
        "ed25519" => openssl(&["genpkey", "-algorithm", "ed25519", "-out", p]),
        other => panic!("{other}"),
    }
    openssl(&[
        "pkey",
        "-in",
        p,
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    (private, public)
}
