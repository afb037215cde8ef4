//! Reloading the config file when it changes.
//!
//! The parent directory is watched, not the file: editors and `kubectl`-style tools replace a file by renaming a new
//! one over it, which a watch on the old inode would miss. A bad file is logged with its line and ignored — the
//! server keeps answering with the last good config.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use notify::{RecursiveMode, Watcher};

use crate::{config::Config, state::AppState};

/// Keeps the file watch alive; dropping it stops reloading.
pub struct ConfigWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
    status: Arc<ReloadStatus>,
}

impl std::fmt::Debug for ConfigWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatcher")
            .field("reloads", &self.reloads())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct ReloadStatus {
    reloads: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ConfigWatcher {
    /// How many times a changed file was applied.
    pub fn reloads(&self) -> u64 {
        self.status.reloads.load(Ordering::SeqCst)
    }

    /// The error of the last attempt, if it failed (e.g. `config.yaml:7: unknown field ...`).
    pub fn last_error(&self) -> Option<String> {
        self.status.last_error.lock().unwrap().clone()
    }
}

impl Drop for ConfigWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches `path` and applies it to `state` whenever it changes. Must be called inside a Tokio runtime.
///
/// ```no_run
/// # async fn f() -> anyhow::Result<()> {
/// use mock_chart_img::{AppState, Config, watch_config};
/// let config = Config::from_file("mock.yaml")?;
/// let state = AppState::new(&config)?;
/// let _watch = watch_config("mock.yaml", state.clone())?;
/// # Ok(()) }
/// ```
pub fn watch_config(path: impl AsRef<Path>, state: AppState) -> anyhow::Result<ConfigWatcher> {
    watch_config_with(path, state, |_| Ok(()))
}

/// Like [`watch_config`], with `overlay` applied to every reloaded file before it is used: the binary's flags and
/// the keys from the environment stay in force across reloads. An `Err` from it refuses the reload like a bad file.
pub fn watch_config_with(
    path: impl AsRef<Path>,
    state: AppState,
    overlay: impl Fn(&mut Config) -> Result<(), String> + Send + Sync + 'static,
) -> anyhow::Result<ConfigWatcher> {
    let path: PathBuf = std::path::absolute(path.as_ref())?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = path.file_name().map(|n| n.to_os_string());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if ev.kind.is_access() {
                return;
            }
            if ev.paths.iter().any(|p| p.file_name().map(|n| n.to_os_string()) == name) {
                let _ = tx.send(());
            }
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let status = Arc::new(ReloadStatus::default());
    let st = status.clone();
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // A save is often several events (truncate, write, rename): let them settle, then read once.
            tokio::time::sleep(Duration::from_millis(100)).await;
            while rx.try_recv().is_ok() {}
            let result = Config::from_file(&path)
                .map_err(|e| e.to_string())
                .and_then(|mut c| overlay(&mut c).map(|()| c))
                .and_then(|c| state.apply_config(&c).map_err(|e| e.to_string()));
            match result {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "config reloaded");
                    *st.last_error.lock().unwrap() = None;
                    st.reloads.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => {
                    tracing::error!(error = %e, "config reload refused; keeping the previous config");
                    *st.last_error.lock().unwrap() = Some(e);
                }
            }
        }
    });
    Ok(ConfigWatcher {
        _watcher: watcher,
        task,
        status,
    })
}
