//! Who is asking: the bearer key names a project (`tenancy`), and every handler sees the server
//! through that project's eyes ([`Scoped`]): its store view, runs, vector stores and sandbox
//! session keys. Another project's objects are simply not there (a 404 with OpenAI's "No …
//! found" body, never a 403 that would confirm they exist).
//!
//! Past a project's limits (`tenancy::Limits`) a request gets a 429 with OpenAI's
//! `rate_limit_exceeded` body.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiConfig, ApiError, ApiResult, AppState};
use crate::tenancy::Project;

/// The server as the caller's project sees it: a handler's state. (A handler that took
/// `State<AppState>` would see every project: only the unauthenticated routes do.)
pub struct Scoped(pub AppState);

impl FromRequestParts<AppState> for Scoped {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Scoped> {
        match parts.extensions.get::<Project>() {
            Some(p) => Ok(Scoped(state.for_project(p.clone()))),
            // Only routes behind [`auth`] take `Scoped`; reaching here is a routing bug, and
            // no project's objects may be served for it.
            None => Err(ApiError::internal(
                "a project-scoped route was reached unauthenticated",
            )),
        }
    }
}

impl AppState {
    /// This state as `project` sees it.
    pub fn for_project(&self, project: Project) -> AppState {
        AppState {
            store: self.store.for_project(&project.id),
            runs: self.runs.as_ref().map(|r| r.for_project(project.clone())),
            vectors: self.vectors.as_ref().map(|v| v.for_project(&project.id)),
            project,
            ..self.clone()
        }
    }

    /// The sandbox's key for this project's session `id`, which must be a session id (letters,
    /// digits, `-`, `_`: never another project's key).
    pub fn session_key(&self, id: &str) -> ApiResult<String> {
        if !crate::sandbox::valid_session_id(id) {
            return Err(crate::sandbox::SandboxError::InvalidSessionId(id.to_string()).into());
        }
        Ok(self.project.session_key(id))
    }

    /// Whether `bytes` more Files stay within the project's storage limit.
    pub async fn storage_fits(&self, bytes: u64) -> ApiResult<bool> {
        if self.project.limits.max_storage_bytes.is_none() {
            return Ok(true);
        }
        let used = super::blocking(self, |s| s.stored_bytes()).await?;
        Ok(self.project.storage_fits(used, bytes))
    }

    /// Admit session `key` (hold the answer until the call is over): a 429 if it has no live
    /// interpreter and the project already has as many live (or admitted) sessions as it may.
    pub async fn admit_session(
        &self,
        sessions: &crate::sandbox::Sessions,
        key: &str,
    ) -> ApiResult<crate::tenancy::Admitted> {
        let admissions = self.config.keys.admissions();
        admissions
            .admit_with(&self.project, key, || sessions.live_keys())
            .await
            .map_err(|max| {
                over_limit(format!(
                    "Session limit reached for project {}: at most {max} code-interpreter \
                     sessions may be live at once. End one (DELETE \
                     /v1/code_interpreter/sessions/{{id}}) or wait for an idle one to be put \
                     away, and try again.",
                    self.project.id
                ))
            })
    }

    /// A 429 unless `bytes` more Files stay within the project's storage limit.
    pub async fn check_storage(&self, bytes: u64) -> ApiResult<()> {
        if self.storage_fits(bytes).await? {
            return Ok(());
        }
        Err(storage_full(
            self.project.limits.max_storage_bytes.unwrap_or(0),
        ))
    }
}

/// The 429 of a File that would take its project past `max` stored bytes.
pub fn storage_full(max: u64) -> ApiError {
    over_limit(format!(
        "Storage limit reached: this project's Files may take at most {max} bytes. Delete some \
         Files and try again."
    ))
}

/// A 429: the project is at one of its limits.
pub fn over_limit(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, message).code("rate_limit_exceeded")
}

/// The key a request presents in `Authorization: Bearer <key>`, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The caller's project: the default one when no keys are configured; `None` for a missing
/// or unknown key.
pub fn caller(config: &ApiConfig, headers: &HeaderMap) -> Option<Project> {
    if config.keys.is_open() {
        return Some(Project::default_project());
    }
    bearer(headers).and_then(|k| config.keys.project_of(k))
}

/// `Authorization: Bearer <key>`: a key of some project, or a 401; the project rides on the
/// request for [`Scoped`].
pub async fn auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if let Some(p) = caller(&state.config, req.headers()) {
        req.extensions_mut().insert(p);
        return next.run(req).await;
    }
    match bearer(req.headers()) {
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key. You need to provide your API key in an Authorization \
             header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )
        .into_response(),
        Some(k) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("Incorrect API key provided: {}.", redact(k)),
        )
        .code("invalid_api_key")
        .into_response(),
    }
}

/// Show only the ends of a key, as OpenAI does.
fn redact(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_redacted_in_errors() {
        assert_eq!(redact("sk-abcdefghijkl"), "sk-********ijkl");
        assert_eq!(redact("short"), "*****");
    }
}
