//! `deploy-plan`: prints the exact `gcloud` commands that deploy the worker for given parameters, and refuses
//! inconsistent ones. Every derived number comes from the worker's own defaults and `chart_img_spec` plans, so the
//! commands cannot drift from the code. Keys are never read into the output: only the accounts' ids and plans are.
//!
//! Derivations (also in worker/README.md, "Deployment"):
//! - trigger location: the Firestore location, with the multi-regions mapped as Eventarc does (`nam5` →
//!   `us-central1`, `eur3` → `europe-west4`); any other location must be a region name (`europe-west1`).
//! - ack deadline: at most 600 s (Pub/Sub's maximum) and at least the step deadline + the [`AckMargin`]: the work a
//!   step may still do after its deadline, each part at the timeouts and retry budgets of the service's own
//!   [`Settings`] (read from the environment the plan prints). The default step deadline is the worker's, lowered to
//!   fit under 600 s with that margin. Cloud Run's `--timeout` is set to the ack deadline.
//! - the trigger: one per type in [`TRIGGER_EVENT_TYPES`] (`written`: a flow run created with a READY step and every
//!   later update), each with its push subscription's ack deadline raised.
//! - every command is printed shell-quoted (`shlex`), so bash reads each argument as written (`(default)` included).
//! - `W` = charts in flight that keep every account at its rate: [`in_flight_for`] the plans at
//!   [`DEFAULT_CALL_LATENCY`] with no cap (Σ burst + rate × latency).
//! - `--max-instances` = ⌈W / CHART_EXPORT_CONCURRENCY⌉: enough instances that each holds at most its memory-safe
//!   number of charts in flight when the keys are saturated; more instances add no throughput (the keys' rates are
//!   the bound) and each adds a per-process limiter per key.
//! - `--concurrency` = ⌈W / max-instances⌉, within Cloud Run's 1..=1000: steps per instance so that even one-chart
//!   steps fill `W` over the instances.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::adapters::{firestore, gcs};
use crate::config::{check_database_id, parse_accounts, Settings, DEFAULT_CONCURRENCY, DEFAULT_FIRESTORE_DATABASE};
use crate::eventarc::EventType;
use crate::quota::{in_flight_for, DEFAULT_CALL_LATENCY};

/// The most Pub/Sub allows for a subscription's ack deadline.
pub const MAX_ACK_DEADLINE: Duration = Duration::from_secs(600);
/// The event types the deployment's triggers subscribe to: `written` is every create, update and delete of a flow
/// run, so a run created with its step READY is delivered as well as the updates that release a step (the worker
/// answers a delete with a no-op). The local Eventarc, the live scenarios and `fleet-sim` deliver these same types.
pub const TRIGGER_EVENT_TYPES: &[EventType] = &[EventType::Written];

/// The work a step may still do after its deadline, each part bounded by its own timeout and retry budget. The ack
/// deadline must cover the step deadline plus [`AckMargin::total`], or Pub/Sub redelivers (and Cloud Run's
/// `--timeout` ends the request) while the step still concludes. The parts run one after another:
/// a Chart-IMG call in flight at the deadline (no new call starts after it), the upload of its chart, the give-back of
/// each account's unused units (sequential), the manifest, the finalize (or instead the release, which is smaller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckMargin {
    /// One Chart-IMG call's timeout (`CHART_IMG_TIMEOUT_SECONDS`).
    pub call: Duration,
    /// One Cloud Storage write: the store retry budget, then one last HTTP request at its timeout.
    pub upload: Duration,
    /// One give-back per account, each a Firestore operation.
    pub give_backs: Duration,
    /// The manifest, one Cloud Storage write.
    pub manifest: Duration,
    /// The finalize, one Firestore operation.
    pub finalize: Duration,
}

