//! Headless Chromium for the workspace's browser tests, driven as a plain process (`--dump-dom`, `--screenshot`):
//! no DevTools client, nothing to compile but this file.
//!
//! - [`Chromium::for_test`] finds the browser (`$CHROMIUM`, else `/usr/bin/chromium`, else `chromium` /
//!   `chromium-browser` on `PATH`). When it is missing, the test fails with a message naming the fix if browser tests
//!   are required (`CI` set or `REQUIRE_EMULATORS=1`, as for the emulator tests), and prints `SKIPPED …` otherwise.
//!   `scripts/test.sh` installs the Debian package `chromium`; nothing here installs anything.
//! - [`with_probe`] puts a test's script at the top of a page's `<head>`, before any Content-Security-Policy `<meta>`
//!   (a `<meta>` policy only governs what comes after it), so the page under test keeps its own policy. The script
//!   hands its findings to `__probe(value)`, which writes them into the DOM; [`Chromium::dump_dom`] prints the DOM
//!   after the page's `load` handlers ran, and [`probe_result`] reads the value back.
//! - [`Chromium::launch`] keeps a browser running with its DevTools endpoint on a loopback port the kernel picks, for
//!   pages that must be acted on (click, wait, screenshot): [`devtools::Page`].
//! - Every launch gets a fresh `--user-data-dir`, the flags of [`FLAGS`] (no sandbox — tests run as root in CI —,
//!   no GPU, no QUIC, no first-run, no background or component networking, no sync) and a time limit.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

pub mod devtools;

/// The flags of every launch.
pub const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
];

/// How long one launch may take before it is killed.
pub const TIME_LIMIT: Duration = Duration::from_secs(60);

/// Whether tests that need this machine's services (the emulators, a browser, libfaketime) must run here rather than
/// print SKIPPED: `CI` set to a non-empty value, or `REQUIRE_EMULATORS=1`. The one meaning of "required" for every
/// crate's tests (this dependency-free dev crate is what they all can share).
pub fn required() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty()) || std::env::var("REQUIRE_EMULATORS").is_ok_and(|v| v == "1")
}

/// A headless Chromium executable.
#[derive(Debug, Clone)]
pub struct Chromium {
    exe: PathBuf,
}

/// What a launch printed.
#[derive(Debug)]
struct Run {
    stdout: String,
    stderr: String,
}

impl Chromium {
    /// `$CHROMIUM`, else `/usr/bin/chromium`, else `chromium` or `chromium-browser` on `PATH`.
    pub fn locate() -> Result<Self, String> {
        if let Some(p) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
            let exe = PathBuf::from(p);
            return if exe.is_file() {
                Ok(Self { exe })
            } else {
                Err(format!("CHROMIUM={} is not a file", exe.display()))
            };
        }
        let mut candidates = vec![PathBuf::from("/usr/bin/chromium")];
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            candidates.push(dir.join("chromium"));
            candidates.push(dir.join("chromium-browser"));
        }
        candidates
            .into_iter()
            .find(|p| p.is_file())
            .map(|exe| Self { exe })
            .ok_or_else(|| "no chromium executable (looked at $CHROMIUM, /usr/bin/chromium and PATH)".to_owned())
    }

    /// The browser for `test`, or `None` after printing `SKIPPED`; panics with the fix when browser tests are
    /// [`required`].
    pub fn for_test(test: &str) -> Option<Self> {
        match Self::locate() {
            Ok(c) => Some(c),
            Err(e) if required() => panic!(
                "{test}: {e}, and browser tests are required here (CI or REQUIRE_EMULATORS=1). \
                 Install the Debian package: apt-get install chromium (scripts/test.sh does)."
            ),
            Err(e) => {
                eprintln!("SKIPPED {test}: {e} (apt-get install chromium, or set CHROMIUM)");
                None
            }
        }
    }

    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// Starts the browser with [`FLAGS`], a fresh profile (returned: it must outlive the process) and `args`.
    fn start(&self, args: &[String]) -> Result<(Child, tempfile::TempDir), String> {
        let profile = tempfile::tempdir().map_err(|e| format!("cannot create a profile folder: {e}"))?;
        let child = Command::new(&self.exe)
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        Ok((child, profile))
    }

    fn run(&self, args: &[String]) -> Result<Run, String> {
        let (mut child, _profile) = self.start(args)?;
        // Both pipes are drained on their own threads: a page's DOM is larger than a pipe's buffer.
        let out = drain(child.stdout.take());
        let err = drain(child.stderr.take());
        let started = Instant::now();
        let status = loop {
            match child.try_wait().map_err(|e| format!("waiting for chromium: {e}"))? {
                Some(status) => break status,
                None if started.elapsed() > TIME_LIMIT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "chromium did not finish within {} s ({args:?})",
                        TIME_LIMIT.as_secs()
                    ));
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let run = Run {
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        };
        if !status.success() {
            let tail: Vec<&str> = run.stderr.lines().rev().take(8).collect();
            return Err(format!(
                "chromium exited with {status} ({args:?}); stderr ends: {:?}",
                tail
            ));
        }
        Ok(run)
    }

    /// The DOM of `url` after its `load` handlers ran, serialized.
    pub fn dump_dom(&self, url: &str) -> Result<String, String> {
        let run = self.run(&["--dump-dom".to_owned(), url.to_owned()])?;
        if run.stdout.trim().is_empty() {
            return Err(format!("chromium printed no DOM for {url}; stderr: {}", run.stderr));
        }
        Ok(run.stdout)
    }

    /// A `width`×`height` screenshot of `url` as PNG at `out`.
    pub fn screenshot(&self, url: &str, out: &Path, width: u32, height: u32) -> Result<(), String> {
        self.run(&[
            format!("--screenshot={}", out.display()),
            format!("--window-size={width},{height}"),
            url.to_owned(),
        ])?;
        match std::fs::read(out) {
            Ok(b) if b.starts_with(b"\x89PNG\r\n\x1a\n") => Ok(()),
            Ok(_) => Err(format!("{} is not a PNG", out.display())),
            Err(e) => Err(format!("chromium wrote no screenshot at {}: {e}", out.display())),
        }
    }
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut s);
        }
        String::from_utf8_lossy(&s).into_owned()
    })
}

