//! `prober: redis`: placeholder until the dependency-check issue lands; the section accepts no
//! fields yet and probes fail as unsupported.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::probe::prober::{FailureKind, ProbeContext, ProbeFailure, ProbeRequest, Prober};

/// The `redis:` section of a module, as written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {}

/// The validated module.
#[derive(Debug, Clone)]
pub struct Spec {}

impl Spec {
    /// Validates `section`.
    pub fn build(_section: &Section, _base: &Path) -> Result<Spec, (String, String)> {
        Ok(Spec {})
    }
}

impl Prober for Spec {
    async fn probe(&self, _req: &ProbeRequest, _cx: &mut ProbeContext<'_>) -> Result<(), ProbeFailure> {
        Err(ProbeFailure::new(FailureKind::Unsupported, "the redis prober is not implemented yet"))
    }
}
