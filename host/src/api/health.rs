//! The open endpoints a load balancer and a Prometheus scraper call:
//! `GET /healthz` and `GET /metrics`. Neither needs a token; both show
//! counts and plugin names only, no execution data.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use super::{Shared, json_response};

/// `GET /healthz`: the daemon is serving.
pub(super) async fn healthz() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// `GET /metrics`: Prometheus text format.
pub(super) async fn metrics(State(api): State<Shared>) -> Response {
    let store = api.workflows.store();
    let timer_backlog = match store.timer_backlog(crate::model::now_ms()).await {
        Ok(backlog) => Some(backlog),
        Err(e) => {
            tracing::warn!(error = %e, "cannot count timers for /metrics");
            None
        }
    };
    let executions = match store.count_executions_by_state().await {
        Ok(counts) => {
            let mut by_state = [0; 4];
            for (state, n) in counts {
                by_state[crate::metrics::state_index(state)] = n;
            }
            Some(by_state)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot count executions for /metrics");
            None
        }
    };
    let writes = store.write_stats();
    let text = api.workflows.metrics().render(&crate::metrics::Snapshot {
        slots: api.workflows.slot_usage(),
        timer_backlog,
        executions,
        timers_quarantined: store.quarantined_timers(),
        store_changes: writes.changes,
        store_transactions: writes.transactions,
        flush_requests: writes.flush_requests,
        disk_flushes: writes.disk_flushes,
    });
    let mut resp = Response::new(Body::from(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
