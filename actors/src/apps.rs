//! The app directory: apps and API key hashes, cached in memory, written through storage.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use crate::app::App;
use crate::clock::Clock;
use crate::secrets::{hash_api_key, Digest32};
use crate::storage::{load_api_keys, load_apps, Snapshot, StorageError};

/// How often an unknown API key may trigger a reload (keys created by
/// `otpd apps create` while the daemon runs appear within this time), in the
/// runtime clock's monotonic time.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// Apps by id and API key hashes, mirrored from SQLite.
///
/// Lookups never see a gap: a reload inserts what storage holds before it removes
/// what storage no longer holds, so a valid key is present at every instant.
pub(crate) struct AppDirectory {
    apps: crate::FastDashMap<Uuid, Arc<App>>,
    /// key hash → (key id, app id)
    keys: crate::FastDashMap<Digest32, (Uuid, Uuid)>,
    /// Bumped by every change made in this process. A reload whose read began
    /// before such a change does not remove entries: its snapshot may predate them.
    generation: AtomicU64,
    /// Whose monotonic time [`REFRESH_EVERY`] is measured in.
    clock: Arc<dyn Clock>,
    /// The clock's monotonic time of the last reload a miss triggered.
    last_refresh: Mutex<Option<Duration>>,
}

impl AppDirectory {
    /// An empty directory whose miss-triggered reloads are spaced on `clock`.
    pub(crate) fn new(clock: Arc<dyn Clock>) -> AppDirectory {
        AppDirectory {
            apps: crate::FastDashMap::default(),
            keys: crate::FastDashMap::default(),
            generation: AtomicU64::new(0),
            clock,
            last_refresh: Mutex::new(None),
        }
    }

    /// Brings the cache to what storage holds: adds and updates first, then removes
    /// apps and keys that storage no longer has.
    pub(crate) async fn reload(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let started = self.generation.load(Ordering::Acquire);
        let (apps, keys) = snapshot
            .read(|conn| Ok((load_apps(conn)?, load_api_keys(conn)?)))
            .await?;
        self.apply(started, apps, keys);
        Ok(())
    }

    /// Applies a storage read that began at generation `started`.
    fn apply(&self, started: u64, apps: Vec<App>, keys: Vec<(Digest32, Uuid, Uuid)>) {
        let app_ids: HashSet<Uuid> = apps.iter().map(|a| a.app_id).collect();
        let hashes: HashSet<Digest32> = keys.iter().map(|k| k.0).collect();
        for app in apps {
            self.apps.insert(app.app_id, Arc::new(app));
        }
        for (hash, key_id, app_id) in keys {
            self.keys.insert(hash, (key_id, app_id));
        }
        if self.generation.load(Ordering::Acquire) != started {
            return;
        }
        self.keys.retain(|hash, _| hashes.contains(hash));
        self.apps.retain(|id, _| app_ids.contains(id));
    }

