//! `deploy-plan`: prints the exact `gcloud` commands that deploy the worker for given parameters, and refuses
//! inconsistent ones. Every derived number comes from the worker's own defaults and `chart_img_spec` plans, so the
//! commands cannot drift from the code. Keys are never read into the output: only the accounts' ids and plans are.
//!
//! Derivations (also in worker/README.md, "Deployment"):
//! - trigger location: the Firestore location, with the multi-regions mapped as Eventarc does (`nam5` →
//!   `us-central1`, `eur3` → `europe-west4`); any other location must be a region name (`europe-west1`).
//! - ack deadline: at most 600 s (Pub/Sub's maximum) and at least the step deadline + [`ACK_MARGIN`] (the release
//!   and the answer after the deadline). Cloud Run's `--timeout` is set to the same value.
//! - `W` = charts in flight that keep every account at its rate: [`in_flight_for`] the plans at
//!   [`DEFAULT_CALL_LATENCY`] with no cap (Σ burst + rate × latency).
//! - `--max-instances` = ⌈W / CHART_EXPORT_CONCURRENCY⌉: enough instances that each holds at most its memory-safe
//!   number of charts in flight when the keys are saturated; more instances add no throughput (the keys' rates are
//!   the bound) and each adds a per-process limiter per key.
//! - `--concurrency` = ⌈W / max-instances⌉, within Cloud Run's 1..=1000: steps per instance so that even one-chart
//!   steps fill `W` over the instances.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::config::{check_database_id, parse_accounts, Lifecycle, DEFAULT_CONCURRENCY, DEFAULT_FIRESTORE_DATABASE};
use crate::quota::{in_flight_for, DEFAULT_CALL_LATENCY};

