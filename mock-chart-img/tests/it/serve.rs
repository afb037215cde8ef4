//! The binary as a service: settings from the environment (`MOCK_CHART_IMG_*`, `PORT`, keys), the one `ready`
//! line, `/__admin` on the API port behind a token, and the `healthcheck` subcommand. Real processes, real HTTP.

use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Child, Command, Stdio},
    sync::mpsc::Receiver,
    time::Duration,
};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mock-chart-img");
/// Every variable the binary reads, cleared so the test's own environment cannot leak in.
const SETTINGS: &[&str] = &[
    "PORT",
    "MOCK_CHART_IMG_CONFIG",
    "MOCK_CHART_IMG_LISTEN",
    "MOCK_CHART_IMG_ADMIN_LISTEN",
    "MOCK_CHART_IMG_ADMIN_TOKEN",
    "MOCK_CHART_IMG_KEYS",
    "MOCK_CHART_IMG_ACCOUNTS_JSON",
    "CHART_IMG_ACCOUNTS_JSON",
    "MOCK_CHART_IMG_SEED",
    "MOCK_CHART_IMG_STORAGE_DIR",
    "MOCK_CHART_IMG_LATENCY",
    "MOCK_CHART_IMG_TIME_SCALE",
    "MOCK_CHART_IMG_PRETTY_LOGS",
    "MOCK_CHART_IMG_LOG_SUMMARY_SECS",
    "RUST_LOG",
];

/// One HTTP/1.1 GET (or POST with `body`) over a plain socket: status and body.
pub fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP answer") + 4;
    let head = String::from_utf8_lossy(&out[..head_end]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = out[head_end..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}

/// A GET: status and body as text.
pub fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (s, b) = request(addr, "GET", path, headers, "");
    (s, String::from_utf8_lossy(&b).into_owned())
}

/// The running binary, its `ready` line and the lines it logged so far.
struct Running {
    child: Child,
    ready: Value,
    lines: Vec<String>,
    rest: Receiver<String>,
}

impl Running {
    /// Starts the binary with only `env` (and `args`) and waits for `"message":"ready"`.
    fn start(args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut cmd = Command::new(BIN);
        cmd.args(args).stderr(Stdio::piped());
        for v in SETTINGS {
            cmd.env_remove(v);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        // Owned from here: a panic below kills the child (Drop).
        let mut run = Running {
            child,
            ready: Value::Null,
            lines: Vec::new(),
            rest: rx,
        };
        loop {
            let line = run
                .rest
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no ready line; logged: {:?}", run.lines));
            run.lines.push(line.clone());
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if v["message"] == "ready" {
                run.ready = v;
                return run;
            }
        }
    }

    fn listen(&self) -> String {
        self.ready["listen"].as_str().unwrap().replace("0.0.0.0", "127.0.0.1")
    }

    /// SIGTERM, a clean exit, and every line logged.
    fn stop(mut self) -> Vec<String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        assert!(self.child.wait().unwrap().success());
        self.lines.extend(self.rest.try_iter());
        std::mem::take(&mut self.lines)
    }
}

