//! `worker-chart-export report <manifest>`: one self-contained HTML page of a finished step — its charts as images
//! (embedded as `data:` URIs), each with its template, size, pixel dimensions, sha256 (checked against the bytes)
//! and time; its failures with their codes; its outcome. CSS is inline and the page's Content-Security-Policy allows
//! nothing but inline styles and `data:` images, so opening it never touches a network.
//!
//! The manifest is a local file or a `gs://bucket/path` object. A local manifest's items (`gs://b/p`) are read from
//! the local artifact layout ([`LocalArtifacts`]: `<dir>/b/p`), whose `<dir>` is found from where the manifest
//! itself lies (`<dir>/<bucket>/runs/<runId>/steps/<stepId>/charts/manifest.json`) unless `--artifacts-dir` names
//! it; a `gs://` manifest and its items are read through [`GcsArtifacts`] (`STORAGE_EMULATOR_HOST` honoured).
//!
//! Bad input (not a manifest, an unreadable file, a missing image, a bad URI) is one line naming what is wrong and
//! exit status 2; an unreachable object store is exit status 3.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use bytes::Bytes;
use clap::Args;
use sha2::{Digest, Sha256};

use crate::adapters::{GcsArtifacts, LocalArtifacts};
use crate::domain::manifest::manifest_path;
use crate::domain::{Manifest, ManifestFailure, ManifestItem, ObjectRef, RunId, StepId};
use crate::ports::{ArtifactError, ArtifactStore};

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The step's manifest: a local file, or `gs://bucket/path` (Cloud Storage, or the emulator at
    /// STORAGE_EMULATOR_HOST).
    pub manifest: String,
    /// Where the HTML page goes (default: `report-<runId>-<stepId>.html` in the current directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// For a local manifest outside the artifact layout: the folder where `gs://b/p` is `<dir>/b/p`.
    #[arg(long)]
    pub artifacts_dir: Option<PathBuf>,
}

/// Why no report was written: a one-line message and the exit status (2 bad input, 3 unreachable store).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ReportError {
    pub message: String,
    pub exit_code: i32,
}

fn bad(message: impl Into<String>) -> ReportError {
    ReportError {
        message: message.into(),
        exit_code: 2,
    }
}

fn store_error(what: &str, e: ArtifactError) -> ReportError {
    let exit_code = if matches!(e, ArtifactError::Unavailable(_)) {
        3
    } else {
        2
    };
    ReportError {
        message: format!("cannot read {what}: {e}"),
        exit_code,
    }
}

/// One stored chart, read back and checked.
#[derive(Debug, Clone)]
pub struct Chart {
    pub item: ManifestItem,
    pub bytes: Bytes,
    /// The sha256 of the bytes read, lowercase hex.
    pub actual_sha256: String,
    /// Pixel dimensions from the image header; `None` when the bytes are not a PNG or JPEG.
    pub dimensions: Option<(usize, usize)>,
    /// `image/png` or `image/jpeg` as detected from the bytes (never taken from the manifest).
    pub detected_type: Option<&'static str>,
}

impl Chart {
    pub fn new(item: ManifestItem, bytes: Bytes) -> Self {
        let actual_sha256 = hex::encode(Sha256::digest(&bytes));
        let detected_type = match imagesize::image_type(&bytes) {
            Ok(imagesize::ImageType::Png) => Some("image/png"),
            Ok(imagesize::ImageType::Jpeg) => Some("image/jpeg"),
            _ => None,
        };
        let dimensions = detected_type
            .and_then(|_| imagesize::blob_size(&bytes).ok())
            .map(|s| (s.width, s.height));
        Self {
            item,
            bytes,
            actual_sha256,
            dimensions,
            detected_type,
        }
    }

    /// The bytes are the ones the manifest describes: same sha256 and same length (the page checks each on its own).
    #[cfg(test)]
    fn matches(&self) -> bool {
        self.actual_sha256.eq_ignore_ascii_case(&self.item.sha256) && self.bytes.len() as u64 == self.item.bytes
    }
}

/// A manifest with its charts read back.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub manifest: Manifest,
    /// Where the manifest was read from (a path or a `gs://` URI), as shown on the page.
    pub source: String,
    pub charts: Vec<Chart>,
}

