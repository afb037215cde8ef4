//! The worker's `serve` entrypoint as a real child process: a crash is a real SIGKILL, a shutdown a real SIGTERM
//! (timed to the exit), and Cloud Run's "new instance" a new process with a new worker id.
//!
//! The program is the harness's `worker-serve` binary ([`crate::serve`]: the worker's own serve path, bound to
//! 127.0.0.1). Which file that is: the caller passes it (`env!("CARGO_BIN_EXE_…")` of a crate that declares such
//! a binary, as the `tests` crate does, so `cargo test` always builds it fresh), or [`locate`] finds it next to the
//! running executable's target directory.
//!
//! Each process gets `PORT` (a free port of 127.0.0.1, picked just before the start) and `HOST=127.0.0.1`, the
//! environment given (nothing else of the parent's but `PATH`), and its stdout/stderr lines are kept: the worker's
//! JSON log lines, readable while it runs and after it exited.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// What to start.
#[derive(Debug, Clone)]
pub struct ServeSpec {
    /// A name for logs and reports (`serve-1`).
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The whole environment of the child, besides `PATH`, `PORT` and `HOST`.
    pub env: BTreeMap<String, String>,
    /// How long to wait for `GET /health` to answer 200.
    pub ready_timeout: Duration,
}

impl ServeSpec {
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        ServeSpec {
            name: name.into(),
            program: program.into(),
            args: vec!["serve".into()],
            env: BTreeMap::new(),
            ready_timeout: Duration::from_secs(30),
        }
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }
}

/// The binary `name` in the target directory of the running executable (`target/<profile>/<name>`, the test
/// executable being `target/<profile>/deps/<test>-<hash>`), or an error saying how to build it.
pub fn locate(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        let candidate = d.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        if d.file_name().is_some_and(|n| n == "target") {
            break;
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    anyhow::bail!(
        "no {name} binary next to {}; build it with `cargo build -p harness --bin {name}`",
        exe.display()
    )
}

/// A free port of 127.0.0.1 (bound by the kernel, then released for the child to take).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A running (or exited) child.
pub struct ServeProcess {
    pub name: String,
    pub port: u16,
    pid: u32,
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    started: Instant,
    exit: Option<ExitStatus>,
}

impl std::fmt::Debug for ServeProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeProcess")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .field("port", &self.port)
            .finish()
    }
}

impl ServeProcess {
    /// Starts the child and waits until `GET /health` answers 200; an early exit or a timeout is an error that
    /// carries the child's output.
    pub async fn start(spec: ServeSpec) -> anyhow::Result<ServeProcess> {
        let port = free_port()?;
        let mut cmd = tokio::process::Command::new(&spec.program);
        cmd.args(&spec.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&spec.env)
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("{}: cannot start {}", spec.name, spec.program.display()))?;
        let pid = child.id().context("the child has no pid")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        for out in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(out).lines();
                while let Ok(Some(l)) = r.next_line().await {
                    lines.lock().unwrap_or_else(|p| p.into_inner()).push(l);
                }
            });
        }
        let mut p = ServeProcess {
            name: spec.name,
            port,
            pid,
            child,
            lines,
            started: Instant::now(),
            exit: None,
        };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let deadline = Instant::now() + spec.ready_timeout;
        loop {
            if let Some(status) = p.child.try_wait()? {
                p.exit = Some(status);
                tokio::time::sleep(Duration::from_millis(50)).await;
                anyhow::bail!(
                    "{} exited ({status}) before it was ready:\n{}",
                    p.name,
                    p.logs().join("\n")
                );
            }
            if let Ok(r) = http.get(format!("{}/health", p.url())).send().await {
                if r.status().is_success() {
                    return Ok(p);
                }
            }
            if Instant::now() >= deadline {
                p.kill().await;
                anyhow::bail!(
                    "{} did not answer /health within {:?}:\n{}",
                    p.name,
                    spec.ready_timeout,
                    p.logs().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `http://127.0.0.1:<port>/`, where Eventarc posts.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Since the process was started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Every line it wrote so far (stdout and stderr, interleaved as read).
    pub fn logs(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The lines that are JSON objects (the worker's Cloud Logging lines).
    pub fn json_logs(&self) -> Vec<Value> {
        self.logs()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        if self.exit.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(s)) => {
                self.exit = Some(s);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill(&mut self) {
        if self.running() {
            let _ = self.child.start_kill();
        }
        if let Ok(s) = self.child.wait().await {
            self.exit.get_or_insert(s);
        }
    }

    /// SIGTERM, then wait up to `budget` for the exit; past it, SIGKILL. Returns how long it took to exit after
    /// the signal, and whether it exited by itself.
    pub async fn terminate(&mut self, budget: Duration) -> anyhow::Result<Terminated> {
        anyhow::ensure!(self.running(), "{} is not running", self.name);
        let pid = rustix::process::Pid::from_raw(self.pid as i32).context("pid 0")?;
        let t0 = Instant::now();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .with_context(|| format!("cannot signal {}", self.name))?;
        match tokio::time::timeout(budget, self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                self.exit = Some(status);
                Ok(Terminated {
                    after: t0.elapsed(),
                    by_itself: true,
                    status: Some(status),
                })
            }
            Err(_) => {
                self.kill().await;
                Ok(Terminated {
                    after: t0.elapsed(),
                    by_itself: false,
                    status: self.exit,
                })
            }
        }
    }
}

/// How a SIGTERM ended.
#[derive(Debug, Clone, Copy)]
pub struct Terminated {
    /// From the signal to the exit.
    pub after: Duration,
    /// False when it was still running at the end of the budget (and was then killed).
    pub by_itself: bool,
    pub status: Option<ExitStatus>,
}