impl Drop for Running {
    /// A failed assertion must not leave the server running (it would hold the test's output pipe open).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().map_while(Result::ok) {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

/// A port the binary can take on every address, with the next one free on loopback too: on a non-loopback address
/// the admin API moves to 127.0.0.1 on the next port. Drawn below Linux's ephemeral range (32768–60999), so no
/// outgoing connection of a test running beside this one takes either meanwhile (a port from `bind(0)` left the next
/// one to chance, and a fresh-clone CI run failed on `cannot listen on …: Address already in use`).
fn free_port() -> u16 {
    use rand::Rng as _;
    let mut rng = rand::rng();
    loop {
        let p: u16 = rng.random_range(20_000..32_000);
        let free = |addr: (&str, u16)| std::net::TcpListener::bind(addr).is_ok();
        if free(("0.0.0.0", p)) && free(("127.0.0.1", p + 1)) && free(("0.0.0.0", p + 1)) {
            return p;
        }
    }
}

const CHART_BODY: &str = r#"{"symbol":"BINANCE:BTCUSDT","interval":"1D"}"#;

fn chart(addr: &str, key: &str) -> (u16, Vec<u8>) {
    request(
        addr,
        "POST",
        "/v2/tradingview/advanced-chart",
        &[("x-api-key", key), ("content-type", "application/json")],
        CHART_BODY,
    )
}

#[test]
fn environment_only_port_keys_short_form_and_accounts_json() {
    let port = free_port();
    let accounts = r#"[{"id":"acc-json","apiKey":"json-secret-key","dailyLimit":7,"plan":"MEGA"}]"#;
    let storage = tempfile::tempdir().unwrap();
    let run = Running::start(
        &[],
        &[
            ("MOCK_CHART_IMG_STORAGE_DIR", storage.path().to_str().unwrap()),
            ("PORT", &port.to_string()),
            ("MOCK_CHART_IMG_KEYS", "short-secret-key:PRO, named=named-secret-key"),
            ("CHART_IMG_ACCOUNTS_JSON", accounts),
            // The admin API is then on the API port, behind the token.
            ("MOCK_CHART_IMG_ADMIN_TOKEN", "admin-secret-token"),
            ("MOCK_CHART_IMG_LOG_SUMMARY_SECS", "0"),
        ],
    );
    // PORT: 0.0.0.0:$PORT, as Cloud Run expects.
    assert_eq!(run.ready["listen"], format!("0.0.0.0:{port}"), "{}", run.ready);
    assert_eq!(run.ready["keys"], 3);
    assert_eq!(run.ready["key_sources"], "MOCK_CHART_IMG_KEYS, CHART_IMG_ACCOUNTS_JSON");
    let addr = run.listen();
    for key in ["short-secret-key", "named-secret-key", "json-secret-key"] {
        let (status, png) = chart(&addr, key);
        assert_eq!(status, 200, "{key}: {}", String::from_utf8_lossy(&png));
        assert!(png.starts_with(b"\x89PNG"), "{key}");
    }
    assert_eq!(chart(&addr, "not-a-key").0, 403);
    // Stored images go where MOCK_CHART_IMG_STORAGE_DIR says (the image's /data).
    let (status, _) = request(
        &addr,
        "POST",
        "/v2/tradingview/advanced-chart/storage",
        &[("x-api-key", "short-secret-key"), ("content-type", "application/json")],
        CHART_BODY,
    );
    assert_eq!(status, 200);
    let stored = walk(storage.path());
    assert!(stored.iter().any(|p| p.ends_with(".png")), "{stored:?}");
    let (s, keys) = get(
        &addr,
        "/__admin/keys",
        &[("authorization", "Bearer admin-secret-token")],
    );
    assert_eq!(s, 200, "{keys}");
    let keys: Value = serde_json::from_str(&keys).unwrap();
    let summary: Vec<(String, String, u64)> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["account"].as_str().unwrap().into(),
                k["plan"].as_str().unwrap().into(),
                k["limits"]["daily_limit"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("acc-json".into(), "MEGA".into(), 7),
            ("key-1".into(), "PRO".into(), 500),
            ("named".into(), "BASIC".into(), 50),
        ]
    );
    let lines = run.stop();
    let all = lines.join("\n");
    for secret in [
        "short-secret-key",
        "named-secret-key",
        "json-secret-key",
        "admin-secret-token",
    ] {
        assert!(!all.contains(secret), "a secret in the logs: {all}");
    }
    // One start-up line only.
    assert_eq!(
        lines.iter().filter(|l| l.contains("\"message\":\"ready\"")).count(),
        1,
        "{all}"
    );
}

