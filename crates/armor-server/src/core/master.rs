//! The master key file, shared by every service that seals or opens:
//! the versions in memory, re-read when a row names a version they lack
//! (another process rotated the file).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::crypto::MasterKeys;
use crate::error::Error;

/// The loaded master key file.
pub struct Master {
    keys: RwLock<Arc<MasterKeys>>,
    path: PathBuf,
}

impl Master {
    /// Loads the file at `path`, creating it if absent.
    pub fn load_or_create(path: &Path) -> Result<Self, Error> {
        Ok(Master {
            keys: RwLock::new(Arc::new(MasterKeys::load_or_create(path)?)),
            path: path.to_owned(),
        })
    }

    /// The versions in memory.
    pub fn current(&self) -> Arc<MasterKeys> {
        match self.keys.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Re-reads the file (after a rotation by another process).
    pub fn reload(&self) -> Result<Arc<MasterKeys>, Error> {
        let fresh = Arc::new(MasterKeys::load(&self.path)?);
        match self.keys.write() {
            Ok(mut g) => *g = fresh.clone(),
            Err(p) => *p.into_inner() = fresh.clone(),
        }
        Ok(fresh)
    }

    /// The versions in memory if they hold `version`, else the file
    /// re-read.
    pub fn with_version(&self, version: u32) -> Result<Arc<MasterKeys>, Error> {
        let master = self.current();
        if master.has_version(version) {
            Ok(master)
        } else {
            self.reload()
        }
    }
}
