//! The DevTools protocol, as much as a test needs: one page, `Runtime.evaluate`, navigation, waiting for a condition,
//! screenshots. Chromium listens on `--remote-debugging-port=0` (loopback, a port the kernel picks, written to
//! `DevToolsActivePort` in the profile); the client is a blocking WebSocket with a read timeout.

use std::net::TcpStream;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use crate::{drain, Chromium, TIME_LIMIT};

/// A running browser with one page attached. Closed and killed on drop.
pub struct Page {
    child: Child,
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    /// Events (`Network.*`, …) received while waiting for answers, kept once [`Page::collect_events`] was called.
    events: Option<Vec<Value>>,
    _profile: tempfile::TempDir,
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page")
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl Chromium {
    /// Starts the browser with its DevTools endpoint and attaches to its page, whose viewport is `width`×`height`.
    pub fn launch(&self, width: u32, height: u32) -> Result<Page, String> {
        let (mut child, profile) = self.start(&[
            "--remote-debugging-address=127.0.0.1".to_owned(),
            "--remote-debugging-port=0".to_owned(),
            format!("--window-size={width},{height}"),
            "about:blank".to_owned(),
        ])?;
        // Nobody reads the browser's output; drained so it never blocks on a full pipe.
        drop((drain(child.stdout.take()), drain(child.stderr.take())));
        let port_file = profile.path().join("DevToolsActivePort");
        let started = Instant::now();
        let (port, path) = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break (port.trim().to_owned(), path.trim().to_owned());
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "chromium exited with {status} before opening its DevTools endpoint"
                ));
            }
            if started.elapsed() > TIME_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "chromium opened no DevTools endpoint within {} s",
                    TIME_LIMIT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut page = Page::connect(child, profile, &port, &path)?;
        let targets = page.call_browser("Target.getTargets", json!({}))?;
        let target = targets["targetInfos"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["targetId"].as_str())
            .ok_or("chromium has no page target")?
            .to_owned();
        let attached = page.call_browser("Target.attachToTarget", json!({"targetId": target, "flatten": true}))?;
        page.session = attached["sessionId"]
            .as_str()
            .ok_or("no DevTools session for the page")?
            .to_owned();
        // The viewport is exactly `width`×`height` (the window's size counts its frame too).
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )?;
        Ok(page)
    }
}

impl Page {
    fn connect(mut child: Child, profile: tempfile::TempDir, port: &str, path: &str) -> Result<Self, String> {
        let stream = match TcpStream::connect(format!("127.0.0.1:{port}")) {
            Ok(s) => s,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("cannot connect to chromium's DevTools port {port}: {e}"));
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let url = format!("ws://127.0.0.1:{port}{path}");
        let ws = match tungstenite::client(url.as_str(), stream) {
            Ok((ws, _)) => ws,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("DevTools handshake with {url} failed: {e}"));
            }
        };
        Ok(Self {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            events: None,
            _profile: profile,
        })
    }

    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .map_err(|e| format!("DevTools {method}: {e}"))?;
        loop {
            let text = match self
                .ws
                .read()
                .map_err(|e| format!("DevTools {method}: no answer: {e}"))?
            {
                Message::Text(t) => t,
                Message::Close(_) => return Err(format!("DevTools {method}: the browser closed the connection")),
                _ => continue,
            };
            let v: Value = serde_json::from_str(text.as_str()).map_err(|e| format!("DevTools {method}: {e}"))?;
            if v["id"] != json!(id) {
                if let (Some(events), Some(_)) = (self.events.as_mut(), v.get("method")) {
                    events.push(v);
                }
                continue; // an event
            }
            if let Some(err) = v.get("error") {
                return Err(format!("DevTools {method}: {err}"));
            }
            return Ok(v["result"].clone());
        }
    }

    fn call_browser(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.send(None, method, params)
    }

    /// A DevTools command on the page (`Page.*`, `Runtime.*`, …); answers its `result`.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let session = self.session.clone();
        self.send(Some(&session), method, params)
    }

    /// Keeps the events the browser sends from now on (enable their domain too, e.g. `Network.enable`); read them
    /// with [`Page::take_events`]. Events arrive while commands wait for their answers.
    pub fn collect_events(&mut self) {
        self.events.get_or_insert_with(Vec::new);
    }

    /// The events kept since the last call, oldest first (`{"method", "params"}`).
    pub fn take_events(&mut self) -> Vec<Value> {
        self.events.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Opens `url` and waits until its `load` event has fired.
    pub fn goto(&mut self, url: &str) -> Result<(), String> {
        let nav = self.call("Page.navigate", json!({"url": url}))?;
        if let Some(e) = nav.get("errorText").and_then(Value::as_str) {
            return Err(format!("cannot open {url}: {e}"));
        }
        self.wait_for(
            "document.readyState === 'complete' && location.href !== 'about:blank'",
            Duration::from_secs(30),
        )
        .map(drop)
    }

    /// The value of a JavaScript expression (promises awaited), or the exception it threw.
    pub fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(ex) = r.get("exceptionDetails") {
            let text = ex["exception"]["description"]
                .as_str()
                .or(ex["text"].as_str())
                .unwrap_or("exception");
            return Err(format!("{expression}: {text}"));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Evaluates `expression` until it is truthy (neither `false`, `null`, `0`, `""` nor undefined) and answers that
    /// value; an error naming the expression and its last value after `timeout`.
    pub fn wait_for(&mut self, expression: &str, timeout: Duration) -> Result<Value, String> {
        let started = Instant::now();
        loop {
            let v = self.eval(expression)?;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return Ok(v);
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "still falsy after {} s: {expression} (last value {v})",
                    timeout.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the viewport at `out`.
    pub fn screenshot(&mut self, out: &Path) -> Result<(), String> {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        let data = r["data"].as_str().ok_or("Page.captureScreenshot answered no data")?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| e.to_string())?;
        std::fs::write(out, bytes).map_err(|e| format!("cannot write {}: {e}", out.display()))
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.send(None, "Browser.close", json!({}));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
