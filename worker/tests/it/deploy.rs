//! `deploy-plan`: the built binary on a sample accounts file — the exact commands (snapshot), each refusal, and every
//! printed line read by bash (`bash -n`) and each `gcloud` command parsed by the real `gcloud` CLI without credentials
//! (an authentication error means the arguments parsed; an argument error fails).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use worker_chart_export::entry::deploy::{trigger_name, AckMargin, SUBSCRIPTION_VAR, TRIGGER_EVENT_TYPES};

const BIN: &str = env!("CARGO_BIN_EXE_worker-chart-export");
const ACCOUNTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/deploy-accounts.json");

fn deploy_plan(extra: &[&str]) -> (i32, String, String) {
    deploy_plan_in(None, extra)
}

/// `deploy-plan` run in `cwd` (default: the test's), with `extra` flag/value pairs over the sample parameters.
fn deploy_plan_in(cwd: Option<&Path>, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "deploy-plan",
        "--project",
        "acme-charts",
        "--region",
        "europe-west1",
        "--firestore-location",
        "eur3",
        "--database",
        "charts",
        "--bucket",
        "acme-chart-artifacts",
        "--accounts-file",
        ACCOUNTS,
    ];
    // `extra` is flag/value pairs: a flag given above has its value replaced, others are appended.
    for pair in extra.chunks(2) {
        if let Some(i) = args.iter().position(|a| *a == pair[0]) {
            args[i + 1] = pair[1];
        } else {
            args.extend_from_slice(pair);
        }
    }
    let mut cmd = Command::new(BIN);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let out = cmd
        .args(&args)
        .env_remove("CHART_IMG_ACCOUNTS_JSON")
        .output()
        .expect("run the binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The margin `deploy-plan` computes for the worker's default settings and `accounts` accounts.
fn default_margin(accounts: usize) -> u64 {
    let settings = worker_chart_export::config::Settings::from_lookup(|_| None).unwrap();
    AckMargin::for_settings(&settings, accounts).total().as_secs()
}

#[test]
fn the_sample_configuration_prints_the_expected_commands_and_no_key() {
    let margin = default_margin(3);
    let step = (600 - margin).to_string();
    let (code, stdout, stderr) = deploy_plan(&["--step-deadline", &step, "--ack-deadline", "600", "--tag", "v1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("sk_sample"), "a key was printed:\n{stdout}");
    // eur3 is a multi-region: Eventarc's location is europe-west4.
    assert!(stdout.contains("'--location=europe-west4'"), "{stdout}");
    assert!(
        stdout.contains("'--ack-deadline=600'") && stdout.contains("'--timeout=600'"),
        "{stdout}"
    );
    assert!(
        stdout.contains("'--event-filters=database=charts'") && stdout.contains(",FIRESTORE_DATABASE=charts,"),
        "{stdout}"
    );
    // BASIC (1/s, burst 3) + 2 × PRO (10/s, burst 15) at 6 s: 3 + 6 + 2 × (15 + 60) = 159 charts; 128 per instance.
    assert!(
        stdout.contains("'--max-instances=2'") && stdout.contains("'--concurrency=80'"),
        "{stdout}"
    );
    insta::assert_snapshot!("deploy_plan_sample", stdout.replace(ACCOUNTS, "ACCOUNTS_FILE"));
}

#[test]
fn the_trigger_subscribes_to_the_types_a_flow_run_needs() {
    let (code, stdout, stderr) = deploy_plan(&[]);
    assert_eq!(code, 0, "{stderr}");
    let types: Vec<&str> = stdout
        .split_whitespace()
        .filter_map(|w| w.trim_matches('\'').strip_prefix("--event-filters=type="))
        .collect();
    let want: Vec<&str> = TRIGGER_EVENT_TYPES.iter().map(|t| t.ce_type()).collect();
    assert_eq!(types, want, "{stdout}");
    // A run created with its step READY is delivered (`written` is created + updated + deleted), and so are updates.
    use worker_chart_export::eventarc::EventType;
    for change in [EventType::Created, EventType::Updated] {
        assert!(
            TRIGGER_EVENT_TYPES.iter().any(|t| t.delivers(change)),
            "no trigger delivers {change}"
        );
    }
    for t in TRIGGER_EVENT_TYPES {
        let name = trigger_name(*t);
        assert!(
            stdout.contains(&format!("triggers create {name} "))
                && stdout.contains(&format!("triggers describe {name} ")),
            "{stdout}"
        );
    }
}

#[test]
fn the_defaults_are_the_workers_lowered_to_fit_and_a_regional_database_keeps_its_region() {
    let (code, stdout, stderr) = deploy_plan(&["--firestore-location", "us-east1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("'--location=us-east1'"), "{stdout}");
    // The worker's 540 s step deadline + the margin is above 600 s: the plan lowers the step deadline to fit.
    let step = 600 - default_margin(3);
    assert!(
        stdout.contains(&format!(",CHART_EXPORT_STEP_DEADLINE_SECONDS={step},"))
            && stdout.contains("'--ack-deadline=600'"),
        "{stdout}"
    );
    // One account: a smaller margin (one give-back), so a longer step deadline.
    let dir = temp_dir("one-account");
    let one = dir.join("one.json");
    std::fs::write(&one, r#"[{"id":"a-1","apiKey":"sk_x","dailyLimit":50,"plan":"PRO"}]"#).unwrap();
    let (code, stdout, stderr) = deploy_plan(&["--accounts-file", one.to_str().unwrap(), "--step-deadline", "100"]);
    assert_eq!(code, 0, "{stderr}");
    let ack = 100 + default_margin(1);
    assert!(
        stdout.contains(&format!("'--ack-deadline={ack}'")) && stdout.contains(&format!("'--timeout={ack}'")),
        "{stdout}"
    );
    let (_, stdout, _) = deploy_plan(&["--firestore-location", "nam5"]);
    assert!(stdout.contains("'--location=us-central1'"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inconsistent_parameters_are_refused_naming_what_is_wrong() {
    let margin = default_margin(3);
    let fits = (600 - margin).to_string();
    let over = (600 - margin + 1).to_string();
    let exceeds =
        |step: &str| format!("the step deadline ({step} s) + the work after it ({margin} s: a call in flight 35 s");
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["--ack-deadline", "601"], "above Pub/Sub's maximum of 600 s".into()),
        (vec!["--step-deadline", &fits, "--ack-deadline", "599"], exceeds(&fits)),
        (vec!["--step-deadline", &over], exceeds(&over)),
        (
            vec!["--step-deadline", &over],
            format!("use --step-deadline of at most {fits} s"),
        ),
        (
            vec!["--step-deadline", "540"],
            "exceeds the ack deadline of 600 s".into(),
        ),
        (
            vec!["--step-deadline", "0"],
            "--step-deadline must be at least 1 s".into(),
        ),
        (
            vec!["--firestore-location", "nam7"],
            "--firestore-location \"nam7\" is not a known Firestore location".into(),
        ),
        (
            vec!["--firestore-location", "us"],
            "is not a known Firestore location".into(),
        ),
        (
            vec!["--region", "europe"],
            "--region \"europe\" is not a region name".into(),
        ),
        (vec!["--database", "Charts_DB"], "is not a Firestore database id".into()),
        (vec!["--project", "a b"], "--project \"a b\" must be".into()),
        (
            vec!["--max-in-flight", "0"],
            "--max-in-flight must be at least 1".into(),
        ),
        (
            vec!["--max-in-flight", "2000"],
            "the service would refuse its environment: CHART_EXPORT_CONCURRENCY".into(),
        ),
        (
            vec!["--accounts-file", "/nonexistent/accounts.json"],
            "cannot read --accounts-file".into(),
        ),
    ];
    for (extra, want) in &cases {
        let (code, stdout, stderr) = deploy_plan(extra);
        assert_eq!(code, 2, "{extra:?} was accepted:\n{stdout}");
        assert!(stdout.is_empty(), "{extra:?} printed commands:\n{stdout}");
        assert!(stderr.contains(want.as_str()), "{extra:?}: want {want:?} in {stderr:?}");
    }
}

/// Accounts enough that the give-backs alone leave no room under 600 s: refused, saying why.
#[test]
fn a_margin_that_leaves_no_step_deadline_is_refused() {
    let dir = temp_dir("many-accounts");
    let many = dir.join("many.json");
    let accounts: Vec<String> = (0..12)
        .map(|i| format!(r#"{{"id":"a-{i}","apiKey":"sk_{i}","dailyLimit":50,"plan":"PRO"}}"#))
        .collect();
    std::fs::write(&many, format!("[{}]", accounts.join(","))).unwrap();
    let (code, stdout, stderr) = deploy_plan(&["--accounts-file", many.to_str().unwrap()]);
    assert_eq!(code, 2, "{stdout}");
    assert!(
        stderr.contains("leaves no step deadline under Pub/Sub's maximum ack deadline of 600 s"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("deploy-plan-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `gcloud` on PATH, or `None` (then the test prints SKIPPED, and fails when `CI` is set: the CI image has it).
fn gcloud() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("gcloud"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !chromium_test::required(),
            "the gcloud CLI is not on PATH, and this run requires it (CI or REQUIRE_EMULATORS=1): the deploy-plan check needs the real gcloud (Google Cloud SDK)"
        );
        eprintln!("SKIPPED: the gcloud CLI is not on PATH");
    }
    found
}

/// The gcloud commands of a plan: each non-comment line, and the command inside `VAR="$(…)"`.
fn gcloud_commands(plan: &str) -> Vec<String> {
    let prefix = format!("{SUBSCRIPTION_VAR}=\"$(");
    plan.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| match l.strip_prefix(&prefix).and_then(|r| r.strip_suffix(")\"")) {
            Some(inner) => inner.to_owned(),
            None => l.to_owned(),
        })
        .inspect(|c| assert!(c.starts_with("gcloud "), "not a gcloud command: {c}"))
        .collect()
}

/// Runs each command through bash with the real gcloud, no credentials and a throwaway configuration directory:
/// every one must stop at authentication (its arguments parsed), none at an argument error (exit 2).
/// Commands in `checked` already passed (the plans share most lines) and are not run again.
fn check_with_gcloud(plan: &str, cwd: &Path, what: &str, checked: &mut std::collections::HashSet<String>) {
    let config = temp_dir(&format!("gcloud-config-{what}"));
    let all = gcloud_commands(plan);
    assert!(all.len() >= 10, "{what}: too few commands:\n{plan}");
    let commands: Vec<String> = all.into_iter().filter(|c| checked.insert(c.clone())).collect();
    // All at once (each is a short-lived Python process that stops at its credentials check).
    let children: Vec<_> = commands
        .iter()
        .map(|c| {
            let mut cmd = Command::new("timeout");
            // No credentials and no configuration from this machine: nothing gcloud could authenticate with.
            for (k, _) in std::env::vars_os() {
                let k = k.to_string_lossy();
                if k.starts_with("CLOUDSDK_") || k.starts_with("GOOGLE_") {
                    cmd.env_remove(k.as_ref());
                }
            }
            let child = cmd
                .args(["120", "bash", "-c", c])
                .current_dir(cwd)
                .env("CLOUDSDK_CONFIG", &config)
                .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
                .env("CLOUDSDK_CORE_CHECK_GCE_METADATA", "false")
                .env("CLOUDSDK_CORE_DISABLE_USAGE_REPORTING", "true")
                .env("CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK", "true")
                .env(SUBSCRIPTION_VAR, "projects/p-1/subscriptions/eventarc-sub")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run bash");
            (c, child)
        })
        .collect();
    for (c, child) in children {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code().unwrap_or(-1);
        let auth =
            stderr.contains("You do not currently have an active account selected") || stderr.contains("credential");
        assert!(
            code != 2 && code != 0 && auth,
            "{what}: gcloud did not stop at authentication (exit {code}):\n  {c}\n{stderr}"
        );
    }
    std::fs::remove_dir_all(&config).unwrap();
}

/// Every printed line is valid bash, and every gcloud command's arguments parse — for the default database (whose id
/// `(default)` bash would read as a subshell), a named one, and an accounts file whose path bash would split or
/// expand.
#[test]
fn every_printed_command_is_valid_bash_and_parses_in_the_real_gcloud() {
    let Some(_) = gcloud() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned();
    let dir = temp_dir("gcloud");
    let odd = dir.join("my accounts $HOME (prod)'s.json");
    std::fs::copy(ACCOUNTS, &odd).unwrap();
    let odd = odd.to_str().unwrap().to_owned();
    let cases: [(&str, Vec<&str>); 3] = [
        ("default-database", vec!["--database", "(default)"]),
        (
            "named-database",
            vec!["--database", "orders-db", "--firestore-location", "us-east1"],
        ),
        (
            "odd-accounts-path",
            vec!["--database", "orders-db", "--accounts-file", &odd],
        ),
    ];
    let mut checked = std::collections::HashSet::new();
    for (what, extra) in &cases {
        let (code, plan, stderr) = deploy_plan_in(Some(&root), extra);
        assert_eq!(code, 0, "{what}: {stderr}");
        let file = dir.join(format!("{what}.sh"));
        std::fs::write(&file, &plan).unwrap();
        let syntax = Command::new("bash").arg("-n").arg(&file).output().unwrap();
        assert!(
            syntax.status.success(),
            "{what}: bash -n refused the plan: {}\n{plan}",
            String::from_utf8_lossy(&syntax.stderr)
        );
        check_with_gcloud(&plan, &root, what, &mut checked);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_accounts_files_are_refused_without_printing_a_key() {
    let dir = std::env::temp_dir().join(format!("deploy-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.json");
    std::fs::write(&empty, "[]").unwrap();
    let (code, _, stderr) = deploy_plan(&["--accounts-file", empty.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("lists no account"), "{stderr}");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"[{"id":"a","apiKey":"sk_secret_zzz","plan":"GOLD"}]"#).unwrap();
    let (code, _, stderr) = deploy_plan(&["--accounts-file", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--accounts-file") && !stderr.contains("sk_secret_zzz"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
