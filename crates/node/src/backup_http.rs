//! The admin endpoints a base backup is taken through, so that
//! `tandem backup base` can run on another machine (no shared paths):
//!
//! - `POST /backup/base`: takes a fuzzy snapshot now (writes continue) and
//!   answers with a [`BaseSource`]: the snapshot's name and size, and the
//!   LSN range `start_lsn+1..=end_lsn` whose log makes it consistent. The
//!   snapshot is hard-linked into `<data_dir>/backup-staging/` so that a
//!   later snapshot's pruning cannot delete it mid-download.
//! - `GET /backup/file/{name}?offset=O&len=L`: up to [`FILE_PIECE_BYTES_MAX`]
//!   bytes of that staged snapshot.
//! - `GET /backup/log?from=LSN&max_bytes=N`: durable log records from `LSN`,
//!   encoded as in a log segment (no header).
//! - `POST /backup/done?name=..`: drops the staged snapshot.
//!
//! Works on a leader and on a follower alike. Never serves a file outside the
//! staging directory and never reads more than a named limit per request.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tandem_backup::base::BaseSource;

use crate::server::Shared;

/// Largest piece of a file one `GET /backup/file` returns.
pub const FILE_PIECE_BYTES_MAX: u64 = 8 << 20;
/// Largest run of log records one `GET /backup/log` returns (about).
pub const LOG_PIECE_BYTES_MAX: usize = 8 << 20;
/// Directory (under the data dir) where snapshots wait for download.
const STAGING_DIR: &str = "backup-staging";

/// The backup routes, to merge into the admin router.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/backup/base", post(base))
        .route("/backup/file/{name}", get(file))
        .route("/backup/log", get(log))
        .route("/backup/done", post(done))
}

fn fail(status: StatusCode, text: String) -> Response {
    (status, text + "\n").into_response()
}

fn staging(shared: &Shared) -> PathBuf {
    shared.config.data_dir.join(STAGING_DIR)
}

async fn base(State(shared): State<Arc<Shared>>) -> Response {
    let result = tokio::task::spawn_blocking(move || -> Result<BaseSource, String> {
        let report = shared.db.snapshot().map_err(|e| format!("snapshot failed: {e}"))?;
        let name = format!("snap-{:020}.snap", report.start_lsn);
        let src = shared.config.data_dir.join("snapshots").join(&name);
        let dir = staging(&shared);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let staged = dir.join(&name);
        std::fs::hard_link(&src, &staged)
            .or_else(|_| std::fs::copy(&src, &staged).map(|_| ()))
            .map_err(|e| format!("cannot stage {}: {e}", src.display()))?;
        let meta = tandem_storage::SnapshotReader::open(&staged).map_err(|e| e.to_string())?.meta();
        Ok(BaseSource {
            node_id: shared.config.node_id,
            start_lsn: report.start_lsn,
            end_lsn: report.end_lsn,
            end_commit_ms: report.end_commit_ms,
            epoch: shared.db.epoch(),
            keys: report.keys as u64,
            snapshot_bytes: report.bytes,
            snapshot_name: name,
            created_unix_ms: meta.created_unix_ms,
        })
    })
    .await;
    match result {
        Ok(Ok(source)) => Json(source).into_response(),
        Ok(Err(e)) => fail(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, format!("base backup task failed: {e}")),
    }
}

#[derive(serde::Deserialize)]
struct Piece {
    offset: u64,
    len: u64,
}

fn valid_name(name: &str) -> bool {
    name.starts_with("snap-") && name.ends_with(".snap") && !name.contains('/') && !name.contains("..")
}

async fn file(State(shared): State<Arc<Shared>>, Path(name): Path<String>, Query(q): Query<Piece>) -> Response {
    if !valid_name(&name) {
        return fail(StatusCode::BAD_REQUEST, format!("{name:?} is not a staged snapshot name"));
    }
    let path = staging(&shared).join(&name);
    let len = q.len.min(FILE_PIECE_BYTES_MAX);
    let result = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut f = std::fs::File::open(&path)?;
        f.seek(SeekFrom::Start(q.offset))?;
        let mut buf = Vec::with_capacity(len as usize);
        f.take(len).read_to_end(&mut buf)?;
        Ok(buf)
    })
    .await;
    match result {
        Ok(Ok(bytes)) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Ok(Err(e)) => fail(StatusCode::NOT_FOUND, format!("cannot read staged snapshot {name}: {e}")),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(serde::Deserialize)]
struct LogQuery {
    from: u64,
    max_bytes: Option<usize>,
}

async fn log(State(shared): State<Arc<Shared>>, Query(q): Query<LogQuery>) -> Response {
    let max = q.max_bytes.unwrap_or(LOG_PIECE_BYTES_MAX).min(LOG_PIECE_BYTES_MAX);
    let result = tokio::task::spawn_blocking(move || shared.db.log().read_from(q.from, max)).await;
    match result {
        Ok(Ok(records)) => {
            let mut body = Vec::with_capacity(records.iter().map(|r| r.payload.len() + 24).sum());
            for r in &records {
                tandem_backup::records::encode_record(&mut body, r.lsn, r.epoch, &r.payload);
            }
            ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
        }
        Ok(Err(e @ tandem_storage::StorageError::NotRetained { .. })) => fail(StatusCode::GONE, e.to_string()),
        Ok(Err(e)) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(serde::Deserialize)]
struct Done {
    name: String,
}

async fn done(State(shared): State<Arc<Shared>>, Query(q): Query<Done>) -> Response {
    if !valid_name(&q.name) {
        return fail(StatusCode::BAD_REQUEST, format!("{:?} is not a staged snapshot name", q.name));
    }
    let _ = std::fs::remove_file(staging(&shared).join(&q.name));
    (StatusCode::OK, "ok\n").into_response()
}
