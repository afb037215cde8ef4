//! The recorder's tools through the real binary — `record` ([`record`]), `verify` ([`verify`]), `show` and
//! `lint --max-age` ([`inspect`]), against real HTTP servers:
//! mock-chart-img (in-process, as the roundtrip tests use it) where its own behaviour is what is tested, and the
//! scripted `ChartUpstream` where a test must make the n-th call fail or change an answer while it runs.

use std::path::{Path, PathBuf};

use recorder::{Mode, Response, ACCOUNTS_ENV, API_KEY_ENV};

use crate::support::*;

mod inspect;
mod record;
mod verify;

pub(super) struct Run {
    pub(super) code: Option<i32>,
    pub(super) stdout: String,
    pub(super) stderr: String,
}

/// Runs the binary with no key in its environment but `env`; fails the test if a key shows up in its output.
pub(super) async fn recorder(args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_recorder"))
        .args(args)
        .env_remove(ACCOUNTS_ENV)
        .env_remove(API_KEY_ENV)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    for key in [KEY1, KEY2] {
        assert!(
            !run.stdout.contains(key) && !run.stderr.contains(key),
            "an API key reached the output of recorder {args:?}"
        );
    }
    run
}

pub(super) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A cassette recorded in-process with stand-in answers (what a re-recording replaces).
pub(super) async fn seed(dir: &Path, requests: &[(&str, serde_json::Value)]) {
    let vcr = open(dir, Mode::NewEpisodes);
    for (key, body) in requests {
        let png = fake_png(&serde_json::to_vec(body).unwrap());
        vcr.handle(chart_request(key, body), |_| async move {
            Ok::<_, std::io::Error>(
                Response::new(200)
                    .with_header("content-type", "image/png")
                    .with_body(png),
            )
        })
        .await
        .unwrap();
    }
}

pub(super) fn demo(key: &str) -> Vec<(&str, serde_json::Value)> {
    demo_bodies().into_iter().map(|b| (key, b)).collect()
}

pub(super) fn with_size(mut body: serde_json::Value, w: u32, h: u32) -> serde_json::Value {
    body["width"] = w.into();
    body["height"] = h.into();
    body
}

pub(super) fn partial_dir(root: &Path, name: &str) -> PathBuf {
    root.join(format!(".{name}.record-partial"))
}

/// Sets `recordedAt` of interaction `n` in a cassette file.
pub(super) fn set_recorded_at(dir: &Path, n: usize, at: Option<&str>) {
    let path = dir.join("cassette.json");
    let mut file: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let i = &mut file["interactions"][n];
    match at {
        Some(at) => i["recordedAt"] = at.into(),
        None => {
            i.as_object_mut().unwrap().remove("recordedAt");
        }
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
}

/// The arguments of a `recorder record` of `dir` against `upstream` that records without asking (`--yes`), then
/// `extra`.
pub(super) fn record_args<'a>(dir: &'a Path, upstream: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["record", s(dir), "--upstream", upstream, "--yes"];
    args.extend_from_slice(extra);
    args
}
