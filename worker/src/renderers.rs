//! Chooses the chart renderer for `CHART_IMG_MODE`: `real` → HTTP, `mock` → cassette replay only,
//! `record` → HTTP through a recording cassette. The VCR mode defaults to `none` for `mock` and `new_episodes`
//! for `record`; `CHART_IMG_VCR_MODE` (none, once, new_episodes, all, spy) overrides it. `CHART_IMG_ALLOW_UNUSED=false`
//! makes recorded interactions the step did not use an error at the step's end (`run-local` exits 1 with the list).

use std::sync::Arc;

use anyhow::{bail, Context};

use crate::chartimg::{CassetteChartImg, HttpChartImg};
use crate::config::{ChartImgMode, Settings};
use crate::ports::ChartRenderer;

pub fn build(settings: &Settings) -> anyhow::Result<Arc<dyn ChartRenderer>> {
    let http =
        || HttpChartImg::new(&settings.base_url, settings.request_timeout).context("cannot build the HTTP client");
    if settings.mode == ChartImgMode::Real {
        return Ok(Arc::new(http()?));
    }
    let Some(dir) = &settings.cassette_dir else {
        bail!(
            "CHART_IMG_MODE={} needs CHART_IMG_CASSETTE_DIR (or --cassette-dir)",
            settings.mode
        );
    };
    let mode = match settings.vcr_mode {
        Some(m) => m,
        None if settings.mode == ChartImgMode::Mock => recorder::Mode::None,
        None => recorder::Mode::NewEpisodes,
    };
    if settings.mode == ChartImgMode::Mock && !dir.join(recorder::CASSETTE_FILE).exists() {
        bail!(
            "CHART_IMG_CASSETTE_DIR: {} holds no cassette ({} is missing)",
            dir.display(),
            recorder::CASSETTE_FILE
        );
    }
    let mut secrets = recorder::Secrets::new();
    for a in &settings.accounts {
        secrets = secrets.with_account(a.id.as_str(), a.api_key.clone());
    }
    let allow_unused = settings.allow_unused;
    let config = recorder::VcrConfig {
        mode,
        allow_unused,
        ..recorder::VcrConfig::default()
    };
    let vcr =
        recorder::Vcr::open(dir, config, secrets).with_context(|| format!("cannot open cassette {}", dir.display()))?;
    let upstream = match mode {
        recorder::Mode::None => None,
        _ => Some(http()?),
    };
    Ok(Arc::new(CassetteChartImg::new(vcr, upstream)))
}
