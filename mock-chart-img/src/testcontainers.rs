//! The mock-chart-img container image for Rust tests through [`testcontainers`] (feature `testcontainers`). The
//! image is the one `scripts/images.sh` builds (`localhost/mock-chart-img:dev`); its variables, port and ready line
//! are [`settings`](crate::settings)'s.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use mock_chart_img::testcontainers::MockChartImgImage;
//! use testcontainers::runners::AsyncRunner;
//!
//! let mock = MockChartImgImage::default().with_keys("ci-key:PRO").start().await?;
//! let base = format!("http://{}:{}", mock.get_host().await?, mock.get_host_port_ipv4(8080).await?);
//! // CHART_IMG_BASE_URL=base, x-api-key: ci-key
//! # let _ = base; Ok(()) }
//! ```

use std::borrow::Cow;

use testcontainers::core::{ContainerPort, WaitFor};
use testcontainers::Image;

use crate::settings::{ADMIN_TOKEN_ENV, KEYS_ENV};

/// The port the image listens on (its `PORT`).
pub const PORT: u16 = 8080;
const PORTS: &[ContainerPort] = &[ContainerPort::Tcp(PORT)];

/// `localhost/mock-chart-img:dev` with environment variables of your choosing; ready on its `"message":"ready"`
/// line.
#[derive(Debug, Clone)]
pub struct MockChartImgImage {
    name: String,
    tag: String,
    env: Vec<(String, String)>,
}

impl Default for MockChartImgImage {
    fn default() -> Self {
        MockChartImgImage {
            name: "localhost/mock-chart-img".into(),
            tag: "dev".into(),
            env: Vec::new(),
        }
    }
}

impl MockChartImgImage {
    /// Another image name and tag (e.g. the one your registry holds).
    pub fn with_image(mut self, name: impl Into<String>, tag: impl Into<String>) -> Self {
        self.name = name.into();
        self.tag = tag.into();
        self
    }

    /// Keys in the short form `key:PLAN,key2:PLAN` (`MOCK_CHART_IMG_KEYS`).
    pub fn with_keys(self, keys: impl Into<String>) -> Self {
        self.with_env(KEYS_ENV, keys)
    }

    /// `/__admin` on the API port behind `Authorization: Bearer <token>` (`MOCK_CHART_IMG_ADMIN_TOKEN`).
    pub fn with_admin_token(self, token: impl Into<String>) -> Self {
        self.with_env(ADMIN_TOKEN_ENV, token)
    }

    /// Any other setting (`MOCK_CHART_IMG_SEED`, `MOCK_CHART_IMG_LATENCY`, …).
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }
}

impl Image for MockChartImgImage {
    fn name(&self) -> &str {
        &self.name
    }

    fn tag(&self) -> &str {
        &self.tag
    }

    fn ready_conditions(&self) -> Vec<WaitFor> {
        vec![WaitFor::message_on_stderr(r#""message":"ready""#)]
    }

    fn env_vars(&self) -> impl IntoIterator<Item = (impl Into<Cow<'_, str>>, impl Into<Cow<'_, str>>)> {
        self.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    fn expose_ports(&self) -> &[ContainerPort] {
        PORTS
    }
}
