//! The request registry: full violations of recent requests, by the id in `x-blockcop-request-id`, for an
//! in-process harness. Bounded: past [`CAPACITY`] requests the oldest is evicted and counted.

use std::sync::Arc;

use http::Method;

use crate::recent::Recent;
use crate::violation::Violations;

/// How many requests with violations the registry keeps. 4096.
pub const CAPACITY: usize = 4096;

/// One request's violations.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RequestRecord {
    /// The id sent in `x-blockcop-request-id` (the request's scope id).
    pub id: u64,
    /// The request method.
    pub method: Method,
    /// The request path; for a CONNECT request, its authority (`host:port`).
    pub path: String,
    /// The violations.
    pub violations: Violations,
}

/// Counters of the registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestRegistryStats {
    /// Requests stored since the process started.
    pub stored: u64,
    /// Requests evicted because the registry was full.
    pub evicted: u64,
}

static REGISTRY: Recent<Arc<RequestRecord>> = Recent::new(CAPACITY);

/// Stores a new record for request `id` (its response head's) and returns it.
pub(crate) fn store(id: u64, method: Method, path: String, violations: Violations) -> Arc<RequestRecord> {
    crate::allow_blocking(|| {
        let record = Arc::new(RequestRecord { id, method, path, violations });
        REGISTRY.push(record.clone());
        record
    })
}

/// Adds `violations` (its response body's) to the record of request `id`: the head's record with these appended,
/// or a new record when the head had none. Returns the record.
pub(crate) fn append(id: u64, method: Method, path: String, violations: Violations) -> Arc<RequestRecord> {
    crate::allow_blocking(|| {
        let appended = REGISTRY.with(|records| {
            let existing = records.iter_mut().rev().find(|rec| rec.id == id)?;
            let head = &**existing;
            let list = head.violations.list.iter().cloned().chain(violations.list.iter().cloned()).collect();
            let merged = Violations { list, dropped: head.violations.dropped + violations.dropped };
            *existing = Arc::new(RequestRecord {
                id,
                method: head.method.clone(),
                path: head.path.clone(),
                violations: merged,
            });
            Some(existing.clone())
        });
        appended.unwrap_or_else(|| {
            let record = Arc::new(RequestRecord { id, method, path, violations });
            REGISTRY.push(record.clone());
            record
        })
    })
}

/// The full violations of the request whose response carried `x-blockcop-request-id: <id>`, while the registry
/// still holds it (the latest [`CAPACITY`] requests with violations).
pub fn request_violations(id: u64) -> Option<Arc<RequestRecord>> {
    REGISTRY.with(|records| records.iter().rev().find(|rec| rec.id == id).cloned())
}

/// How many requests were stored and evicted.
pub fn registry_stats() -> RequestRegistryStats {
    let (stored, evicted) = REGISTRY.counts();
    RequestRegistryStats { stored, evicted }
}
