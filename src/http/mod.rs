//! The HTTP edge: what a scraper talks to. One room per file, in the order a
//! request meets them:
//!
//! - [`listen`]: the accept loop, the TLS handshake, HTTP/1.1 or HTTP/2.
//! - [`conn`]: the open connections: their cap (a new one evicts the
//!   longest-idle), the header-read and idle timeouts.
//! - [`guard`]: basic auth, the rate limit and the response headers the web
//!   config asks for.
//! - [`router`]: the routes and their handlers (`/metrics`, `/healthz`, `/`,
//!   `/stats/summary`, cluster mode's `/nodes/<node>/metrics`), all from the
//!   board's latest snapshot.
//! - [`negotiate`]: which text format and whether gzip, with one q-value
//!   parser for both headers.
//! - [`cache`]: the exposition, rendered and gzipped once per board version,
//!   and then only the collectors whose parts of the board changed;
//!   [`gzip`] joins a gzip body from parts deflated one at a time.
//! - [`web_config`]: `--web.config.file` parsed and validated, in
//!   exporter-toolkit's format; [`tls`] its TLS section as rustls builds it.
//! - [`reload`]: the web config re-read on change and SIGHUP, never weakened,
//!   its status published on the board.
//!
//! The text formats themselves are [`crate::exposition`]'s: collectors write
//! into them, and `kubedf metrics` prints them with no HTTP at all.

pub mod cache;
pub mod conn;
pub mod guard;
pub mod gzip;
pub mod listen;
pub mod negotiate;
pub mod reload;
pub mod router;
pub mod tls;
pub mod web_config;

pub use cache::{ExpositionCache, NodeCache};
pub use conn::{DEFAULT_MAX_CONNECTIONS, HEADER_READ_TIMEOUT, IDLE_TIMEOUT};
pub use listen::{ServeOptions, bind, serve};
pub use reload::reload_web_config;
pub use router::{AppState, NODES_PREFIX, RESERVED_PATHS, check_telemetry_path, router};
pub use web_config::{WebConfig, WebConfigHandle};
