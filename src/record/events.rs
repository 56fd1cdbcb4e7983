//! Violations as `tracing` events (target `blockcop`), beside their run-file records.

/// Emits each violation as a `tracing` event, target `blockcop`: WARN for medium and high, DEBUG for low, with the
/// fields `event`, `weight`, `level`, `duration_us`, `call_site`, `blocking_api`, `detail`, the request's `method`
/// and `path` (empty outside one) and the task's `task.id` and `task.spawned_at` (0 and empty outside one). A
/// count of dropped violations is a WARN event of its own.
pub(crate) fn emit(violations: &crate::Violations, request: Option<(&str, &str)>) {
    let (method, path) = request.unwrap_or(("", ""));
    for v in violations {
        let duration_us = crate::clock::micros(v.duration);
        let call_site = tracing::field::display(&v.call_site);
        let blocking_api = v.blocking_api.as_deref().unwrap_or("");
        let task_id = v.task.as_ref().and_then(|t| t.id).unwrap_or(0);
        let spawned_at = v.task.as_ref().and_then(|t| t.spawned_at.as_deref()).unwrap_or("");
        macro_rules! event {
            ($lvl:expr) => {
                tracing::event!(
                    target: "blockcop",
                    $lvl,
                    event = v.event,
                    weight = v.weight.value(),
                    level = v.level.as_str(),
                    duration_us,
                    call_site,
                    blocking_api,
                    detail = v.detail.as_str(),
                    method,
                    path,
                    task.id = task_id,
                    task.spawned_at = spawned_at,
                    "blocking call in async task: {} at {}",
                    v.event,
                    v.call_site,
                )
            };
        }
        if v.level >= crate::Level::Medium {
            event!(tracing::Level::WARN);
        } else {
            event!(tracing::Level::DEBUG);
        }
    }
    if violations.dropped > 0 {
        tracing::warn!(
            target: "blockcop",
            dropped = violations.dropped,
            method,
            path,
            "the per-scope cap dropped {} violations",
            violations.dropped,
        );
    }
}
