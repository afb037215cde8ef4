//! A Firestore emulator of one's own: `fleet-sim --freeze-firestore-every-secs` freezes the emulator it runs against
//! (SIGSTOP/SIGCONT), which must never be the one other tests share. Started as `scripts/emulators.sh` starts it
//! (java directly, in its own process group, on a free port of 127.0.0.1), ready when `GET /` answers `Ok`, and
//! stopped (SIGCONT first, then SIGKILL) when dropped.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustix::process::{kill_process, Pid, Signal};

/// Where the machine image's package `google-cloud-cli-firestore-emulator` puts the jar (`FIRESTORE_EMULATOR_JAR`
/// overrides it, as for `scripts/emulators.sh`).
const DEFAULT_JAR: &str = "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar";

/// A running private Firestore emulator.
#[derive(Debug)]
pub struct PrivateFirestore {
    child: Child,
    /// `127.0.0.1:<port>`, as `FIRESTORE_EMULATOR_HOST` wants it.
    pub host: String,
    log: PathBuf,
}

impl PrivateFirestore {
    /// Starts the emulator and waits (up to `limit`) until it answers.
    pub fn start(limit: Duration) -> anyhow::Result<Self> {
        let jar = std::env::var("FIRESTORE_EMULATOR_JAR").unwrap_or_else(|_| DEFAULT_JAR.into());
        anyhow::ensure!(
            std::path::Path::new(&jar).is_file(),
            "the Firestore emulator jar is not at {jar} (package google-cloud-cli-firestore-emulator; FIRESTORE_EMULATOR_JAR overrides the path)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("no free port on 127.0.0.1")?
            .port();
        let log = std::env::temp_dir().join(format!("fleet-sim-firestore-{port}.log"));
        let out = std::fs::File::create(&log).with_context(|| format!("cannot write {}", log.display()))?;
        let child = Command::new("java")
            .arg("-cp")
            .arg(&jar)
            .arg("com.google.cloud.datastore.emulator.firestore.CloudFirestore")
            .arg("--host=127.0.0.1")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // Its own process group: a Ctrl-C of fleet-sim's terminal does not reach it half-way.
            .process_group(0)
            .spawn()
            .context("cannot start java (the Firestore emulator needs a Java runtime on PATH)")?;
        let mut emu = PrivateFirestore {
            child,
            host: format!("127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + limit;
        loop {
            if emu.answers_ok() {
                return Ok(emu);
            }
            if let Ok(Some(status)) = emu.child.try_wait() {
                anyhow::bail!(
                    "the private Firestore emulator exited during start-up ({status}); its log: {}",
                    emu.log.display()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the private Firestore emulator did not answer on {} within {limit:?}; its log: {}",
                emu.host,
                emu.log.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The emulator's process id (what a freeze signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn answers_ok(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(&self.host) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(format!("GET / HTTP/1.0\r\nHost: {}\r\n\r\n", self.host).as_bytes())
            .is_err()
        {
            return false;
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.") && answer.contains(" 200 ") && answer.trim_end().ends_with("Ok")
    }
}

impl Drop for PrivateFirestore {
    fn drop(&mut self) {
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            // A stopped JVM would hold a SIGTERM pending: wake it, then end it.
            let _ = kill_process(pid, Signal::CONT);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// SIGSTOP (`frozen`) or SIGCONT of a process.
pub fn freeze(pid: u32, frozen: bool) -> anyhow::Result<()> {
    let p = Pid::from_raw(pid as i32).context("pid 0")?;
    kill_process(p, if frozen { Signal::STOP } else { Signal::CONT })
        .with_context(|| format!("cannot signal pid {pid}"))
}
