//! `/admin/v1` (SPEC section 2): apps and their API keys, behind the admin token.
//!
//! Every handler takes [`AdminAuth`], so the API answers 404 when no admin token is
//! configured and 401 when the bearer token is wrong. Admin bodies refuse unknown
//! fields (a typo such as `"setings"` must not silently create an app with
//! defaults); a bad setting is 422 `validation_failed` with the runtime's message.

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use otpd_actors::{App, AppSettings, Error, NewApp};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{json_object, path_uuid, AdminAuth};
use super::reply::Reply;
use super::ApiState;

/// Body of `POST /admin/v1/apps`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAppBody {
    name: String,
    app_key: Option<String>,
    settings: Option<serde_json::Value>,
}

/// Body of `PATCH /admin/v1/apps/{app_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchAppBody {
    name: Option<String>,
    settings: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct AppList<'a> {
    items: Vec<&'a App>,
}

/// Settings given as JSON: an object of known settings, each of the right type.
fn settings_from(value: Option<serde_json::Value>) -> Result<AppSettings, ApiError> {
    match value {
        None => Ok(AppSettings::default()),
        Some(v @ serde_json::Value::Object(_)) => serde_json::from_value(v)
            .map_err(|e| Error::Validation(format!("settings: {e}")).into()),
        Some(_) => Err(Error::Validation("settings must be an object".into()).into()),
    }
}

/// `POST /admin/v1/apps` → 201 with the app and its first API key (shown once).
pub async fn create_app(
    state: web::Data<ApiState>,
    _: AdminAuth,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let (parsed, _) = json_object::<CreateAppBody>(body, state.body_limit)?;
    let settings = settings_from(parsed.settings)?;
    let created = state
        .runtime
        .create_app(NewApp {
            name: parsed.name,
            app_key: parsed.app_key,
            app_id: None,
            settings,
            api_key: None,
        })
        .await?;
    Ok(Reply::created(&created)?.into_response())
}

/// `GET /admin/v1/apps` → `{items: [...]}`, no secrets.
pub async fn list_apps(state: web::Data<ApiState>, _: AdminAuth) -> Result<HttpResponse, ApiError> {
    let apps = state.runtime.apps();
    let items = apps.iter().map(|a| a.as_ref()).collect();
    Ok(Reply::ok(&AppList { items })?.into_response())
}

/// `GET /admin/v1/apps/{app_id}`.
pub async fn get_app(
    state: web::Data<ApiState>,
    _: AdminAuth,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let app_id = path_uuid(&req, "app_id", "app")?;
    let app = state
        .runtime
        .app(app_id)
        .ok_or_else(|| ApiError::not_found("no such app"))?;
    Ok(Reply::ok(app.as_ref())?.into_response())
}

/// `PATCH /admin/v1/apps/{app_id}` `{"settings"?, "name"?}` → the app.
pub async fn patch_app(
    state: web::Data<ApiState>,
    _: AdminAuth,
    req: HttpRequest,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let app_id = path_uuid(&req, "app_id", "app")?;
    let (parsed, _) = json_object::<PatchAppBody>(body, state.body_limit)?;
    let app = state
        .runtime
        .patch_app(app_id, parsed.name, parsed.settings.as_ref())
        .await?;
    Ok(Reply::ok(app.as_ref())?.into_response())
}

/// `POST /admin/v1/apps/{app_id}/api-keys` → 201 `{key_id, api_key}` (shown once).
pub async fn create_api_key(
    state: web::Data<ApiState>,
    _: AdminAuth,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let app_id = path_uuid(&req, "app_id", "app")?;
    let created = state.runtime.create_api_key(app_id).await?;
    Ok(Reply::created(&created)?.into_response())
}

/// `DELETE /admin/v1/apps/{app_id}/api-keys/{key_id}` → 204.
pub async fn delete_api_key(
    state: web::Data<ApiState>,
    _: AdminAuth,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let app_id = path_uuid(&req, "app_id", "app")?;
    let key_id = path_uuid(&req, "key_id", "API key")?;
    state.runtime.delete_api_key(app_id, key_id).await?;
    Ok(HttpResponse::NoContent().finish())
}
