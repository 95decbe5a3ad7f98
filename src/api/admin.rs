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
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, ErrorEnvelope};
use super::extract::{json_object, path_uuid, AdminAuth};
use super::reply::Reply;
use super::routes::Endpoint;
use super::schemas::{self, CreatedApiKey, CreatedApp};
use super::ApiState;

/// Body of `POST /admin/v1/apps`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AppCreate)]
struct CreateAppBody {
    /// Human name.
    name: String,
    /// 3–64 of `[A-Za-z0-9_-]` (default: generated).
    app_key: Option<String>,
    /// OTP settings; those left out keep their defaults.
    #[schema(value_type = Option<schemas::AppSettings>)]
    settings: Option<serde_json::Value>,
}

/// Body of `PATCH /admin/v1/apps/{app_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AppPatch)]
struct PatchAppBody {
    /// New name.
    name: Option<String>,
    /// Settings to change; the others stay.
    #[schema(value_type = Option<schemas::AppSettings>)]
    settings: Option<serde_json::Value>,
}

/// The answer of `GET /admin/v1/apps`.
#[derive(Serialize, ToSchema)]
struct AppList<'a> {
    /// The apps (no secrets).
    #[schema(value_type = Vec<schemas::App>)]
    items: Vec<&'a App>,
}

/// The `{app_id}` of an admin route.
#[derive(IntoParams)]
#[into_params(names("app_id"), parameter_in = Path)]
#[allow(dead_code)]
struct AppId(Uuid);

/// The `{key_id}` of an API key route.
#[derive(IntoParams)]
#[into_params(names("key_id"), parameter_in = Path)]
#[allow(dead_code)]
struct KeyId(Uuid);

/// The routes of this module, in the `/admin/v1` scope.
pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new("/apps")
            .get(|r| r.to(list_apps))
            .post(|r| r.to(create_app)),
        Endpoint::new("/apps/{app_id}")
            .get(|r| r.to(get_app))
            .patch(|r| r.to(patch_app)),
        Endpoint::new("/apps/{app_id}/api-keys").post(|r| r.to(create_api_key)),
        Endpoint::new("/apps/{app_id}/api-keys/{key_id}").delete(|r| r.to(delete_api_key)),
    ]
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
#[utoipa::path(
    post,
    path = "/admin/v1/apps",
    tag = "admin",
    summary = "Create an app (API key shown once)",
    security(("adminToken" = [])),
    request_body = CreateAppBody,
    responses(
        (status = 201, description = "Created", body = CreatedApp),
        (status = 409, description = "app_key taken", body = ErrorEnvelope),
        (status = 422, description = "validation_failed", body = ErrorEnvelope),
    )
)]
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
#[utoipa::path(
    get,
    path = "/admin/v1/apps",
    tag = "admin",
    summary = "List apps (no secrets)",
    security(("adminToken" = [])),
    responses(
        (status = 200, description = "Apps", body = AppList),
    )
)]
pub async fn list_apps(state: web::Data<ApiState>, _: AdminAuth) -> Result<HttpResponse, ApiError> {
    let apps = state.runtime.apps();
    let items = apps.iter().map(|a| a.as_ref()).collect();
    Ok(Reply::ok(&AppList { items })?.into_response())
}

/// `GET /admin/v1/apps/{app_id}`.
#[utoipa::path(
    get,
    path = "/admin/v1/apps/{app_id}",
    tag = "admin",
    summary = "One app",
    security(("adminToken" = [])),
    params(AppId),
    responses(
        (status = 200, description = "The app", body = schemas::App),
        (status = 404, description = "No such app", body = ErrorEnvelope),
    )
)]
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
#[utoipa::path(
    patch,
    path = "/admin/v1/apps/{app_id}",
    tag = "admin",
    summary = "Change settings and/or name",
    security(("adminToken" = [])),
    params(AppId),
    request_body = PatchAppBody,
    responses(
        (status = 200, description = "Updated", body = schemas::App),
        (status = 404, description = "No such app", body = ErrorEnvelope),
        (status = 422, description = "validation_failed", body = ErrorEnvelope),
    )
)]
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
#[utoipa::path(
    post,
    path = "/admin/v1/apps/{app_id}/api-keys",
    tag = "admin",
    summary = "Add an API key (shown once)",
    security(("adminToken" = [])),
    params(AppId),
    responses(
        (status = 201, description = "Created", body = CreatedApiKey),
        (status = 404, description = "No such app", body = ErrorEnvelope),
    )
)]
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
#[utoipa::path(
    delete,
    path = "/admin/v1/apps/{app_id}/api-keys/{key_id}",
    tag = "admin",
    summary = "Revoke an API key",
    security(("adminToken" = [])),
    params(AppId, KeyId),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such key", body = ErrorEnvelope),
    )
)]
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
