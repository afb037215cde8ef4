//! Chooses the chart renderer for `CHART_IMG_MODE`.

use std::sync::Arc;

use anyhow::bail;

use crate::chartimg::HttpChartImg;
use crate::config::{ChartImgMode, Settings};
use crate::ports::ChartRenderer;

pub fn build(settings: &Settings) -> anyhow::Result<Arc<dyn ChartRenderer>> {
    match settings.mode {
        ChartImgMode::Real => Ok(Arc::new(HttpChartImg::new(&settings.base_url, settings.request_timeout)?)),
        ChartImgMode::Mock | ChartImgMode::Record => {
            bail!("CHART_IMG_MODE={} is not wired yet", settings.mode)
        }
    }
}