impl AckMargin {
    /// The margin for a service running with `settings` and `accounts` Chart-IMG accounts. A Firestore operation is
    /// bounded by the store retry budget (`CHART_EXPORT_STORE_RETRY_SECONDS`; no retry starts past it) plus one last
    /// attempt: a transaction's begin, read and commit, each at the client's call timeout. A Cloud Storage write is
    /// bounded by the same budget plus one HTTP request at its timeout.
    pub fn for_settings(settings: &Settings, accounts: usize) -> Self {
        let firestore_op = settings.store_retry_total + firestore::DEFAULT_CALL_TIMEOUT * 3;
        let gcs_write = settings.store_retry_total + gcs::REQUEST_TIMEOUT;
        Self {
            call: settings.request_timeout,
            upload: gcs_write,
            give_backs: firestore_op * accounts as u32,
            manifest: gcs_write,
            finalize: firestore_op,
        }
    }

    pub fn total(&self) -> Duration {
        self.call + self.upload + self.give_backs + self.manifest + self.finalize
    }

    /// `call 35 s + upload 90 s + …`, for the plan's header and refusals.
    pub fn breakdown(&self) -> String {
        format!(
            "a call in flight {} s + its upload {} s + give-backs {} s + manifest {} s + finalize {} s",
            self.call.as_secs(),
            self.upload.as_secs(),
            self.give_backs.as_secs(),
            self.manifest.as_secs(),
            self.finalize.as_secs()
        )
    }
}
/// Cloud Run's largest `--concurrency`.
const CLOUD_RUN_MAX_CONCURRENCY: usize = 1000;

#[derive(Debug, Clone, Args)]
pub struct DeployPlanArgs {
    /// Google Cloud project id.
    #[arg(long)]
    pub project: String,
    /// Region of the Cloud Run service, the image repository and Cloud Build.
    #[arg(long)]
    pub region: String,
    /// The Firestore database's location (`nam5`, `eur3` or a region such as `europe-west1`).
    #[arg(long)]
    pub firestore_location: String,
    /// The Firestore database id.
    #[arg(long, default_value = DEFAULT_FIRESTORE_DATABASE)]
    pub database: String,
    /// The Cloud Storage bucket for PNGs and manifests.
    #[arg(long)]
    pub bucket: String,
    /// A JSON file of accounts as in CHART_IMG_ACCOUNTS_JSON; only ids and plans are used, keys are never printed.
    #[arg(long)]
    pub accounts_file: PathBuf,
    /// CHART_EXPORT_STEP_DEADLINE_SECONDS (default: the worker's).
    #[arg(long)]
    pub step_deadline: Option<u64>,
    /// The push subscription's ack deadline in seconds (default: step deadline + margin, at most 600).
    #[arg(long)]
    pub ack_deadline: Option<u64>,
    /// CHART_EXPORT_CONCURRENCY, the memory-safe maximum of charts of a step in flight (default: the worker's).
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub max_in_flight: usize,
    /// Artifact Registry repository.
    #[arg(long, default_value = "workers")]
    pub repo: String,
    /// Image tag.
    #[arg(long, default_value = "latest")]
    pub tag: String,
}

/// Eventarc's location for a Firestore location, or why there is none.
pub fn trigger_location(firestore_location: &str) -> Result<String, String> {
    match firestore_location {
        "nam5" => Ok("us-central1".into()),
        "eur3" => Ok("europe-west4".into()),
        l if is_region(l) => Ok(l.to_owned()),
        l => Err(format!(
            "--firestore-location {l:?} is not a known Firestore location: `nam5`, `eur3` or a region such as `europe-west1`"
        )),
    }
}

/// `<area>-<direction><n>`, e.g. `us-central1`, `europe-west4`, `northamerica-northeast1`.
fn is_region(l: &str) -> bool {
    let Some((area, rest)) = l.split_once('-') else {
        return false;
    };
    let digits = rest.trim_start_matches(|c: char| c.is_ascii_lowercase());
    !area.is_empty()
        && area.chars().all(|c| c.is_ascii_lowercase())
        && digits.len() < rest.len()
        && !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
}

fn check_name(flag: &str, v: &str) -> Result<(), String> {
    if v.is_empty()
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "{flag} {v:?} must be non-empty letters, digits, `-`, `_` or `.`"
        ));
    }
    Ok(())
}

