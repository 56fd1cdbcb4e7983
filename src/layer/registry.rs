//! The request registry: full violations of recent requests, by the id in `x-blockcop-request-id`, for an
//! in-process harness. Bounded: past [`CAPACITY`] requests the oldest is evicted and counted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use http::Method;

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

#[derive(Default)]
struct Registry {
    records: VecDeque<Arc<RequestRecord>>,
    stats: RequestRegistryStats,
}

static REGISTRY: Mutex<Registry> =
    Mutex::new(Registry { records: VecDeque::new(), stats: RequestRegistryStats { stored: 0, evicted: 0 } });

/// Adds `violations` to the record of request `id`: a new record, or the request's existing one (its response
/// head's) with these appended.
pub(crate) fn add(id: u64, method: Method, path: String, violations: Violations) {
    crate::allow_blocking(|| {
        let mut r = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = r.records.iter_mut().rev().find(|rec| rec.id == id) {
            let old = &**existing;
            let mut list = old.violations.list.clone();
            list.extend(violations.list);
            let dropped = old.violations.dropped + violations.dropped;
            let violations = Violations { list, dropped };
            *existing = Arc::new(RequestRecord { id, method: old.method.clone(), path: old.path.clone(), violations });
            return;
        }
        if r.records.len() >= CAPACITY {
            r.records.pop_front();
            r.stats.evicted += 1;
        }
        r.records.push_back(Arc::new(RequestRecord { id, method, path, violations }));
        r.stats.stored += 1;
    });
}

/// The full violations of the request whose response carried `x-blockcop-request-id: <id>`, while the registry
/// still holds it (the latest [`CAPACITY`] requests with violations).
pub fn request_violations(id: u64) -> Option<Arc<RequestRecord>> {
    let r = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    r.records.iter().rev().find(|rec| rec.id == id).cloned()
}

/// How many requests were stored and evicted.
pub fn registry_stats() -> RequestRegistryStats {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner).stats
}