#[test]
fn admin_on_the_api_port_needs_the_token_health_does_not() {
    let run = Running::start(
        &["--listen", "0.0.0.0:0"],
        &[
            ("MOCK_CHART_IMG_KEYS", "k1:BASIC"),
            ("MOCK_CHART_IMG_ADMIN_TOKEN", "admin-secret-token"),
            ("MOCK_CHART_IMG_LOG_SUMMARY_SECS", "0"),
        ],
    );
    assert_eq!(run.ready["admin_on_api_port"], true);
    assert_eq!(run.ready["admin_token"], true);
    let addr = run.listen();
    let (s, body) = get(&addr, "/__admin/health", &[]);
    assert_eq!(
        (s, serde_json::from_str::<Value>(&body).unwrap()["status"].clone()),
        (200, "ok".into())
    );

    let refused = |headers: &[(&str, &str)], says: &str| {
        let (s, body) = get(&addr, "/__admin/requests", headers);
        assert_eq!(s, 401, "{headers:?}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let m = v["message"].as_str().unwrap();
        assert!(m.contains(says), "{headers:?}: {m}");
        assert!(!m.contains("admin-secret-token"), "{m}");
    };
    refused(&[], "no Authorization header");
    refused(&[("authorization", "Basic abc")], "must be `Bearer <token>`");
    refused(
        &[("authorization", "Bearer admin-secret-tokeN")],
        "is not MOCK_CHART_IMG_ADMIN_TOKEN",
    );
    // The dashboard and reset are behind it too.
    for (method, path) in [
        ("GET", "/__admin/ui"),
        ("POST", "/__admin/reset"),
        ("GET", "/__admin/config"),
    ] {
        assert_eq!(request(&addr, method, path, &[], "").0, 401, "{method} {path}");
    }
    let ok = [("authorization", "Bearer admin-secret-token")];
    assert_eq!(get(&addr, "/__admin/requests", &ok).0, 200);
    assert_eq!(request(&addr, "POST", "/__admin/reset", &ok, "").0, 204);
    // The Chart-IMG routes do not care about the admin token.
    assert_eq!(chart(&addr, "k1").0, 200);
    run.stop();
}

#[test]
fn without_a_token_a_public_listener_has_health_only_and_admin_stays_on_loopback() {
    let run = Running::start(
        &["--listen", "0.0.0.0:0"],
        &[
            ("MOCK_CHART_IMG_ADMIN_LISTEN", "127.0.0.1:0"),
            ("MOCK_CHART_IMG_LOG_SUMMARY_SECS", "0"),
        ],
    );
    assert_eq!(run.ready["admin_on_api_port"], false);
    let addr = run.listen();
    let admin = run.ready["admin"].as_str().unwrap().to_string();
    assert_ne!(admin, addr);
    assert_eq!(get(&addr, "/__admin/health", &[]).0, 200);
    let (s, body) = get(&addr, "/__admin/requests", &[]);
    assert_eq!((s, body.as_str()), (404, r#"{"message":"Route Not Found"}"#));
    assert_eq!(get(&admin, "/__admin/requests", &[]).0, 200);
    run.stop();
}

#[test]
fn healthcheck_reads_the_same_address_settings_and_exits_0_or_1() {
    let port = free_port();
    let run = Running::start(
        &[],
        &[("PORT", &port.to_string()), ("MOCK_CHART_IMG_LOG_SUMMARY_SECS", "0")],
    );
    let healthcheck = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.arg("healthcheck");
        for v in SETTINGS {
            cmd.env_remove(v);
        }
        let out = cmd.envs(env.iter().copied()).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(healthcheck(&[("PORT", &port.to_string())]), (Some(0), String::new()));
    let listen = format!("127.0.0.1:{port}");
    assert_eq!(healthcheck(&[("MOCK_CHART_IMG_LISTEN", &listen)]).0, Some(0));
    run.stop();
    let (code, err) = healthcheck(&[("PORT", &port.to_string())]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}/__admin/health")), "{err}");
}

#[test]
fn bad_settings_from_the_environment_are_refused_naming_the_variable_never_the_key() {
    let refused = |env: &[(&str, &str)], says: &str| {
        let mut cmd = Command::new(BIN);
        for v in SETTINGS {
            cmd.env_remove(v);
        }
        let out = cmd.envs(env.iter().copied()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {err}");
        assert!(err.contains(says), "{env:?}: {err}");
        assert!(!err.contains("very-secret"), "{err}");
    };
    refused(
        &[("MOCK_CHART_IMG_KEYS", "good-key:PRO,very-secret:GOLD")],
        "MOCK_CHART_IMG_KEYS: entry 2: unknown plan `GOLD`",
    );
    refused(
        &[("MOCK_CHART_IMG_KEYS", "a=very-secret,a=very-secret-2")],
        "account `a` is listed twice",
    );
    refused(
        &[("CHART_IMG_ACCOUNTS_JSON", r#"[{"id":"x","apiKey":"very-secret""#)],
        "CHART_IMG_ACCOUNTS_JSON",
    );
    refused(&[("PORT", "http")], "PORT=\"http\" is not a port number");
    // A flag's variable with a value not in its list: the variable, the flag and the values allowed.
    refused(
        &[("MOCK_CHART_IMG_LATENCY", "slow")],
        "invalid value 'slow' for MOCK_CHART_IMG_LATENCY / --latency: expected one of: instant, realistic",
    );
    refused(
        &[("MOCK_CHART_IMG_V1", "maybe")],
        "invalid value 'maybe' for MOCK_CHART_IMG_V1 / --v1: expected one of: off, emulate",
    );
}

#[test]
fn keys_from_the_environment_survive_a_config_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mock.yaml");
    std::fs::write(&path, "keys:\n  - {key: file-key, account: from-file, plan: PRO}\n").unwrap();
    let run = Running::start(
        &["--listen", "127.0.0.1:0"],
        &[
            ("MOCK_CHART_IMG_CONFIG", path.to_str().unwrap()),
            ("MOCK_CHART_IMG_KEYS", "env-key:PRO"),
            ("MOCK_CHART_IMG_SEED", "5"),
            ("MOCK_CHART_IMG_LOG_SUMMARY_SECS", "0"),
        ],
    );
    assert_eq!(run.ready["key_sources"], "config file, MOCK_CHART_IMG_KEYS");
    let addr = run.listen();
    std::fs::write(
        &path,
        "seed: 9\nkeys:\n  - {key: file-key-2, account: from-file, plan: PRO}\n",
    )
    .unwrap();
    let mut reloaded = false;
    for _ in 0..100 {
        if chart(&addr, "file-key-2").0 == 200 {
            reloaded = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(reloaded, "the edited file was not applied");
    assert_eq!(
        chart(&addr, "env-key").0,
        200,
        "the environment's key was lost on reload"
    );
    // The flag's (variable's) seed stays in force over the file's.
    let (_, config) = get(&addr, "/__admin/config", &[]);
    assert_eq!(serde_json::from_str::<Value>(&config).unwrap()["seed"], 5, "{config}");
    run.stop();
}
