//! Reloading `--web.config.file` without a restart: when it or a file it
//! names changes, and on SIGHUP. A bad file, or one that would turn TLS off
//! (or on) or drop basic auth, is logged and counted, and the config in
//! force stays: a half-written or truncated file never weakens what is
//! served. How the loads went is published on the board
//! ([`WebConfigStatus`]), so the exposition shows it with no cache of its own
//! to invalidate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{error, info, warn};

use super::web_config::{WebConfig, WebConfigHandle};
use crate::model::WebConfigStatus;
use crate::model::snapshot::SnapshotHandle;

/// How often `--web.config.file` is checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(2);

/// Publishes the web config loaded at start on `board` (now, so that the
/// first scrape shows it), and returns the loop that reloads `path` into
/// `handle` until `stop`.
pub fn reload_web_config(
    path: PathBuf,
    handle: WebConfigHandle,
    board: SnapshotHandle,
    stop: tokio::sync::watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + 'static {
    let status = WebConfigStatus::loaded(SystemTime::now());
    board.publish_web_config(status);
    reload_loop(path, handle, board, status, stop)
}

async fn reload_loop(
    path: PathBuf,
    handle: WebConfigHandle,
    board: SnapshotHandle,
    mut status: WebConfigStatus,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP; the web config reloads only when its files change");
            None
        }
    };
    let mut seen = fingerprint(&path);
    loop {
        let forced = tokio::select! {
            _ = tokio::time::sleep(RELOAD_POLL) => false,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            _ = stop.changed() => return,
        };
        let current = fingerprint(&path);
        if !forced && current == seen {
            continue;
        }
        seen = current;
        status = reload(&path, &handle, status).await;
        board.publish_web_config(status);
    }
}

/// Reads `path` again (off the async threads) and puts it in force unless
/// it is invalid or a downgrade; returns the status after this attempt.
async fn reload(path: &Path, handle: &WebConfigHandle, status: WebConfigStatus) -> WebConfigStatus {
    let load = {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || WebConfig::load(&path)).await
    };
    let outcome = match load {
        Ok(Ok(next)) => apply_reload(handle, next),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match outcome {
        Ok(()) => {
            info!(file = %path.display(), "web config reloaded");
            status.succeeded(SystemTime::now())
        }
        Err(e) => {
            error!(file = %path.display(), error = %e, "web config not reloaded; the previous one stays in force");
            status.failed()
        }
    }
}

/// Puts `next` in force unless it would weaken the one in force. What
/// exporter-toolkit fixes at start (http2, rate_limit) stays as it was.
fn apply_reload(handle: &WebConfigHandle, mut next: WebConfig) -> Result<(), String> {
    let current = handle.load_full();
    if let Some(why) = current.downgrade(&next) {
        return Err(format!("refused: {why}"));
    }
    if next.http2 != current.http2 {
        warn!("web config: http_server_config.http2 takes effect on restart only");
        next.http2 = current.http2;
        if let (Some(tls), Some(old)) = (next.tls.as_mut(), current.tls.as_ref())
            && let Some(tls) = Arc::get_mut(tls)
        {
            tls.alpn_protocols = old.alpn_protocols.clone();
        }
    }
    if next.rate_limit.is_some() != current.rate_limit.is_some() {
        warn!("web config: rate_limit takes effect on restart only");
    }
    handle.store(Arc::new(next));
    Ok(())
}

/// The config file and the files it names, read whole, to notice a change
/// (a rename over the file, as config management does, included).
fn fingerprint(path: &Path) -> Vec<Option<Vec<u8>>> {
    WebConfig::watched_files(path)
        .iter()
        .map(|f| std::fs::read(f).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arc_swap::ArcSwap;

    use crate::exposition::Format;
    use crate::http::ExpositionCache;
    use crate::model::{Board, NodeSample};
    use crate::registry::Registry;

    fn board() -> SnapshotHandle {
        let snapshot = crate::fixtures::node();
        Arc::new(Board::new(
            snapshot.kubelet,
            NodeSample::clone(&snapshot.node),
        ))
    }

    #[tokio::test]
    async fn a_reload_keeps_the_config_in_force_unless_it_is_good_and_no_weaker() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = format!("basic_auth_users:\n  prom: '{hash}'\n");
        std::fs::write(&path, &auth).unwrap();
        let handle: WebConfigHandle =
            Arc::new(ArcSwap::from_pointee(WebConfig::load(&path).unwrap()));
        let start = WebConfigStatus::loaded(SystemTime::UNIX_EPOCH);

        // Half-written: refused, counted, the config in force stays.
        std::fs::write(&path, "basic_auth_users:\n  prom: [").unwrap();
        let in_force = handle.load_full();
        let status = reload(&path, &handle, start).await;
        assert_eq!((status.last_ok, status.failures), (false, 1));
        assert_eq!(status.last_success, SystemTime::UNIX_EPOCH);
        assert!(Arc::ptr_eq(&in_force, &handle.load_full()));

        // Valid but dropping basic auth: a downgrade, refused.
        std::fs::write(&path, "").unwrap();
        let status = reload(&path, &handle, status).await;
        assert_eq!((status.last_ok, status.failures), (false, 2));
        assert!(handle.load().requires_auth());

        // Valid and as strong: in force, the failures kept as a count.
        let headers = format!(
            "{auth}http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n"
        );
        std::fs::write(&path, headers).unwrap();
        let status = reload(&path, &handle, status).await;
        assert_eq!((status.last_ok, status.failures), (true, 2));
        assert!(status.last_success > SystemTime::UNIX_EPOCH);
        let now = handle.load();
        assert_eq!(now.headers.len(), 1);
        assert!(now.http2, "http2 is fixed at start, as in exporter-toolkit");
    }

    async fn text(cache: &ExpositionCache, registry: &Registry, board: &Board) -> String {
        let (body, _) = cache
            .body(registry, &board.snapshot(), Format::Text, false)
            .await;
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_status_reaches_the_exposition_through_the_board() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        std::fs::write(&path, "").unwrap();
        let handle: WebConfigHandle = Arc::new(ArcSwap::from_pointee(WebConfig::plain()));
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let board = board();
        let registry = Registry::new(None).unwrap();
        let cache = ExpositionCache::default();

        let before = text(&cache, &registry, &board).await;
        assert!(!before.contains("kubedf_web_config_"), "{before}");
        // Starting the reload loop publishes the status loaded at start.
        let _loop = reload_web_config(path.clone(), Arc::clone(&handle), Arc::clone(&board), stop);
        let loaded = text(&cache, &registry, &board).await;
        assert!(
            loaded.contains("kubedf_web_config_last_reload_successful 1\n"),
            "{loaded}"
        );
        assert!(
            loaded.contains("kubedf_web_config_reloads_failed_total 0\n"),
            "{loaded}"
        );

        // A failed reload is a new version of the board: the cache renders
        // again, with nobody invalidating it.
        std::fs::write(&path, ": : :").unwrap();
        let status = reload(
            &path,
            &handle,
            board.snapshot().web_config.as_deref().copied().unwrap(),
        )
        .await;
        board.publish_web_config(status);
        let failed = text(&cache, &registry, &board).await;
        assert!(
            failed.contains("kubedf_web_config_last_reload_successful 0\n"),
            "{failed}"
        );
        assert!(
            failed.contains("kubedf_web_config_reloads_failed_total 1\n"),
            "{failed}"
        );
        assert_eq!(cache.work_done().0, 3, "one render per version");
    }
}