/// The most Pub/Sub allows for a subscription's ack deadline.
pub const MAX_ACK_DEADLINE: Duration = Duration::from_secs(600);
/// Time the ack deadline keeps beyond the step deadline: the step releases or finalizes after its deadline and then
/// answers; the delivery must not be redelivered meanwhile.
pub const ACK_MARGIN: Duration = Duration::from_secs(30);
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
    let default_deadline = Lifecycle::for_lease(Duration::from_secs(60)).step_deadline;
    let step = args.step_deadline.map(Duration::from_secs).unwrap_or(default_deadline);
    if step.is_zero() {
        return Err("--step-deadline must be at least 1 s".into());
    }
    let ack = args
        .ack_deadline
        .map(Duration::from_secs)
        .unwrap_or((step + ACK_MARGIN).min(MAX_ACK_DEADLINE));
    if ack > MAX_ACK_DEADLINE {
        return Err(format!(
            "--ack-deadline {} s is above Pub/Sub's maximum of {} s",
            ack.as_secs(),
            MAX_ACK_DEADLINE.as_secs()
        ));
    }
    if ack < step + ACK_MARGIN {
        return Err(format!(
            "--ack-deadline {} s is below the step deadline ({} s) + {} s: Pub/Sub would redeliver while the step still runs; lower --step-deadline to at most {} s",
            ack.as_secs(),
            step.as_secs(),
            ACK_MARGIN.as_secs(),
            MAX_ACK_DEADLINE.saturating_sub(ACK_MARGIN).as_secs()
        ));
    }
    let plans: Vec<_> = accounts.iter().map(|a| a.plan).collect();
    let saturate = in_flight_for(&plans, DEFAULT_CALL_LATENCY, usize::MAX);
    let max_instances = saturate.div_ceil(args.max_in_flight).max(1);
    let concurrency = saturate.div_ceil(max_instances).clamp(1, CLOUD_RUN_MAX_CONCURRENCY);

    let (p, r, db, b) = (&args.project, &args.region, &args.database, &args.bucket);
    let image = format!("{r}-docker.pkg.dev/{p}/{}/worker-chart-export:{}", args.repo, args.tag);
    let sa = format!("chart-export-worker@{p}.iam.gserviceaccount.com");
    let tsa = format!("chart-export-trigger@{p}.iam.gserviceaccount.com");
    let summary: Vec<String> = accounts.iter().map(|a| format!("{} {:?}", a.id, a.plan)).collect();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# worker-chart-export deployment: project {p}, region {r}, Firestore {db} in {} (trigger in {location})",
        args.firestore_location
    );
    let _ = writeln!(
        o,
        "# accounts: {} — {saturate} charts in flight keep them at their rate at {} s per chart",
        summary.join(", "),
        DEFAULT_CALL_LATENCY.as_secs()
    );
    let _ = writeln!(
        o,
        "# step deadline {} s, ack deadline {} s, --max-instances {max_instances}, --concurrency {concurrency}",
        step.as_secs(),
        ack.as_secs()
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "# 1. Image (Cloud Build, deploy/cloudbuild.yaml)");
    let _ = writeln!(
        o,
        "gcloud artifacts repositories create {} --project={p} --repository-format=docker --location={r}",
        args.repo
    );
    let _ = writeln!(o, "gcloud builds submit --project={p} --region={r} --config=deploy/cloudbuild.yaml --substitutions=_IMAGE={image} .");
    let _ = writeln!(o);
    let _ = writeln!(o, "# 2. Service accounts and roles");
    let _ = writeln!(
        o,
        "gcloud iam service-accounts create chart-export-worker --project={p} --display-name=\"CHART_EXPORT worker\""
    );
    let _ = writeln!(
        o,
        "gcloud projects add-iam-policy-binding {p} --member=serviceAccount:{sa} --role=roles/datastore.user"
    );
    let _ = writeln!(o, "gcloud storage buckets add-iam-policy-binding gs://{b} --member=serviceAccount:{sa} --role=roles/storage.objectUser");
    let _ = writeln!(o, "gcloud iam service-accounts create chart-export-trigger --project={p} --display-name=\"Eventarc to chart export\"");
    let _ = writeln!(
        o,
        "gcloud projects add-iam-policy-binding {p} --member=serviceAccount:{tsa} --role=roles/eventarc.eventReceiver"
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "# 3. The accounts secret (CHART_IMG_ACCOUNTS_JSON; the file's content, keys included, goes in from stdin, never on a command line)");
    let _ = writeln!(
        o,
        "gcloud secrets create chart-img-accounts --project={p} --replication-policy=automatic"
    );
    let _ = writeln!(
        o,
        "gcloud secrets versions add chart-img-accounts --project={p} --data-file=- < ACCOUNTS_FILE"
    );
    let _ = writeln!(o, "gcloud secrets add-iam-policy-binding chart-img-accounts --project={p} --member=serviceAccount:{sa} --role=roles/secretmanager.secretAccessor");
    let _ = writeln!(o);
    let _ = writeln!(o, "# 4. Cloud Run service");
    let _ = writeln!(
        o,
        "gcloud run deploy chart-export-worker --project={p} --region={r} --image={image} --service-account={sa} \
--no-allow-unauthenticated --ingress=internal \
--set-env-vars=GOOGLE_CLOUD_PROJECT={p},FIRESTORE_DATABASE={db},ARTIFACTS_BUCKET={b},CHART_IMG_MODE=real,CHART_EXPORT_STEP_DEADLINE_SECONDS={},CHART_EXPORT_CONCURRENCY={} \
--set-secrets=CHART_IMG_ACCOUNTS_JSON=chart-img-accounts:latest --cpu=1 --memory=512Mi \
--concurrency={concurrency} --timeout={} --min-instances=0 --max-instances={max_instances}",
        step.as_secs(),
        args.max_in_flight,
        ack.as_secs()
    );
    let _ = writeln!(o, "gcloud run services add-iam-policy-binding chart-export-worker --project={p} --region={r} --member=serviceAccount:{tsa} --role=roles/run.invoker");
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "# 5. Eventarc trigger (location {location}) and its push subscription's ack deadline"
    );
    let _ = writeln!(
        o,
        "gcloud eventarc triggers create chart-export-on-flow-run-update --project={p} --location={location} \
--event-filters=type=google.cloud.firestore.document.v1.updated --event-filters=database='{db}' \
--event-filters-path-pattern=document='flow_runs/{{runId}}' --event-data-content-type=application/protobuf \
--destination-run-service=chart-export-worker --destination-run-region={r} --destination-run-path=/ --service-account={tsa}"
    );
    let _ = writeln!(
        o,
        "gcloud pubsub subscriptions update \"$(gcloud eventarc triggers describe chart-export-on-flow-run-update --project={p} --location={location} --format='value(transport.pubsub.subscription)')\" --ack-deadline={}",
        ack.as_secs()
    );
    Ok(o)
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
