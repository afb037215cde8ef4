//! `recorder lint` catches a planted key with its file and line, in the library and through the binary.

use std::process::Command;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use recorder::{FindingKind, Mode, Secrets};

use crate::support::*;

async fn recorded_cassette() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let vcr = open(dir.path(), Mode::NewEpisodes);
    for body in demo_bodies() {
        let png = fake_png(&serde_json::to_vec(&body).unwrap());
        vcr.handle(chart_request(KEY1, &body), |_| async move {
            Ok::<_, std::io::Error>(
                recorder::Response::new(200)
                    .with_header("content-type", "image/png")
                    .with_body(png),
            )
        })
        .await
        .unwrap();
    }
    let calls = Arc::new(AtomicUsize::new(0));
    vcr.handle(
        recorder::Request::new("GET", "/text"),
        text_upstream(&calls, "plain text answer"),
    )
    .await
    .unwrap();
    dir
}

/// Replaces line `n` (1-based) of the cassette with `line`.
fn plant(dir: &std::path::Path, n: usize, line: &str) {
    let path = dir.join(recorder::CASSETTE_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[n - 1] = line;
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

#[tokio::test]
async fn clean_cassette_has_no_findings() {
    let dir = recorded_cassette().await;
    assert_eq!(recorder::lint(&[dir.path()], &secrets()).unwrap(), vec![]);
}

#[tokio::test]
async fn planted_configured_key_is_found_with_file_and_line() {
    let dir = recorded_cassette().await;
    plant(dir.path(), 5, &format!("      \"note\": \"{KEY2}\","));
    let findings = recorder::lint(&[dir.path()], &secrets()).unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    let f = &findings[0];
    assert_eq!(f.path, dir.path().join("cassette.json"));
    assert_eq!((f.line, f.column), (Some(5), Some(16)));
    assert_eq!(
        f.kind,
        FindingKind::ConfiguredKey {
            account: "acc-2".into()
        }
    );
    assert!(!f.to_string().contains(KEY2));
}

#[tokio::test]
async fn key_shaped_and_unredacted_header_are_found_without_configuration() {
    let dir = recorded_cassette().await;
    let text = cassette_text(dir.path());
    let header_line = text.lines().position(|l| l.contains("\"x-api-key\"")).unwrap() + 1;
    plant(dir.path(), header_line, "        \"x-api-key\": \"short\"");
    plant(dir.path(), 3, "  \"x\": \"Ab12Cd34Ef56Gh78Ij90Kl12Mn\",");
    let findings = recorder::lint(&[dir.path()], &Secrets::new()).unwrap();
    let kinds: Vec<(Option<usize>, &FindingKind)> = findings.iter().map(|f| (f.line, &f.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (
                Some(3),
                &FindingKind::KeyShaped {
                    preview: "Ab12".into(),
                    len: 26
                }
            ),
            (
                Some(header_line),
                &FindingKind::UnredactedHeader {
                    header: "x-api-key".into()
                }
            ),
        ]
    );
}

#[tokio::test]
async fn key_inside_a_binary_body_file_is_found_by_offset() {
    let dir = recorded_cassette().await;
    let png = std::fs::read_dir(dir.path().join("bodies"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&png).unwrap();
    bytes.splice(100..100, KEY1.bytes());
    std::fs::write(&png, &bytes).unwrap();
    let findings = recorder::lint(&[dir.path()], &secrets()).unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!((findings[0].path.clone(), findings[0].byte_offset), (png, Some(100)));
}

#[tokio::test]
async fn the_binary_fails_with_file_and_line_and_does_not_print_the_key() {
    let dir = recorded_cassette().await;
    let bin = env!("CARGO_BIN_EXE_recorder");
    let ok = Command::new(bin)
        .arg("lint")
        .arg(dir.path())
        .env(recorder::ACCOUNTS_ENV, accounts_json())
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));

    plant(dir.path(), 7, &format!("      \"planted\": \"x {KEY1} y\","));
    let out = Command::new(bin)
        .arg("lint")
        .arg(dir.path())
        .env(recorder::ACCOUNTS_ENV, accounts_json())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let expected = format!(
        "{}:7:21: the API key of account acc-1",
        dir.path().join("cassette.json").display()
    );
    assert!(stdout.lines().any(|l| l == expected), "{stdout}");
    assert!(!stdout.contains(KEY1) && !String::from_utf8_lossy(&out.stderr).contains(KEY1));
}
