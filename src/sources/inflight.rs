//! At most one blocking call in flight per path: a call that hangs (a dead
//! NFS mount) holds its path until it returns, however late, and further
//! calls for that path are refused instead of piling up blocked threads.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Clone, Debug, Default)]
pub struct InFlightSet {
    set: Arc<Mutex<HashSet<PathBuf>>>,
}

/// Holds a path in the set until dropped; move it into the blocking call.
#[derive(Debug)]
pub struct InFlight {
    set: Arc<Mutex<HashSet<PathBuf>>>,
    path: PathBuf,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.path);
    }
}

impl InFlightSet {
    /// Claims `path`, or returns None while an earlier call still holds it.
    pub fn claim(&self, path: &Path) -> Option<InFlight> {
        let fresh = self
            .set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_path_buf());
        fresh.then(|| InFlight {
            set: Arc::clone(&self.set),
            path: path.to_path_buf(),
        })
    }

    pub fn len(&self) -> usize {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_per_path_until_dropped() {
        let set = InFlightSet::default();
        let a = set.claim(Path::new("/a")).unwrap();
        assert!(set.claim(Path::new("/a")).is_none());
        let _b = set.claim(Path::new("/b")).unwrap();
        drop(a);
        assert!(set.claim(Path::new("/a")).is_some());
    }
}
