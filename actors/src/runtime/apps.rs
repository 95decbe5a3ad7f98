//! App administration on the runtime: apps, settings and API keys.

use std::sync::Arc;

use uuid::Uuid;

use super::Runtime;
use crate::app::{validate_app_key, App, CreatedApiKey, CreatedApp, NewApp};
use crate::error::Error;
use crate::secrets::{generate_api_key, hash_api_key, random_hex, Digest32};
use crate::storage::{self, Change, StorageError};

impl Runtime {
    /// The app an API key belongs to (401 otherwise).
    pub async fn authenticate(&self, api_key: &str) -> Result<Arc<App>, Error> {
        if api_key.is_empty() || api_key.len() > 512 {
            return Err(Error::Unauthorized);
        }
        self.inner
            .apps
            .authenticate(&self.inner.shared.snapshot, api_key)
            .await
            .ok_or(Error::Unauthorized)
    }

    /// Every app (no secrets).
    pub fn apps(&self) -> Vec<Arc<App>> {
        let mut apps: Vec<_> = self.inner.apps.all();
        apps.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then(a.app_key.cmp(&b.app_key))
        });
        apps
    }

    /// One app by id.
    pub fn app(&self, app_id: Uuid) -> Option<Arc<App>> {
        self.inner.apps.app(app_id)
    }

    /// Creates an app with one API key (shown once).
    pub async fn create_app(&self, new: NewApp) -> Result<CreatedApp, Error> {
        self.check_open()?;
        let name = new.name.trim().to_string();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Error::Validation("name must be 1–100 characters".into()));
        }
        let app_key = new
            .app_key
            .unwrap_or_else(|| format!("app_{}", random_hex(6)));
        validate_app_key(&app_key).map_err(Error::Validation)?;
        let settings = new.settings.validated().map_err(Error::Validation)?;
        if self.inner.apps.by_app_key(&app_key).is_some() {
            return Err(Error::Conflict(format!(
                "an app with app_key {app_key:?} already exists"
            )));
        }
        let api_key = new.api_key.unwrap_or_else(generate_api_key);
        check_api_key(&api_key)?;
        let app = App {
            app_id: new.app_id.unwrap_or_else(Uuid::new_v4),
            app_key,
            name,
            settings,
            created_at: self.inner.shared.clock.now(),
        };
        let key_id = Uuid::new_v4();
        let hash = hash_api_key(&api_key);
        if self.inner.apps.key(&hash).is_some() {
            return Err(Error::Conflict("that API key is already in use".into()));
        }
        self.write_app_changes(vec![
            Change::App(app.clone()),
            Change::ApiKey {
                key_id,
                app_id: app.app_id,
                key_hash: hash,
                created_at: app.created_at,
            },
        ])
        .await?;
        self.inner.apps.put_app(Arc::new(app.clone()));
        self.inner.apps.put_key(hash, key_id, app.app_id);
        Ok(CreatedApp {
            app,
            key_id,
            api_key,
        })
    }

    /// Creates or updates an app from a config `[[apps]]` entry (idempotent by `app_key`).
    pub async fn upsert_app(&self, new: NewApp) -> Result<Arc<App>, Error> {
        let app_key = new
            .app_key
            .clone()
            .ok_or_else(|| Error::Validation("app_key is required".into()))?;
        let Some(existing) = self.inner.apps.by_app_key(&app_key) else {
            return Ok(Arc::new(self.create_app(new).await?.app));
        };
        if new.app_id.is_some_and(|id| id != existing.app_id) {
            return Err(Error::Conflict(format!(
                "app_key {app_key:?} belongs to app {}",
                existing.app_id
            )));
        }
        let settings = new.settings.validated().map_err(Error::Validation)?;
        let app = App {
            name: new.name,
            settings,
            ..(*existing).clone()
        };
        let mut changes = vec![Change::App(app.clone())];
        let mut added = None;
        if let Some(api_key) = &new.api_key {
            check_api_key(api_key)?;
            let hash = hash_api_key(api_key);
            match self.inner.apps.key(&hash) {
                Some((_, owner)) if owner != app.app_id => {
                    return Err(Error::Conflict(
                        "that API key belongs to another app".into(),
                    ))
                }
                Some(_) => {}
                None => {
                    let key_id = Uuid::new_v4();
                    changes.push(Change::ApiKey {
                        key_id,
                        app_id: app.app_id,
                        key_hash: hash,
                        created_at: self.inner.shared.clock.now(),
                    });
                    added = Some((hash, key_id));
                }
            }
        }
        self.write_app_changes(changes).await?;
        let app = Arc::new(app);
        self.inner.apps.put_app(app.clone());
        if let Some((hash, key_id)) = added {
            self.inner.apps.put_key(hash, key_id, app.app_id);
        }
        Ok(app)
    }

    /// Changes an app's settings (PATCH semantics: only the keys given) and/or name.
    pub async fn patch_app(
        &self,
        app_id: Uuid,
        name: Option<String>,
        settings: Option<&serde_json::Value>,
    ) -> Result<Arc<App>, Error> {
        self.check_open()?;
        let existing = self
            .app(app_id)
            .ok_or_else(|| Error::NotFound("no such app".into()))?;
        let mut app = (*existing).clone();
        if let Some(patch) = settings {
            app.settings = existing
                .settings
                .patched(patch)
                .map_err(Error::Validation)?;
        }
        if let Some(name) = name {
            let name = name.trim().to_string();
            if name.is_empty() || name.chars().count() > 100 {
                return Err(Error::Validation("name must be 1–100 characters".into()));
            }
            app.name = name;
        }
        self.write_app_changes(vec![Change::App(app.clone())])
            .await?;
        let app = Arc::new(app);
        self.inner.apps.put_app(app.clone());
        Ok(app)
    }

    /// Adds an API key to an app (shown once).
    pub async fn create_api_key(&self, app_id: Uuid) -> Result<CreatedApiKey, Error> {
        self.check_open()?;
        if self.app(app_id).is_none() {
            return Err(Error::NotFound("no such app".into()));
        }
        let api_key = generate_api_key();
        let key_id = Uuid::new_v4();
        let hash = hash_api_key(&api_key);
        self.write_app_changes(vec![Change::ApiKey {
            key_id,
            app_id,
            key_hash: hash,
            created_at: self.inner.shared.clock.now(),
        }])
        .await?;
        self.inner.apps.put_key(hash, key_id, app_id);
        Ok(CreatedApiKey { key_id, api_key })
    }

    /// Removes an API key; requests with it are refused from then on.
    pub async fn delete_api_key(&self, app_id: Uuid, key_id: Uuid) -> Result<(), Error> {
        self.check_open()?;
        let hash: Option<Digest32> = self.inner.apps.hash_of(key_id, app_id);
        let exists = match hash {
            Some(_) => true,
            None => {
                self.inner
                    .shared
                    .snapshot
                    .read(move |c| storage::api_key_exists(c, &app_id, &key_id))
                    .await?
            }
        };
        if !exists {
            return Err(Error::NotFound("no such API key".into()));
        }
        self.write_app_changes(vec![Change::DeleteApiKey { app_id, key_id }])
            .await?;
        if let Some(hash) = hash {
            self.inner.apps.remove_key(&hash);
        }
        Ok(())
    }

    async fn write_app_changes(&self, changes: Vec<Change>) -> Result<(), Error> {
        match self.inner.shared.snapshot.write(changes).committed().await {
            Ok(()) => Ok(()),
            Err(StorageError::Conflict(msg)) => Err(Error::Conflict(msg)),
            Err(e) => Err(Error::Storage(e)),
        }
    }
}

fn check_api_key(key: &str) -> Result<(), Error> {
    if key.len() < 16 || key.len() > 256 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::Validation(
            "api_key must be 16–256 printable characters without spaces".into(),
        ));
    }
    Ok(())
}
