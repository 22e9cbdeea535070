//! The outcome of loading `--web.config.file`, at start and on each reload,
//! as `kubedf_web_config_*` shows it. The reload loop is its one writer and
//! publishes it on the board, so a render sees it like any other part.

use std::time::SystemTime;

/// Where the web config's reloads stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebConfigStatus {
    /// Whether the last load or reload put the file in force.
    pub last_ok: bool,
    /// When the file was last put in force (at start, or by a reload).
    pub last_success: SystemTime,
    /// Reloads refused since start (an invalid file, or a downgrade).
    pub failures: u64,
}

impl WebConfigStatus {
    /// Loaded at start, at `at`.
    pub fn loaded(at: SystemTime) -> WebConfigStatus {
        WebConfigStatus {
            last_ok: true,
            last_success: at,
            failures: 0,
        }
    }

    /// After a reload put a new file in force at `at`.
    #[must_use]
    pub fn succeeded(self, at: SystemTime) -> WebConfigStatus {
        WebConfigStatus {
            last_ok: true,
            last_success: at,
            ..self
        }
    }

    /// After a reload was refused: the config in force stays.
    #[must_use]
    pub fn failed(self) -> WebConfigStatus {
        WebConfigStatus {
            last_ok: false,
            failures: self.failures + 1,
            ..self
        }
    }
}