    /// The app an API key belongs to, reloading at most once per [`REFRESH_EVERY`]
    /// (one second) on a miss.
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
            let now = self.clock.monotonic();
            let mut last = self.last_refresh.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|t| now.saturating_sub(t) >= REFRESH_EVERY);
            if due {
                *last = Some(now);
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

    /// One app by id.
    pub(crate) fn app(&self, app_id: Uuid) -> Option<Arc<App>> {
        self.apps.get(&app_id).map(|a| a.clone())
    }

    /// Every app, in no particular order.
    pub(crate) fn all(&self) -> Vec<Arc<App>> {
        self.apps.iter().map(|a| a.clone()).collect()
    }

    /// The (key id, app id) a key hash belongs to.
    pub(crate) fn key(&self, hash: &Digest32) -> Option<(Uuid, Uuid)> {
        self.keys.get(hash).map(|e| *e.value())
    }

    /// The hash of the key `key_id` of app `app_id`.
    pub(crate) fn hash_of(&self, key_id: Uuid, app_id: Uuid) -> Option<Digest32> {
        self.keys
            .iter()
            .find(|e| *e.value() == (key_id, app_id))
            .map(|e| *e.key())
    }

    /// Records an app committed by this process.
    pub(crate) fn put_app(&self, app: Arc<App>) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.apps.insert(app.app_id, app);
    }

    /// Records an API key committed by this process.
    pub(crate) fn put_key(&self, hash: Digest32, key_id: Uuid, app_id: Uuid) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.keys.insert(hash, (key_id, app_id));
    }

    /// Forgets an API key deleted by this process.
    pub(crate) fn remove_key(&self, hash: &Digest32) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.keys.remove(hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::AppSettings;

    fn app(n: u32) -> App {
        App {
            app_id: Uuid::from_u128(n as u128 + 1),
            app_key: format!("app{n}"),
            name: format!("app {n}"),
            settings: AppSettings::default(),
            created_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    fn keys(count: u32, app_id: Uuid) -> Vec<(Digest32, Uuid, Uuid)> {
        (0..count)
            .map(|i| {
                (
                    hash_api_key(&format!("key-{i}")),
                    Uuid::from_u128(1_000 + i as u128),
                    app_id,
                )
            })
            .collect()
    }

    #[test]
    fn valid_keys_authenticate_while_reloads_run() {
        let dir = Arc::new(AppDirectory::new(Arc::new(crate::clock::SystemClock)));
        let a = app(0);
        let app_id = a.app_id;
        dir.apply(0, vec![a.clone()], keys(4_000, app_id));
        let hashes: Vec<Digest32> = keys(4_000, app_id).into_iter().map(|k| k.0).collect();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reloader = {
            let (dir, stop) = (dir.clone(), stop.clone());
            let a = a.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let started = dir.generation.load(Ordering::Acquire);
                    dir.apply(started, vec![a.clone()], keys(4_000, app_id));
                }
            })
        };
        let mut misses = 0;
        for round in 0..50 {
            for hash in hashes.iter().skip(round % 7).step_by(7) {
                if dir.lookup(hash).is_none() {
                    misses += 1;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        reloader.join().expect("reloader thread");
        assert_eq!(misses, 0, "valid keys missed during reloads");
    }

    #[test]
    fn reload_removes_deleted_apps_and_keys() {
        let dir = AppDirectory::new(Arc::new(crate::clock::SystemClock));
        let (a, b) = (app(0), app(1));
        let mut all = keys(2, a.app_id);
        all.extend(
            keys(1, b.app_id)
                .into_iter()
                .map(|(_, _, id)| (hash_api_key("b-key"), Uuid::from_u128(9), id)),
        );
        dir.apply(0, vec![a.clone(), b.clone()], all);
        assert!(dir.lookup(&hash_api_key("b-key")).is_some());

        dir.apply(0, vec![a.clone()], keys(1, a.app_id));
        assert!(dir.app(b.app_id).is_none(), "deleted app stays");
        assert!(dir.lookup(&hash_api_key("b-key")).is_none());
        assert!(
            dir.lookup(&hash_api_key("key-1")).is_none(),
            "deleted key stays"
        );
        assert!(dir.lookup(&hash_api_key("key-0")).is_some());
    }

    #[test]
    fn a_reload_read_before_a_local_change_does_not_undo_it() {
        let dir = AppDirectory::new(Arc::new(crate::clock::SystemClock));
        let a = app(0);
        dir.apply(0, vec![a.clone()], keys(1, a.app_id));
        let started = dir.generation.load(Ordering::Acquire);
        // A key committed by this process after the reload's read began.
        dir.put_key(hash_api_key("new"), Uuid::from_u128(77), a.app_id);
        dir.apply(started, vec![a.clone()], keys(1, a.app_id));
        assert!(dir.lookup(&hash_api_key("new")).is_some());
    }
}