impl RunReport {
    /// Reads every item of `manifest` from `store`. A missing image is an error naming it.
    pub async fn collect(manifest: Manifest, source: String, store: &dyn ArtifactStore) -> Result<Self, ReportError> {
        let mut charts = Vec::with_capacity(manifest.items.len());
        for (i, item) in manifest.items.iter().enumerate() {
            let obj = ObjectRef::parse_uri(&item.gcs_uri).ok_or_else(|| {
                bad(format!(
                    "{source}: items[{i}].gcsUri {:?} is not a gs://bucket/path URI",
                    item.gcs_uri
                ))
            })?;
            let what = format!("image {obj} (items[{i}], {})", item.chart_template_id);
            match store.get(&obj).await.map_err(|e| store_error(&what, e))? {
                Some(o) => charts.push(Chart::new(item.clone(), o.bytes)),
                None => return Err(bad(format!("missing {what} listed in {source}"))),
            }
        }
        Ok(Self {
            manifest,
            source,
            charts,
        })
    }

    /// `report-<runId>-<stepId>.html`.
    pub fn default_file_name(&self) -> String {
        format!("report-{}-{}.html", self.manifest.run_id, self.manifest.step_id)
    }
}

/// Reads the manifest named by `source` (a local path or a `gs://` URI) and its charts.
pub async fn load(source: &str, artifacts_dir: Option<&Path>) -> Result<RunReport, ReportError> {
    if source.starts_with("gs://") {
        let obj = ObjectRef::parse_uri(source)
            .filter(|o| !o.bucket.contains(['?', '#']))
            .ok_or_else(|| bad(format!("{source:?} is not a gs://bucket/path URI")))?;
        let host = std::env::var("STORAGE_EMULATOR_HOST")
            .ok()
            .filter(|h| !h.trim().is_empty());
        let gcs = GcsArtifacts::new(host.as_deref())
            .await
            .map_err(|e| store_error(source, e))?;
        let stored = gcs
            .get(&obj)
            .await
            .map_err(|e| store_error(&format!("manifest {source}"), e))?;
        let stored = stored.ok_or_else(|| bad(format!("manifest {source} does not exist")))?;
        let manifest = parse(&stored.bytes, source)?;
        return RunReport::collect(manifest, source.to_owned(), &gcs).await;
    }
    if source.contains("://") {
        return Err(bad(format!(
            "{source:?}: a manifest is a local path or a gs://bucket/path URI"
        )));
    }
    let path = Path::new(source);
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read manifest {}: {e}", path.display())))?;
    let manifest = parse(&bytes, source)?;
    let root = match artifacts_dir {
        Some(d) => d.to_path_buf(),
        None => layout_root(path, &manifest)?,
    };
    RunReport::collect(manifest, source.to_owned(), &LocalArtifacts::new(root)).await
}

fn parse(bytes: &[u8], source: &str) -> Result<Manifest, ReportError> {
    Manifest::from_validated_json(bytes).map_err(|e| bad(format!("{source} is not a step manifest: {e}")))
}

/// The `<dir>` of a manifest at `<dir>/<bucket>/runs/<runId>/steps/<stepId>/charts/manifest.json`.
fn layout_root(path: &Path, m: &Manifest) -> Result<PathBuf, ReportError> {
    let not_in_layout = || {
        bad(format!(
            "manifest {} is not at <dir>/<bucket>/runs/{}/steps/{}/charts/manifest.json of a local artifact folder; \
             pass --artifacts-dir <dir>",
            path.display(),
            m.run_id,
            m.step_id
        ))
    };
    let run = RunId::parse(m.run_id.as_str()).map_err(|_| not_in_layout())?;
    let step = StepId::parse(m.step_id.as_str()).map_err(|_| not_in_layout())?;
    let expected = manifest_path(&run, &step);
    let mut dir = path;
    for segment in expected.rsplit('/') {
        if dir.file_name().is_none_or(|n| n != segment) {
            return Err(not_in_layout());
        }
        dir = dir.parent().ok_or_else(not_in_layout)?;
    }
    // `dir` is now `<dir>/<bucket>`.
    match (dir.file_name(), dir.parent()) {
        (Some(_), Some(root)) => Ok(if root.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            root.to_path_buf()
        }),
        _ => Err(not_in_layout()),
    }
}

/// Writes the report of `source` to `out` (default: [`RunReport::default_file_name`] in the current directory) and
/// answers the path written.
pub async fn write(source: &str, artifacts_dir: Option<&Path>, out: Option<&Path>) -> Result<PathBuf, ReportError> {
    let report = load(source, artifacts_dir).await?;
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(report.default_file_name()));
    let html = render_html(&report, &crate::domain::step::rfc3339(chrono::Utc::now()));
    std::fs::write(&out, html).map_err(|e| bad(format!("cannot write {}: {e}", out.display())))?;
    Ok(out)
}

