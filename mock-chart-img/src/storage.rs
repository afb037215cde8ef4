//! The images handed out by the `/storage` routes, kept on disk like the real service's object store: every call a
//! new object under `<yyyymmdd>/tradingview/<kind>/<uuid>.<ext>` (the date is the expiry date), downloadable until
//! it expires, within a byte budget (oldest evicted first), and found again after a restart.
//!
//! Each object is two files: the image and `<image>.meta.json` (`{"expire","created","contentType"}`). The index in
//! memory is rebuilt from the metadata files at start; only indexed paths are ever read, so a request path can never
//! reach another file.

use std::{
    collections::{BTreeMap, HashMap},
    io,
    path::{Path, PathBuf},
    sync::Mutex,
};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    expire: DateTime<Utc>,
    created: DateTime<Utc>,
    content_type: String,
    #[serde(skip)]
    size: u64,
    #[serde(skip)]
    seq: u64,
}

#[derive(Default)]
struct Index {
    by_path: HashMap<String, Meta>,
    /// Oldest first: (created, sequence) → path.
    order: BTreeMap<(DateTime<Utc>, u64), String>,
    bytes: u64,
    seq: u64,
}

pub(crate) struct Storage {
    dir: PathBuf,
    /// Holds a temporary directory alive when no `storage_dir` was configured.
    _temp: Option<tempfile::TempDir>,
    max_bytes: u64,
    max_objects: usize,
    index: Mutex<Index>,
}

impl Storage {
    /// Opens (or creates) the store in `dir`, or in a fresh temporary directory, and indexes what is already there.
    pub fn open(dir: Option<&Path>, max_bytes: u64, max_objects: usize) -> anyhow::Result<Storage> {
        let (dir, temp) = match dir {
            Some(d) => (d.to_path_buf(), None),
            None => {
                let t = tempfile::Builder::new().prefix("mock-chart-img-storage-").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("storage_dir {}: {e}", dir.display()))?;
        let s = Storage {
            dir,
            _temp: temp,
            max_bytes,
            max_objects,
            index: Mutex::new(Index::default()),
        };
        s.rescan()?;
        Ok(s)
    }

    fn rescan(&self) -> io::Result<()> {
        let mut metas = Vec::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d)? {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Some(image) = path.to_str().and_then(|p| p.strip_suffix(".meta.json")) {
                    let image = PathBuf::from(image);
                    let (Ok(text), Ok(size)) = (
                        std::fs::read_to_string(&path),
                        std::fs::metadata(&image).map(|m| m.len()),
                    ) else {
                        continue;
                    };
                    if let (Ok(mut meta), Ok(rel)) =
                        (serde_json::from_str::<Meta>(&text), image.strip_prefix(&self.dir))
                    {
                        meta.size = size;
                        metas.push((rel.to_string_lossy().replace('\\', "/"), meta));
                    }
                }
            }
        }
        metas.sort_by(|a, b| a.1.created.cmp(&b.1.created).then_with(|| a.0.cmp(&b.0)));
        let mut ix = self.index.lock().unwrap();
        for (rel, mut meta) in metas {
            ix.seq += 1;
            meta.seq = ix.seq;
            ix.bytes += meta.size;
            ix.order.insert((meta.created, meta.seq), rel.clone());
            ix.by_path.insert(rel, meta);
        }
        drop(ix);
        self.evict();
        Ok(())
    }

    /// Stores a new object; evicts the oldest past the budget.
    pub fn put(
        &self,
        rel: &str,
        bytes: &Bytes,
        content_type: &str,
        expire: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> io::Result<()> {
        let path = self.dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let meta = Meta {
            expire,
            created: now,
            content_type: content_type.to_owned(),
            size: bytes.len() as u64,
            seq: 0,
        };
        // Image first, metadata last: a crash in between leaves an image without metadata, which is never indexed.
        write_atomic(&path, bytes)?;
        write_atomic(
            &meta_path(&path),
            serde_json::to_string(&meta).unwrap_or_default().as_bytes(),
        )?;
        let mut ix = self.index.lock().unwrap();
        ix.seq += 1;
        let mut meta = meta;
        meta.seq = ix.seq;
        ix.bytes += meta.size;
        ix.order.insert((meta.created, meta.seq), rel.to_owned());
        ix.by_path.insert(rel.to_owned(), meta);
        drop(ix);
        self.evict();
        Ok(())
    }

    /// The object at `rel` while it has not expired.
    pub fn get(&self, rel: &str, now: DateTime<Utc>) -> Option<(String, Bytes)> {
        let meta = self.index.lock().unwrap().by_path.get(rel).cloned()?;
        if meta.expire <= now {
            self.remove(rel);
            return None;
        }
        let bytes = std::fs::read(self.dir.join(rel)).ok()?;
        Some((meta.content_type, Bytes::from(bytes)))
    }

    /// Objects and bytes held.
    pub fn usage(&self) -> (usize, u64) {
        let ix = self.index.lock().unwrap();
        (ix.by_path.len(), ix.bytes)
    }

    fn remove(&self, rel: &str) {
        let mut ix = self.index.lock().unwrap();
        if let Some(meta) = ix.by_path.remove(rel) {
            ix.order.remove(&(meta.created, meta.seq));
            ix.bytes -= meta.size;
            let path = self.dir.join(rel);
            let _ = std::fs::remove_file(meta_path(&path));
            let _ = std::fs::remove_file(path);
        }
    }

    fn evict(&self) {
        loop {
            let oldest = {
                let ix = self.index.lock().unwrap();
                if ix.bytes <= self.max_bytes && ix.by_path.len() <= self.max_objects {
                    return;
                }
                ix.order.values().next().cloned()
            };
            match oldest {
                Some(rel) => self.remove(&rel),
                None => return,
            }
        }
    }
}

fn meta_path(image: &Path) -> PathBuf {
    let mut p = image.as_os_str().to_owned();
    p.push(".meta.json");
    PathBuf::from(p)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn oldest_objects_go_first_past_the_byte_budget_and_the_index_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let now = at("2026-11-30T10:00:00Z");
        let exp = at("2026-12-14T10:00:00Z");
        let s = Storage::open(Some(dir.path()), 25, 100).unwrap();
        for (i, rel) in [
            "20261214/tradingview/advanced-chart/a.png",
            "20261214/tradingview/advanced-chart/b.png",
            "20261214/tradingview/advanced-chart/c.png",
        ]
        .iter()
        .enumerate()
        {
            s.put(
                rel,
                &Bytes::from(vec![i as u8; 10]),
                "image/png",
                exp,
                now + chrono::Duration::seconds(i as i64),
            )
            .unwrap();
        }
        assert!(
            s.get("20261214/tradingview/advanced-chart/a.png", now).is_none(),
            "evicted: 30 bytes > 25"
        );
        assert_eq!(s.usage(), (2, 20));
        drop(s);
        let again = Storage::open(Some(dir.path()), 25, 100).unwrap();
        let (ct, b) = again.get("20261214/tradingview/advanced-chart/c.png", now).unwrap();
        assert_eq!((ct.as_str(), b.len()), ("image/png", 10));
        assert!(
            again.get("20261214/tradingview/advanced-chart/b.png", exp).is_none(),
            "expired"
        );
        assert_eq!(again.usage(), (1, 10));
    }
}
