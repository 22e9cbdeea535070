//! What the web config asks of each request before it is answered: basic
//! auth (bcrypt, off the async threads) on every path but `/healthz`, and on
//! every path the rate limit (429) and the configured response headers.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use super::router::AppState;
use super::web_config::Auth;

fn basic_credentials(request: &Request) -> Option<(String, String)> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

pub(super) async fn basic_auth(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let web = state.web.load_full();
    if !web.requires_auth() {
        return next.run(request).await;
    }
    let credentials = basic_credentials(&request);
    // bcrypt is slow by design: keep it off the async threads.
    let verdict = tokio::task::spawn_blocking(move || {
        web.check(credentials.as_ref().map(|(u, p)| (u.as_str(), p.as_str())))
    })
    .await
    .unwrap_or(Auth::Denied);
    match verdict {
        Auth::Allowed | Auth::NotRequired => next.run(request).await,
        Auth::Denied => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"kubedf\"")],
            "Unauthorized\n",
        )
            .into_response(),
    }
}

/// What the web config asks of every response, on every path: the rate
/// limit first (429, as exporter-toolkit), then its headers.
pub(super) async fn web_policy(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(limit) = &state.rate_limit
        && !limit.allow()
    {
        return (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n").into_response();
    }
    let web = state.web.load_full();
    let mut response = next.run(request).await;
    for (name, value) in &web.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

/// A token bucket as Go's `rate.NewLimiter(rate.Every(interval), burst)`:
/// one token per interval, at most `burst`, full at start; a request
/// without a token gets 429. One bucket for the whole server, as in
/// exporter-toolkit.
#[derive(Debug)]
pub struct RateLimit {
    pub(super) interval: Duration,
    burst: u64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    pub fn new(interval: Duration, burst: u64) -> RateLimit {
        RateLimit {
            interval,
            burst,
            state: Mutex::new((burst as f64, Instant::now())),
        }
    }

    /// Takes a token if there is one.
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    pub(crate) fn allow_at(&self, now: Instant) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, last) = &mut *state;
        let elapsed = now.saturating_duration_since(*last);
        *last = now.max(*last);
        let refill = elapsed.as_secs_f64() / self.interval.as_secs_f64();
        *tokens = (*tokens + refill).min(self.burst as f64);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