/// The `report` command: prints the path written; one line on stderr and exit 2 (or 3) otherwise.
pub async fn main(args: ReportArgs) -> i32 {
    match write(&args.manifest, args.artifacts_dir.as_deref(), args.out.as_deref()).await {
        Ok(path) => {
            println!("{}", path.display());
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code
        }
    }
}

/// Text or an attribute value made safe for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 28px}
header h1{margin:0 0 6px;font-size:20px}
header dl{display:flex;flex-wrap:wrap;gap:4px 22px;margin:0}
header dt{opacity:.7}header dd{margin:0 0 0 6px;font-weight:600}
header div{display:flex}
.outcome{display:inline-block;padding:2px 10px;border-radius:4px;font-weight:700;margin-left:10px;font-size:14px}
.SUCCEEDED{background:#1f9d55}.FAILED{background:#cc1f1a}
main{padding:20px 28px}
h2{font-size:16px;margin:22px 0 10px}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:18px}
figure{margin:0;background:#fff;border-radius:6px;box-shadow:0 1px 3px #0002;overflow:hidden}
figure img{display:block;width:100%;height:auto;background:#111}
.noimage{padding:40px;text-align:center;color:#cc1f1a;background:#fee}
figcaption{padding:10px 14px}
figcaption h3{margin:0 0 6px;font-size:15px}
table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:3px 8px 3px 0;vertical-align:top}
th{font-weight:600;color:#555;white-space:nowrap}
code{font:12px ui-monospace,monospace;word-break:break-all}
.ok{color:#1f9d55;font-weight:600}.mismatch{color:#cc1f1a;font-weight:700}
.failures{background:#fff;border-radius:6px;box-shadow:0 1px 3px #0002}
.failures td,.failures th{padding:8px 12px;border-bottom:1px solid #eee}
.failures .code{font-weight:700;color:#cc1f1a;white-space:nowrap}
footer{padding:10px 28px 24px;color:#666;font-size:12px}
";

/// The page. Every string that comes from the manifest or the store goes through [`escape`].
pub fn render_html(r: &RunReport, generated_at: &str) -> String {
    let m = &r.manifest;
    let outcome = if m.succeeded() { "SUCCEEDED" } else { "FAILED" };
    let mut h = String::with_capacity(r.charts.iter().map(|c| c.bytes.len() * 4 / 3 + 2048).sum::<usize>() + 8192);
    let e = escape;
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n\
         <title>{run} / {step}: {outcome}</title>\n<style>{STYLE}</style></head>\n<body>\n\
         <header><h1>flow_runs/{run} · step {step}<span class=\"outcome {outcome}\" id=\"outcome\">{outcome}</span></h1>\n<dl>\
         <div><dt>symbol</dt><dd>{symbol}</dd></div><div><dt>timeframe</dt><dd>{tf}</dd></div>\
         <div><dt>charts</dt><dd>{n} of {requested} (at least {min} required)</dd></div>\
         <div><dt>failures</dt><dd>{nf}</dd></div><div><dt>manifest created</dt><dd>{created}</dd></div></dl></header>\n<main>\n",
        run = e(&m.run_id),
        step = e(&m.step_id),
        symbol = e(&m.symbol),
        tf = e(&m.timeframe),
        n = m.items.len(),
        requested = m.requested,
        min = m.min_images,
        nf = m.failures.len(),
        created = e(&m.created_at),
    );
    let _ = write!(h, "<h2>Charts ({})</h2>\n<section class=\"charts\">\n", r.charts.len());
    for c in &r.charts {
        chart_html(&mut h, c);
    }
    h.push_str("</section>\n");
    let _ = writeln!(h, "<h2>Failures ({})</h2>", m.failures.len());
    if m.failures.is_empty() {
        h.push_str("<p id=\"no-failures\">No chart failed.</p>\n");
    } else {
        h.push_str(
            "<table class=\"failures\" id=\"failures\"><thead><tr><th>template</th><th>code</th><th>HTTP status</th>\
             <th>message</th></tr></thead><tbody>\n",
        );
        for f in &m.failures {
            failure_html(&mut h, f);
        }
        h.push_str("</tbody></table>\n");
    }
    let _ = write!(
        h,
        "</main>\n<footer>From <code>{}</code> · written {} by worker-chart-export {}</footer>\n</body></html>\n",
        e(&r.source),
        e(generated_at),
        env!("CARGO_PKG_VERSION")
    );
    h
}

fn chart_html(h: &mut String, c: &Chart) {
    let e = escape;
    let i = &c.item;
    let _ = write!(
        h,
        "<figure class=\"chart\" data-template=\"{}\">",
        e(&i.chart_template_id)
    );
    match c.detected_type {
        Some(t) => {
            let _ = write!(
                h,
                "<img alt=\"{}\" src=\"data:{t};base64,{}\">",
                e(&i.chart_template_id),
                base64::engine::general_purpose::STANDARD.encode(&c.bytes)
            );
        }
        None => h.push_str("<div class=\"noimage\">the stored bytes are not a PNG or JPEG image</div>"),
    }
    let dims = c
        .dimensions
        .map(|(w, hgt)| format!("{w} × {hgt} px"))
        .unwrap_or_else(|| "unknown".into());
    let size = if c.bytes.len() as u64 == i.bytes {
        format!("{} bytes", i.bytes)
    } else {
        format!(
            "{} bytes in the manifest, <span class=\"mismatch\">{} stored</span>",
            i.bytes,
            c.bytes.len()
        )
    };
    let sha = if c.actual_sha256.eq_ignore_ascii_case(&i.sha256) {
        format!(
            "<code>{}</code> <span class=\"ok sha\">✓ matches the bytes</span>",
            e(&i.sha256)
        )
    } else {
        format!(
            "<code>{}</code> <span class=\"mismatch sha\">✗ the bytes hash to <code>{}</code></span>",
            e(&i.sha256),
            c.actual_sha256
        )
    };
    let _ = writeln!(
        h,
        "<figcaption><h3>{}</h3><table>\
         <tr><th>size</th><td class=\"size\">{size}</td></tr>\
         <tr><th>pixels</th><td class=\"dimensions\">{dims}</td></tr>\
         <tr><th>sha256</th><td>{sha}</td></tr>\
         <tr><th>generated</th><td>{}</td></tr>\
         <tr><th>type</th><td>{}</td></tr>\
         <tr><th>object</th><td><code>{}</code></td></tr></table></figcaption></figure>",
        e(&i.chart_template_id),
        e(&i.generated_at),
        e(&i.content_type),
        e(&i.gcs_uri),
    );
}

fn failure_html(h: &mut String, f: &ManifestFailure) {
    let status = f.http_status.map(|s| s.to_string()).unwrap_or_else(|| "—".into());
    let _ = writeln!(
        h,
        "<tr class=\"failure\"><td class=\"template\">{}</td><td class=\"code\">{}</td><td class=\"status\">{status}</td>\
         <td class=\"message\">{}</td></tr>",
        escape(&f.chart_template_id),
        f.code,
        escape(&f.message)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::MemoryArtifacts;
    use crate::domain::ErrorCode;
    use crate::ports::WriteMode;

    /// The start of a PNG (signature and IHDR chunk): enough for the dimensions. The browser test uses real images.
    fn png(width: u32, height: u32) -> Bytes {
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        b.extend_from_slice(&width.to_be_bytes());
        b.extend_from_slice(&height.to_be_bytes());
        b.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        Bytes::from(b)
    }

    fn item(template: &str, bytes: &Bytes) -> ManifestItem {
        ManifestItem {
            chart_template_id: template.into(),
            gcs_uri: format!("gs://bucket-1/runs/run-1/charts/4h/{template}/20261128T132511Z_BTCUSDT_4h_x.png"),
            content_type: "image/png".into(),
            bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
            generated_at: "2026-11-28T13:25:11Z".into(),
        }
    }

    fn manifest(items: Vec<ManifestItem>, failures: Vec<ManifestFailure>, min_images: u32) -> Manifest {
        Manifest {
            schema_version: 1,
            run_id: "run-1".into(),
            step_id: "charts_4h".into(),
            created_at: "2026-11-28T13:25:12Z".into(),
            symbol: "BTCUSDT".into(),
            timeframe: "4h".into(),
            min_images,
            requested: (items.len() + failures.len()) as u32,
            items,
            failures,
        }
    }

    async fn report_of(m: Manifest, stored: &[(&ManifestItem, Bytes)]) -> Result<RunReport, ReportError> {
        let store = MemoryArtifacts::default();
        for (i, b) in stored {
            store
                .put(
                    &ObjectRef::parse_uri(&i.gcs_uri).unwrap(),
                    b.clone(),
                    "image/png",
                    WriteMode::Overwrite,
                )
                .await
                .unwrap();
        }
        RunReport::collect(m, "test-manifest.json".into(), &store).await
    }

    #[test]
    fn escape_covers_text_and_attributes() {
        assert_eq!(
            escape(r#"<b a="1" c='2'>&amp;</b>"#),
            "&lt;b a=&quot;1&quot; c=&#39;2&#39;&gt;&amp;amp;&lt;/b&gt;"
        );
        assert_eq!(escape("plain ✓"), "plain ✓");
    }

    #[tokio::test]
    async fn charts_and_failures_are_listed_and_manifest_text_is_escaped() {
        let a = png(800, 600);
        let pv = item("price_volume", &a);
        let failures = vec![
            ManifestFailure {
                chart_template_id: "rsi\"><script>alert(1)</script>".into(),
                code: ErrorCode::ChartApiFailed,
                message: "422 <Invalid> study & co".into(),
                http_status: Some(422),
            },
            ManifestFailure {
                chart_template_id: "macd".into(),
                code: ErrorCode::ValidationFailed,
                message: "template macd does not exist".into(),
                http_status: None,
            },
        ];
        let m = manifest(vec![pv.clone()], failures, 1);
        let r = report_of(m, &[(&pv, a.clone())]).await.unwrap();
        assert_eq!(r.charts[0].dimensions, Some((800, 600)));
        assert!(r.charts[0].matches());
        let html = render_html(&r, "2026-11-28T14:00:00Z");

        assert!(
            html.contains("<span class=\"outcome SUCCEEDED\" id=\"outcome\">SUCCEEDED</span>"),
            "{html}"
        );
        assert!(!html.contains("<script"), "manifest text reached the page unescaped");
        assert!(html.contains("rsi&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("422 &lt;Invalid&gt; study &amp; co"));
        assert_eq!(html.matches("<tr class=\"failure\">").count(), 2);
        assert!(html.contains("<td class=\"code\">CHART_API_FAILED</td><td class=\"status\">422</td>"));
        assert!(html.contains("<td class=\"code\">VALIDATION_FAILED</td><td class=\"status\">—</td>"));
        let data = base64::engine::general_purpose::STANDARD.encode(&a);
        assert!(html.contains(&format!(
            "<img alt=\"price_volume\" src=\"data:image/png;base64,{data}\">"
        )));
        assert!(html.contains("800 × 600 px") && html.contains("✓ matches the bytes"));
        assert!(html.contains(&format!("{} bytes", a.len())));
        // Self-contained: nothing on the page names a network location but the manifest's own gs:// URIs.
        assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("src=\"gs:"));
        assert!(html.contains("default-src 'none'; img-src data:; style-src 'unsafe-inline'"));
    }

    #[tokio::test]
    async fn changed_bytes_and_non_images_are_flagged_and_the_outcome_follows_min_images() {
        let a = png(10, 20);
        let b = Bytes::from_static(b"<html>not an image</html>");
        let (ia, ib) = (item("price_volume", &a), item("rsi_14", &b));
        let m = manifest(vec![ia.clone(), ib.clone()], vec![], 3);
        let r = report_of(m, &[(&ia, png(10, 21)), (&ib, b.clone())]).await.unwrap();
        assert!(!r.charts[0].matches() && r.charts[1].matches());
        let html = render_html(&r, "t");
        assert!(html.contains("id=\"outcome\">FAILED</span>"), "2 items < minImages 3");
        assert!(html.contains("✗ the bytes hash to"));
        assert!(html.contains("the stored bytes are not a PNG or JPEG image"));
        assert_eq!(
            html.matches("<img ").count(),
            1,
            "no <img> for bytes that are not an image"
        );
        assert!(html.contains("id=\"no-failures\""));
    }

    #[tokio::test]
    async fn a_missing_image_is_an_error_naming_it() {
        let a = png(1, 1);
        let pv = item("price_volume", &a);
        let err = report_of(manifest(vec![pv.clone()], vec![], 1), &[]).await.unwrap_err();
        assert_eq!(err.exit_code, 2);
        assert_eq!(
            err.message,
            format!(
                "missing image {} (items[0], price_volume) listed in test-manifest.json",
                pv.gcs_uri
            )
        );
    }

    #[test]
    fn the_layout_root_is_found_from_the_manifest_path() {
        let m = manifest(vec![], vec![], 1);
        let p = Path::new("out/gcs/bucket-1/runs/run-1/steps/charts_4h/charts/manifest.json");
        assert_eq!(layout_root(p, &m).unwrap(), Path::new("out/gcs"));
        let p = Path::new("bucket-1/runs/run-1/steps/charts_4h/charts/manifest.json");
        assert_eq!(layout_root(p, &m).unwrap(), Path::new("."));
        let err = layout_root(Path::new("/tmp/manifest.json"), &m).unwrap_err();
        assert!(err.message.contains("pass --artifacts-dir"), "{}", err.message);
        let other_step = Path::new("g/b/runs/run-1/steps/charts_1h/charts/manifest.json");
        assert!(layout_root(other_step, &m).is_err());
    }
}
