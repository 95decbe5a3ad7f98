//! The app directory: apps and API key hashes, cached in memory, written through storage.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use uuid::Uuid;

use crate::app::App;
use crate::secrets::{hash_api_key, Digest32};
use crate::storage::{load_api_keys, load_apps, Snapshot, StorageError};

/// How often an unknown API key may trigger a reload (keys created by
/// `otpd apps create` while the daemon runs appear within this time).
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// Apps by id and API key hashes, mirrored from SQLite.
pub(crate) struct AppDirectory {
    pub(crate) apps: DashMap<Uuid, Arc<App>>,
    /// key hash → (key id, app id)
    pub(crate) keys: DashMap<Digest32, (Uuid, Uuid)>,
    last_refresh: Mutex<Option<Instant>>,
}

impl AppDirectory {
    pub(crate) fn new() -> AppDirectory {
        AppDirectory {
            apps: DashMap::new(),
            keys: DashMap::new(),
            last_refresh: Mutex::new(None),
        }
    }

    /// Replaces the cache with what storage holds.
    pub(crate) async fn reload(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let (apps, keys) = snapshot
            .read(|conn| Ok((load_apps(conn)?, load_api_keys(conn)?)))
            .await?;
        for app in apps {
            self.apps.insert(app.app_id, Arc::new(app));
        }
        self.keys.retain(|_, _| false);
        for (hash, key_id, app_id) in keys {
            self.keys.insert(hash, (key_id, app_id));
        }
        Ok(())
    }

    /// The app an API key belongs to, reloading at most once per second on a miss.
    pub(crate) async fn authenticate(
        &self,
        snapshot: &Snapshot,
        api_key: &str,
    ) -> Option<Arc<App>> {
        let hash = hash_api_key(api_key);
        if let Some(app) = self.lookup(&hash) {
            return Some(app);
        }
        let due = {
            let mut last = self.last_refresh.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= REFRESH_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            if let Err(e) = self.reload(snapshot).await {
                tracing::warn!(error = %e, "reloading apps failed");
            }
            return self.lookup(&hash);
        }
        None
    }

    fn lookup(&self, hash: &Digest32) -> Option<Arc<App>> {
        let app_id = self.keys.get(hash)?.1;
        self.apps.get(&app_id).map(|a| a.clone())
    }

    /// The app with this public key.
    pub(crate) fn by_app_key(&self, app_key: &str) -> Option<Arc<App>> {
        self.apps
            .iter()
            .find(|a| a.app_key == app_key)
            .map(|a| a.clone())
    }
}