/// The `file://` URL of a local file (characters that mean something in a URL are percent-encoded).
pub fn file_url(path: &Path) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut url = String::from("file://");
    for c in abs.to_string_lossy().chars() {
        match c {
            ' ' | '%' | '#' | '?' | '"' => url.push_str(&format!("%{:02X}", c as u32)),
            c => url.push(c),
        }
    }
    url
}

const PROBE_ID: &str = "chromium-test-probe";

/// `html` with `script` run first thing in its `<head>`. The script reports with `__probe(value)` (any JSON value),
/// typically from a `load` handler.
pub fn with_probe(html: &str, script: &str) -> String {
    let prelude = format!(
        "<script>function __probe(v){{var p=document.createElement('pre');p.id='{PROBE_ID}';\
         p.textContent=btoa(unescape(encodeURIComponent(JSON.stringify(v))));document.body.appendChild(p);}}\n{script}</script>"
    );
    match html.find("<head>") {
        Some(i) => format!("{}{prelude}{}", &html[..i + 6], &html[i + 6..]),
        None => format!("{prelude}{html}"),
    }
}

/// The value the probe script reported in `dom` (see [`with_probe`]).
pub fn probe_result(dom: &str) -> Result<serde_json::Value, String> {
    let open = format!("<pre id=\"{PROBE_ID}\">");
    let start = dom
        .find(&open)
        .ok_or("the probe reported nothing (no probe element in the DOM)")?
        + open.len();
    let len = dom[start..].find("</pre>").ok_or("the probe element is not closed")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(dom[start..start + len].trim())
        .map_err(|e| format!("the probe's value is not base64: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the probe's value is not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_goes_first_in_the_head_and_its_value_reads_back() {
        let page = with_probe("<html><head><meta x></head><body></body></html>", "__probe(1)");
        assert!(page.starts_with("<html><head><script>function __probe"), "{page}");
        assert!(page.contains("__probe(1)</script><meta x>"));
        let v = serde_json::json!({"a": "<é>"});
        let encoded = base64::engine::general_purpose::STANDARD.encode(v.to_string());
        let dom = format!("<body><pre id=\"{PROBE_ID}\">{encoded}</pre></body>");
        assert_eq!(probe_result(&dom).unwrap(), v);
        assert!(probe_result("<body></body>").unwrap_err().contains("reported nothing"));
        assert_eq!(file_url(Path::new("/tmp/a b#1.html")), "file:///tmp/a%20b%231.html");
    }

    #[test]
    fn a_page_is_driven_over_devtools_and_dumped_as_a_process() {
        let Some(chromium) = Chromium::for_test("a_page_is_driven_over_devtools_and_dumped_as_a_process") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("p.html");
        std::fs::write(
            &page,
            "<!doctype html><html><head></head><body><button onclick=\"this.textContent='clicked'\">click me</button></body></html>",
        )
        .unwrap();
        let mut tab = chromium.launch(400, 300).unwrap();
        tab.goto(&file_url(&page)).unwrap();
        assert_eq!(
            tab.eval("document.querySelector('button').textContent").unwrap(),
            "click me"
        );
        tab.eval("document.querySelector('button').click()").unwrap();
        let v = tab.wait_for(
            "document.querySelector('button').textContent === 'clicked' && 'yes'",
            Duration::from_secs(5),
        );
        assert_eq!(v.unwrap(), "yes");
        assert!(tab.eval("nope.nope").unwrap_err().contains("ReferenceError"));
        let err = tab.wait_for("false", Duration::from_millis(200)).unwrap_err();
        assert!(err.contains("still falsy"), "{err}");
        let shot = dir.path().join("shot.png");
        tab.screenshot(&shot).unwrap();
        let png = std::fs::read(&shot).unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
        assert_eq!(
            (size(16), size(20)),
            (400, 300),
            "the IHDR's width and height are the viewport's"
        );
        drop(tab);

        let probed = dir.path().join("probed.html");
        std::fs::write(
            &probed,
            with_probe(
                &std::fs::read_to_string(&page).unwrap(),
                "addEventListener('load', () => __probe(document.querySelector('button').textContent))",
            ),
        )
        .unwrap();
        assert_eq!(
            probe_result(&chromium.dump_dom(&file_url(&probed)).unwrap()).unwrap(),
            "click me"
        );
    }
}