/// One command line, each word shell-quoted where bash would otherwise read it (`(default)`, `{runId}`, spaces).
fn command(words: &[&str]) -> Result<String, String> {
    shlex::try_join(words.iter().copied()).map_err(|e| format!("cannot quote {words:?} for the shell: {e}"))
}

/// The service's environment as `gcloud run deploy --set-env-vars` sets it, in order.
fn service_env(args: &DeployPlanArgs, step: Option<Duration>) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("GOOGLE_CLOUD_PROJECT", args.project.clone()),
        ("FIRESTORE_DATABASE", args.database.clone()),
        ("ARTIFACTS_BUCKET", args.bucket.clone()),
        ("CHART_IMG_MODE", "real".to_owned()),
    ];
    if let Some(step) = step {
        env.push(("CHART_EXPORT_STEP_DEADLINE_SECONDS", step.as_secs().to_string()));
    }
    env.push(("CHART_EXPORT_CONCURRENCY", args.max_in_flight.to_string()));
    env
}

/// The worker's [`Settings`] for `env`: what the deployed service will read, checked as it will check it.
fn settings_of(env: &[(&'static str, String)]) -> Result<Settings, String> {
    Settings::from_lookup(|k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
        .map_err(|e| format!("the service would refuse its environment: {e}"))
}

/// The step deadline and the ack deadline (at least the step deadline + `margin`), or why they cannot be.
fn deadlines(
    args: &DeployPlanArgs,
    margin: &AckMargin,
    worker_default: Duration,
) -> Result<(Duration, Duration), String> {
    let m = margin.total();
    let room = MAX_ACK_DEADLINE.saturating_sub(m);
    if room < Duration::from_secs(1) {
        return Err(format!(
            "the work after the step deadline can take {} s ({}), which leaves no step deadline under Pub/Sub's maximum ack deadline of {} s; use fewer accounts or lower CHART_IMG_TIMEOUT_SECONDS / CHART_EXPORT_STORE_RETRY_SECONDS",
            m.as_secs(),
            margin.breakdown(),
            MAX_ACK_DEADLINE.as_secs()
        ));
    }
    let step = match args.step_deadline {
        Some(0) => return Err("--step-deadline must be at least 1 s".into()),
        Some(s) => Duration::from_secs(s),
        // The worker's default, lowered to what fits.
        None => worker_default.min(Duration::from_secs(room.as_secs())),
    };
    let ack = args
        .ack_deadline
        .map(Duration::from_secs)
        .unwrap_or((step + m).min(MAX_ACK_DEADLINE));
    if ack > MAX_ACK_DEADLINE {
        return Err(format!(
            "--ack-deadline {} s is above Pub/Sub's maximum of {} s",
            ack.as_secs(),
            MAX_ACK_DEADLINE.as_secs()
        ));
    }
    if ack < step + m {
        let fix = match ack.saturating_sub(m).as_secs() {
            0 => format!(
                "raise --ack-deadline to at least {} s",
                (m + Duration::from_secs(1)).as_secs()
            ),
            fits => format!("use --step-deadline of at most {fits} s"),
        };
        return Err(format!(
            "the step deadline ({} s) + the work after it ({} s: {}) = {} s exceeds the ack deadline of {} s: Pub/Sub would redeliver, and Cloud Run end the request, while the step still concludes; {fix}",
            step.as_secs(),
            m.as_secs(),
            margin.breakdown(),
            (step + m).as_secs(),
            ack.as_secs(),
        ));
    }
    Ok((step, ack))
}

/// The commands, or the first inconsistency found.
pub fn plan(args: &DeployPlanArgs, accounts_json: &str) -> Result<String, String> {
    check_name("--project", &args.project)?;
    check_name("--bucket", &args.bucket)?;
    check_name("--repo", &args.repo)?;
    check_name("--tag", &args.tag)?;
    if !is_region(&args.region) {
        return Err(format!(
            "--region {:?} is not a region name such as `europe-west1`",
            args.region
        ));
    }
    let location = trigger_location(&args.firestore_location)?;
    check_database_id(&args.database).map_err(|e| format!("--database {e}"))?;
    let accounts = parse_accounts("--accounts-file", accounts_json).map_err(|e| e.to_string())?;
    if accounts.is_empty() {
        return Err("--accounts-file lists no account: the worker would fail every chart".into());
    }
    if args.max_in_flight == 0 {
        return Err("--max-in-flight must be at least 1".into());
    }
    let base = settings_of(&service_env(args, None))?;
    let margin = AckMargin::for_settings(&base, accounts.len());
    let (step, ack) = deadlines(args, &margin, base.lifecycle.step_deadline)?;
    let env = service_env(args, Some(step));
    settings_of(&env)?;
    let plans: Vec<_> = accounts.iter().map(|a| a.plan).collect();
    let saturate = in_flight_for(&plans, DEFAULT_CALL_LATENCY, usize::MAX);
    let max_instances = saturate.div_ceil(args.max_in_flight).max(1);
    let concurrency = saturate.div_ceil(max_instances).clamp(1, CLOUD_RUN_MAX_CONCURRENCY);

    let (p, r, db, b) = (&args.project, &args.region, &args.database, &args.bucket);
    let image = format!("{r}-docker.pkg.dev/{p}/{}/worker-chart-export:{}", args.repo, args.tag);
    let sa = format!("chart-export-worker@{p}.iam.gserviceaccount.com");
    let tsa = format!("chart-export-trigger@{p}.iam.gserviceaccount.com");
    let member = |a: &str| format!("--member=serviceAccount:{a}");
    let (project, region) = (format!("--project={p}"), format!("--region={r}"));
    let summary: Vec<String> = accounts.iter().map(|a| format!("{} {:?}", a.id, a.plan)).collect();
    let accounts_file = args.accounts_file.to_string_lossy();
    let env_vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();

    // Each entry is one printed line: a comment, or a command whose words are quoted by `command`.
    let mut out: Vec<String> = vec![
        format!(
            "# worker-chart-export deployment: project {p}, region {r}, Firestore {db} in {} (trigger in {location})",
            args.firestore_location
        ),
        format!(
            "# accounts: {} — {saturate} charts in flight keep them at their rate at {} s per chart",
            summary.join(", "),
            DEFAULT_CALL_LATENCY.as_secs()
        ),
        format!(
            "# step deadline {} s, ack deadline {} s, --max-instances {max_instances}, --concurrency {concurrency}",
            step.as_secs(),
            ack.as_secs()
        ),
        format!(
            "# the work after the step deadline may take {} s: {}",
            margin.total().as_secs(),
            margin.breakdown()
        ),
        String::new(),
        "# 1. Image (Cloud Build, deploy/cloudbuild.yaml; run from the repository's root)".into(),
        command(&[
            "gcloud",
            "artifacts",
            "repositories",
            "create",
            &args.repo,
            &project,
            "--repository-format=docker",
            &format!("--location={r}"),
        ])?,
        command(&[
            "gcloud",
            "builds",
            "submit",
            &project,
            &region,
            "--config=deploy/cloudbuild.yaml",
            &format!("--substitutions=_IMAGE={image}"),
            ".",
        ])?,
        String::new(),
        "# 2. Service accounts and roles".into(),
        command(&[
            "gcloud",
            "iam",
            "service-accounts",
            "create",
            "chart-export-worker",
            &project,
            "--display-name=CHART_EXPORT worker",
        ])?,
        command(&[
            "gcloud",
            "projects",
            "add-iam-policy-binding",
            p,
            &member(&sa),
            "--role=roles/datastore.user",
        ])?,
        command(&[
            "gcloud",
            "storage",
            "buckets",
            "add-iam-policy-binding",
            &format!("gs://{b}"),
            &member(&sa),
            "--role=roles/storage.objectUser",
        ])?,
        command(&[
            "gcloud",
            "iam",
            "service-accounts",
            "create",
            "chart-export-trigger",
            &project,
            "--display-name=Eventarc to chart export",
        ])?,
        command(&[
            "gcloud",
            "projects",
            "add-iam-policy-binding",
            p,
            &member(&tsa),
            "--role=roles/eventarc.eventReceiver",
        ])?,
        String::new(),
        "# 3. The accounts secret (CHART_IMG_ACCOUNTS_JSON: gcloud reads the file, keys included; they are never on a command line)".into(),
        command(&[
            "gcloud",
            "secrets",
            "create",
            "chart-img-accounts",
            &project,
            "--replication-policy=automatic",
        ])?,
        command(&[
            "gcloud",
            "secrets",
            "versions",
            "add",
            "chart-img-accounts",
            &project,
            &format!("--data-file={accounts_file}"),
        ])?,
        command(&[
            "gcloud",
            "secrets",
            "add-iam-policy-binding",
            "chart-img-accounts",
            &project,
            &member(&sa),
            "--role=roles/secretmanager.secretAccessor",
        ])?,
        String::new(),
        "# 4. Cloud Run service".into(),
        command(&[
            "gcloud",
            "run",
            "deploy",
            "chart-export-worker",
            &project,
            &region,
            &format!("--image={image}"),
            &format!("--service-account={sa}"),
            "--no-allow-unauthenticated",
            "--ingress=internal",
            &format!("--set-env-vars={}", env_vars.join(",")),
            "--set-secrets=CHART_IMG_ACCOUNTS_JSON=chart-img-accounts:latest",
            "--cpu=1",
            "--memory=512Mi",
            &format!("--concurrency={concurrency}"),
            &format!("--timeout={}", ack.as_secs()),
            "--min-instances=0",
            &format!("--max-instances={max_instances}"),
        ])?,
        command(&[
            "gcloud",
            "run",
            "services",
            "add-iam-policy-binding",
            "chart-export-worker",
            &project,
            &region,
            &member(&tsa),
            "--role=roles/run.invoker",
        ])?,
        String::new(),
        format!("# 5. Eventarc triggers (location {location}) and their push subscriptions' ack deadline"),
    ];
    let location_flag = format!("--location={location}");
    for t in TRIGGER_EVENT_TYPES {
        let trigger = trigger_name(*t);
        out.push(command(&[
            "gcloud",
            "eventarc",
            "triggers",
            "create",
            &trigger,
            &project,
            &location_flag,
            &format!("--event-filters=type={}", t.ce_type()),
            &format!("--event-filters=database={db}"),
            "--event-filters-path-pattern=document=flow_runs/{runId}",
            "--event-data-content-type=application/protobuf",
            "--destination-run-service=chart-export-worker",
            &format!("--destination-run-region={r}"),
            "--destination-run-path=/",
            &format!("--service-account={tsa}"),
        ])?);
        let describe = command(&[
            "gcloud",
            "eventarc",
            "triggers",
            "describe",
            &trigger,
            &project,
            &location_flag,
            "--format=value(transport.pubsub.subscription)",
        ])?;
        out.push(format!("{SUBSCRIPTION_VAR}=\"$({describe})\""));
        out.push(format!(
            "{} \"${SUBSCRIPTION_VAR}\" {}",
            command(&["gcloud", "pubsub", "subscriptions", "update"])?,
            command(&[&format!("--ack-deadline={}", ack.as_secs())])?
        ));
    }
    let mut text = out.join("\n");
    text.push('\n');
    Ok(text)
}

/// The shell variable the plan stores a trigger's push subscription in between two commands.
pub const SUBSCRIPTION_VAR: &str = "SUBSCRIPTION";

/// `chart-export-on-flow-run-written`.
pub fn trigger_name(t: EventType) -> String {
    format!("chart-export-on-flow-run-{}", t.name())
}

/// `deploy-plan`: prints the commands, or the refusal (exit 2).
pub fn run(args: DeployPlanArgs) -> i32 {
    let json = match std::fs::read_to_string(&args.accounts_file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "error: cannot read --accounts-file {}: {e}",
                args.accounts_file.display()
            );
            return 2;
        }
    };
    match plan(&args, &json) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(env: &[(&str, &str)]) -> Settings {
        Settings::from_lookup(|k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())).unwrap()
    }

    #[test]
    fn the_margin_adds_each_stage_after_the_deadline_at_its_timeouts() {
        let s = settings(&[]);
        let m = AckMargin::for_settings(&s, 2);
        // A call at CHART_IMG_TIMEOUT_SECONDS (35 s); a GCS write: 30 s of retries + one 60 s request; a Firestore
        // operation: 30 s of retries + a transaction's three calls at 10 s.
        assert_eq!(m.call, Duration::from_secs(35));
        assert_eq!(m.upload, Duration::from_secs(90));
        assert_eq!(m.manifest, Duration::from_secs(90));
        assert_eq!(m.give_backs, Duration::from_secs(2 * 60));
        assert_eq!(m.finalize, Duration::from_secs(60));
        assert_eq!(m.total(), Duration::from_secs(35 + 90 + 120 + 90 + 60));
    }

    #[test]
    fn the_margin_follows_the_settings_it_is_computed_from() {
        let base = AckMargin::for_settings(&settings(&[]), 1);
        let faster = AckMargin::for_settings(
            &settings(&[
                ("CHART_IMG_TIMEOUT_SECONDS", "20"),
                ("CHART_EXPORT_STORE_RETRY_SECONDS", "10"),
            ]),
            1,
        );
        assert_eq!(faster.call, Duration::from_secs(20));
        // Four store operations (upload, one give-back, manifest, finalize), each 20 s shorter.
        assert_eq!(base.total() - faster.total(), Duration::from_secs(15 + 4 * 20));
        assert_eq!(
            AckMargin::for_settings(&settings(&[]), 3).total() - base.total(),
            2 * base.finalize,
            "each account adds one give-back"
        );
    }

    fn args(step: Option<u64>, ack: Option<u64>) -> DeployPlanArgs {
        DeployPlanArgs {
            project: "p-1".into(),
            region: "us-central1".into(),
            firestore_location: "nam5".into(),
            database: DEFAULT_FIRESTORE_DATABASE.into(),
            bucket: "b-1".into(),
            accounts_file: PathBuf::from("accounts.json"),
            step_deadline: step,
            ack_deadline: ack,
            max_in_flight: DEFAULT_CONCURRENCY,
            repo: "workers".into(),
            tag: "latest".into(),
        }
    }

    #[test]
    fn the_step_deadline_defaults_to_what_fits_and_a_longer_one_is_refused() {
        let m = AckMargin::for_settings(&settings(&[]), 1);
        let room = MAX_ACK_DEADLINE - m.total();
        let worker = Duration::from_secs(540);
        assert_eq!(deadlines(&args(None, None), &m, worker), Ok((room, MAX_ACK_DEADLINE)));
        // A short worker default is kept, and the ack deadline is only as long as it needs.
        let short = Duration::from_secs(60);
        assert_eq!(deadlines(&args(None, None), &m, short), Ok((short, short + m.total())));
        assert!(deadlines(&args(Some(room.as_secs()), None), &m, worker).is_ok());
        let e = deadlines(&args(Some(room.as_secs() + 1), None), &m, worker).unwrap_err();
        assert!(e.contains(&format!("at most {} s", room.as_secs())), "{e}");
        let e = deadlines(&args(Some(10), Some(10 + m.total().as_secs() - 1)), &m, worker).unwrap_err();
        assert!(
            e.contains("exceeds the ack deadline") && e.contains("at most 9 s"),
            "{e}"
        );
        // An ack deadline below the margin itself: only a longer ack deadline helps.
        let e = deadlines(&args(Some(10), Some(100)), &m, worker).unwrap_err();
        assert!(
            e.contains(&format!(
                "raise --ack-deadline to at least {} s",
                m.total().as_secs() + 1
            )),
            "{e}"
        );
    }

    #[test]
    fn commands_are_quoted_for_bash_and_read_back_as_written() {
        let words = [
            "gcloud",
            "--event-filters=database=(default)",
            "document=flow_runs/{runId}",
            "a b",
            "it's",
        ];
        let line = command(&words).unwrap();
        assert_eq!(shlex::split(&line).unwrap(), words);
        assert!(!line.contains(" --event-filters=database=(default)"), "{line}");
    }
}
