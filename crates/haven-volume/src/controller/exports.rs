//! What `haven volume serve` gives its NBD server: the volume's export while this
//! candidate serves it, nothing otherwise (a client then fails its NBD_OPT_GO and retries,
//! e.g. against the other candidates).

use std::sync::Arc;

use super::Controller;
use crate::nbd::{BlockDevice, Exports};

/// The export of a controller's volume, under the volume's name (and as the default).
#[derive(Debug, Clone)]
pub struct ControllerExports {
    inner: Arc<super::Inner>,
}

impl Controller {
    /// The exports an [`crate::nbd::NbdServer`] serves for this candidate.
    pub fn exports(&self) -> ControllerExports {
        ControllerExports {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl Exports for ControllerExports {
    fn lookup(&self, name: &str) -> Option<Arc<dyn BlockDevice>> {
        if !name.is_empty() && name != self.inner.config.volume {
            return None;
        }
        let volume = super::lock(&self.inner.serving).clone()?;
        if volume.is_stopped() {
            return None;
        }
        Some(volume)
    }

    fn names(&self) -> Vec<String> {
        vec![self.inner.config.volume.clone()]
    }
}
