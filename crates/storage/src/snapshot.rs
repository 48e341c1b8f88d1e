//! Snapshots: a point-in-time image of a keyspace as a sequence of opaque
//! chunks, in files `<dir>/snap-<start_lsn as 20 digits>.snap`.
//!
//! Owns those files only. It never interprets a chunk, never knows the log
//! (the caller guarantees the log is durable to `end_lsn` before
//! publishing), and never exposes a snapshot that is not complete: a
//! snapshot is written to `<name>.tmp`, fsynced, renamed into place, and the
//! directory is fsynced. Readers verify every checksum before use and fall
//! back to an older snapshot when the newest one is damaged.
//!
//! # On-disk format (little-endian)
//!
//! - Header, 48 bytes: magic `TNDMSNP1`, u32 version (1), u32 reserved,
//!   u64 `start_lsn` (replay the log from `start_lsn + 1` after loading),
//!   u64 `end_lsn` (the log was durable at least to it when published),
//!   u64 created unix ms, u32 crc32c of bytes 0..40, u32 reserved.
//! - Chunks: `u32 len | u32 crc32c(bytes) | bytes`, each at most
//!   [`SNAPSHOT_CHUNK_BYTES_MAX`].
//! - Trailer, 32 bytes: u64 chunk count, u64 bytes of all chunk frames, u32
//!   crc32c over all chunk frames, u32 crc32c of the trailer's first 20
//!   bytes, magic `TNDMSEND`. A truncated snapshot has no valid trailer.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::corrupt_snapshot;
use crate::fsutil::{io_err, sync_dir};
use crate::StorageError;

/// Magic bytes that open every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"TNDMSNP1";
/// Magic bytes that close every complete snapshot.
pub const SNAPSHOT_TRAILER_MAGIC: [u8; 8] = *b"TNDMSEND";
/// Snapshot format version written by this build (and the only one it reads).
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
/// Bytes of the snapshot header.
pub const SNAPSHOT_HEADER_BYTES: u64 = 48;
/// Bytes of the snapshot trailer.
pub const SNAPSHOT_TRAILER_BYTES: u64 = 32;
/// Largest chunk a snapshot may hold; a larger length on disk is corruption.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 512 << 20;
const CHUNK_HEADER_BYTES: u64 = 8;
/// Buffer for writing and reading snapshots: big sequential I/O.
const IO_BUFFER_BYTES: usize = 1 << 20;
const NAME_PREFIX: &str = "snap-";
const NAME_SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".tmp";

/// What a snapshot's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The snapshot holds every log entry up to here; replay from `start_lsn + 1`.
    pub start_lsn: u64,
    /// The log was durable at least to here when the snapshot was published.
    pub end_lsn: u64,
    /// When it was published, unix milliseconds.
    pub created_unix_ms: u64,
}

/// A published snapshot, as returned by [`SnapshotWriter::finish`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its final path.
    pub path: PathBuf,
    /// Its header fields.
    pub meta: SnapshotMeta,
    /// File size in bytes.
    pub bytes: u64,
    /// Number of chunks.
    pub chunks: u64,
}

/// A snapshot file found in a directory (not verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Its path.
    pub path: PathBuf,
    /// The start LSN its name carries.
    pub start_lsn: u64,
    /// File size in bytes.
    pub bytes: u64,
}

/// `<dir>/snap-<start_lsn as 20 digits>.snap`.
pub fn snapshot_path(dir: &Path, start_lsn: u64) -> PathBuf {
    dir.join(format!("{NAME_PREFIX}{start_lsn:020}{NAME_SUFFIX}"))
}

fn parse_snapshot_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(NAME_PREFIX)?.strip_suffix(NAME_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Writes one snapshot; nothing is visible under the final name until
/// [`SnapshotWriter::finish`] succeeds. Dropping it unfinished deletes the
/// temp file.
pub struct SnapshotWriter {
    dir: PathBuf,
    temp_path: PathBuf,
    final_path: PathBuf,
    start_lsn: u64,
    out: Option<BufWriter<File>>,
    chunks: u64,
    chunk_bytes: u64,
    total_crc: u32,
    published: bool,
}

impl SnapshotWriter {
    /// Starts `<dir>/snap-<start_lsn>.snap.tmp` (creating `dir` if needed;
    /// replacing a stale temp file of the same name).
    pub fn create(dir: &Path, start_lsn: u64) -> Result<SnapshotWriter, StorageError> {
        fs::create_dir_all(dir).map_err(io_err("create snapshot directory", dir))?;
        let final_path = snapshot_path(dir, start_lsn);
        let temp_path = temp_path_of(&final_path);
        let file = File::create(&temp_path).map_err(io_err("create snapshot", &temp_path))?;
        let mut writer = SnapshotWriter {
            dir: dir.to_path_buf(),
            temp_path,
            final_path,
            start_lsn,
            out: Some(BufWriter::with_capacity(IO_BUFFER_BYTES, file)),
            chunks: 0,
            chunk_bytes: 0,
            total_crc: 0,
            published: false,
        };
        // Placeholder: the header is rewritten by finish() once end_lsn is known.
        writer.write(&[0u8; SNAPSHOT_HEADER_BYTES as usize])?;
        Ok(writer)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        let out = self.out.as_mut().expect("writer is open until finish");
        out.write_all(bytes).map_err(io_err("write snapshot", &self.temp_path))
    }

    /// Appends one opaque chunk of at most [`SNAPSHOT_CHUNK_BYTES_MAX`]; a
    /// longer one is an error (nothing is written), never a panic.
    pub fn write_chunk(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        if bytes.len() > SNAPSHOT_CHUNK_BYTES_MAX {
            return Err(StorageError::Io {
                op: "write snapshot chunk",
                path: self.temp_path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "chunk of {} bytes exceeds SNAPSHOT_CHUNK_BYTES_MAX ({SNAPSHOT_CHUNK_BYTES_MAX})",
                        bytes.len()
                    ),
                ),
            });
        }
        let mut head = [0u8; CHUNK_HEADER_BYTES as usize];
        head[..4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
        head[4..].copy_from_slice(&crc32c::crc32c(bytes).to_le_bytes());
        self.write(&head)?;
        self.write(bytes)?;
        self.total_crc = crc32c::crc32c_append(crc32c::crc32c_append(self.total_crc, &head), bytes);
        self.chunks += 1;
        self.chunk_bytes += CHUNK_HEADER_BYTES + bytes.len() as u64;
        Ok(())
    }

    /// Writes trailer and header, fsyncs, renames into place and fsyncs the
    /// directory. `end_lsn >= start_lsn` (asserted).
    pub fn finish(mut self, end_lsn: u64, created_unix_ms: u64) -> Result<SnapshotInfo, StorageError> {
        assert!(end_lsn >= self.start_lsn, "snapshot end_lsn {end_lsn} is below its start_lsn {}", self.start_lsn);
        let meta = SnapshotMeta { start_lsn: self.start_lsn, end_lsn, created_unix_ms };
        let trailer = encode_trailer(self.chunks, self.chunk_bytes, self.total_crc);
        self.write(&trailer)?;
        let out = self.out.take().expect("writer is open until finish");
        let mut file = out.into_inner().map_err(|e| io_err("write snapshot", &self.temp_path)(e.into_error()))?;
        let temp = &self.temp_path;
        file.seek(SeekFrom::Start(0)).map_err(io_err("seek in snapshot", temp))?;
        file.write_all(&encode_header(&meta)).map_err(io_err("write snapshot header to", temp))?;
        file.sync_all().map_err(io_err("fsync", temp))?;
        drop(file);
        fs::rename(temp, &self.final_path).map_err(io_err("rename snapshot into place at", &self.final_path))?;
        self.published = true;
        sync_dir(&self.dir)?;
        Ok(SnapshotInfo {
            path: self.final_path.clone(),
            meta,
            bytes: SNAPSHOT_HEADER_BYTES + self.chunk_bytes + SNAPSHOT_TRAILER_BYTES,
            chunks: self.chunks,
        })
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if !self.published {
            drop(self.out.take());
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}

fn temp_path_of(final_path: &Path) -> PathBuf {
    let mut name = final_path.as_os_str().to_owned();
    name.push(TEMP_SUFFIX);
    PathBuf::from(name)
}

fn encode_header(meta: &SnapshotMeta) -> [u8; SNAPSHOT_HEADER_BYTES as usize] {
    let mut h = [0u8; SNAPSHOT_HEADER_BYTES as usize];
    h[..8].copy_from_slice(&SNAPSHOT_MAGIC);
    h[8..12].copy_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&meta.start_lsn.to_le_bytes());
    h[24..32].copy_from_slice(&meta.end_lsn.to_le_bytes());
    h[32..40].copy_from_slice(&meta.created_unix_ms.to_le_bytes());
    let crc = crc32c::crc32c(&h[..40]);
    h[40..44].copy_from_slice(&crc.to_le_bytes());
    h
}

fn encode_trailer(chunks: u64, chunk_bytes: u64, total_crc: u32) -> [u8; SNAPSHOT_TRAILER_BYTES as usize] {
    let mut t = [0u8; SNAPSHOT_TRAILER_BYTES as usize];
    t[..8].copy_from_slice(&chunks.to_le_bytes());
    t[8..16].copy_from_slice(&chunk_bytes.to_le_bytes());
    t[16..20].copy_from_slice(&total_crc.to_le_bytes());
    let crc = crc32c::crc32c(&t[..20]);
    t[20..24].copy_from_slice(&crc.to_le_bytes());
    t[24..].copy_from_slice(&SNAPSHOT_TRAILER_MAGIC);
    t
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A fully verified snapshot, open for loading. It holds the file open, so
/// a concurrent [`prune`] cannot pull it away mid-read.
#[derive(Debug)]
pub struct SnapshotReader {
    path: PathBuf,
    file: File,
    meta: SnapshotMeta,
    chunks: u64,
    chunk_bytes: u64,
    total_crc: u32,
}

impl SnapshotReader {
    /// Opens `path` and verifies header, trailer and every chunk checksum.
    pub fn open(path: &Path) -> Result<SnapshotReader, StorageError> {
        let mut file = File::open(path).map_err(io_err("open snapshot", path))?;
        let len = file.metadata().map_err(io_err("stat snapshot", path))?.len();
        if len < SNAPSHOT_HEADER_BYTES + SNAPSHOT_TRAILER_BYTES {
            return Err(corrupt_snapshot(
                path,
                len,
                format!("file is only {len} bytes, too short for header and trailer (truncated)"),
            ));
        }
        let mut h = [0u8; SNAPSHOT_HEADER_BYTES as usize];
        read_exact_at(&mut file, path, 0, &mut h)?;
        let meta = check_header(path, &h)?;
        let mut t = [0u8; SNAPSHOT_TRAILER_BYTES as usize];
        let trailer_at = len - SNAPSHOT_TRAILER_BYTES;
        read_exact_at(&mut file, path, trailer_at, &mut t)?;
        if t[24..] != SNAPSHOT_TRAILER_MAGIC {
            return Err(corrupt_snapshot(path, trailer_at, "trailer is missing or damaged (truncated snapshot?)"));
        }
        let (stored, computed) = (u32_at(&t, 20), crc32c::crc32c(&t[..20]));
        if stored != computed {
            return Err(corrupt_snapshot(
                path,
                trailer_at,
                format!("trailer crc mismatch (stored 0x{stored:08x}, computed 0x{computed:08x})"),
            ));
        }
        let (chunks, chunk_bytes, total_crc) = (u64_at(&t, 0), u64_at(&t, 8), u32_at(&t, 16));
        if SNAPSHOT_HEADER_BYTES.checked_add(chunk_bytes).and_then(|n| n.checked_add(SNAPSHOT_TRAILER_BYTES))
            != Some(len)
        {
            return Err(corrupt_snapshot(
                path,
                trailer_at,
                format!(
                    "trailer says {chunk_bytes} bytes of chunks but the file holds {}",
                    len - SNAPSHOT_HEADER_BYTES - SNAPSHOT_TRAILER_BYTES
                ),
            ));
        }
        let reader = SnapshotReader { path: path.to_path_buf(), file, meta, chunks, chunk_bytes, total_crc };
        reader.walk(|_| Ok::<(), StorageError>(()))?;
        Ok(reader)
    }

    /// The header fields.
    pub fn meta(&self) -> SnapshotMeta {
        self.meta
    }

    /// The file it reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of chunks.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// File size in bytes.
    pub fn bytes(&self) -> u64 {
        SNAPSHOT_HEADER_BYTES + self.chunk_bytes + SNAPSHOT_TRAILER_BYTES
    }

    /// Streams every chunk, in order, to `f`, re-verifying checksums as it
    /// reads (1 MiB buffered reads; one reused chunk buffer). An error from
    /// `f` stops iteration and returns as [`StorageError::Callback`].
    pub fn for_each_chunk<E, F>(self, mut f: F) -> Result<(), StorageError>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
        F: FnMut(&[u8]) -> Result<(), E>,
    {
        let path = self.path.clone();
        self.walk(|chunk| {
            f(chunk).map_err(|e| StorageError::Callback {
                what: format!("loading snapshot {} stopped", path.display()),
                source: e.into(),
            })
        })
    }

    fn walk(&self, mut f: impl FnMut(&[u8]) -> Result<(), StorageError>) -> Result<(), StorageError> {
        let path = &self.path;
        let mut file = &self.file;
        file.seek(SeekFrom::Start(SNAPSHOT_HEADER_BYTES)).map_err(io_err("seek in snapshot", path))?;
        let mut input = BufReader::with_capacity(IO_BUFFER_BYTES, file);
        let end = SNAPSHOT_HEADER_BYTES + self.chunk_bytes;
        let mut offset = SNAPSHOT_HEADER_BYTES;
        let (mut count, mut total) = (0u64, 0u32);
        let mut chunk = Vec::new();
        while offset < end {
            if end - offset < CHUNK_HEADER_BYTES {
                return Err(corrupt_snapshot(path, offset, "chunk header runs past the end of the chunk section"));
            }
            let mut head = [0u8; CHUNK_HEADER_BYTES as usize];
            read_exact(&mut input, path, offset, &mut head)?;
            let (len, stored) = (u32_at(&head, 0) as usize, u32_at(&head, 4));
            if len > SNAPSHOT_CHUNK_BYTES_MAX {
                return Err(corrupt_snapshot(
                    path,
                    offset,
                    format!("chunk length {len} exceeds the limit of {SNAPSHOT_CHUNK_BYTES_MAX} bytes"),
                ));
            }
            if offset + CHUNK_HEADER_BYTES + len as u64 > end {
                return Err(corrupt_snapshot(
                    path,
                    offset,
                    format!("chunk of {len} bytes runs past the end of the chunk section"),
                ));
            }
            chunk.resize(len, 0);
            read_exact(&mut input, path, offset, &mut chunk)?;
            let computed = crc32c::crc32c(&chunk);
            if computed != stored {
                return Err(corrupt_snapshot(
                    path,
                    offset,
                    format!("chunk crc mismatch (stored 0x{stored:08x}, computed 0x{computed:08x})"),
                ));
            }
            total = crc32c::crc32c_append(crc32c::crc32c_append(total, &head), &chunk);
            f(&chunk)?;
            count += 1;
            offset += CHUNK_HEADER_BYTES + len as u64;
        }
        if count != self.chunks {
            return Err(corrupt_snapshot(
                path,
                end,
                format!("trailer counts {} chunks but {count} were found", self.chunks),
            ));
        }
        if total != self.total_crc {
            return Err(corrupt_snapshot(
                path,
                end,
                format!("total crc mismatch (stored 0x{:08x}, computed 0x{total:08x})", self.total_crc),
            ));
        }
        Ok(())
    }
}

fn check_header(path: &Path, h: &[u8]) -> Result<SnapshotMeta, StorageError> {
    if h[..8] != SNAPSHOT_MAGIC {
        return Err(corrupt_snapshot(
            path,
            0,
            format!("bad snapshot magic {:02x?} (expected {:?})", &h[..8], "TNDMSNP1"),
        ));
    }
    let version = u32_at(h, 8);
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(corrupt_snapshot(
            path,
            8,
            format!(
                "unsupported snapshot format version {version} (this build reads version {SNAPSHOT_FORMAT_VERSION})"
            ),
        ));
    }
    let (stored, computed) = (u32_at(h, 40), crc32c::crc32c(&h[..40]));
    if stored != computed {
        return Err(corrupt_snapshot(
            path,
            40,
            format!("header crc mismatch (stored 0x{stored:08x}, computed 0x{computed:08x})"),
        ));
    }
    let meta = SnapshotMeta { start_lsn: u64_at(h, 16), end_lsn: u64_at(h, 24), created_unix_ms: u64_at(h, 32) };
    let named = path.file_name().and_then(|n| n.to_str()).and_then(parse_snapshot_name);
    if let Some(named) = named {
        if named != meta.start_lsn {
            return Err(corrupt_snapshot(
                path,
                16,
                format!("header says start_lsn {} but the file name says {named}", meta.start_lsn),
            ));
        }
    }
    Ok(meta)
}

fn read_exact_at(file: &mut File, path: &Path, at: u64, buf: &mut [u8]) -> Result<(), StorageError> {
    file.seek(SeekFrom::Start(at)).map_err(io_err("seek in snapshot", path))?;
    read_exact(file, path, at, buf)
}

fn read_exact(input: &mut impl Read, path: &Path, at: u64, buf: &mut [u8]) -> Result<(), StorageError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            corrupt_snapshot(path, at, "file ends early (it changed after it was verified)")
        }
        _ => io_err("read snapshot", path)(e),
    })
}

/// Snapshot files in `dir`, oldest first (by start LSN). Temp files are
/// not listed. A missing directory has none.
pub fn list(dir: &Path) -> Result<Vec<SnapshotFile>, StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list directory", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list directory", dir))?;
        let name = entry.file_name();
        let Some(start_lsn) = name.to_str().and_then(parse_snapshot_name) else {
            continue;
        };
        let path = entry.path();
        let bytes = entry.metadata().map_err(io_err("stat snapshot", &path))?.len();
        out.push(SnapshotFile { path, start_lsn, bytes });
    }
    out.sort_unstable_by_key(|f| f.start_lsn);
    Ok(out)
}

/// The newest snapshot that verifies completely. A damaged newer one is
/// skipped with a warning naming path and offset, and an older valid one is
/// used. `Ok(None)` only when `dir` holds no snapshot at all; when
/// snapshots exist but none verifies, the newest one's corruption is the
/// error (never silently start from nothing).
pub fn latest_valid(dir: &Path) -> Result<Option<SnapshotReader>, StorageError> {
    let files = list(dir)?;
    let mut first_error = None;
    for file in files.iter().rev() {
        match SnapshotReader::open(&file.path) {
            Ok(reader) => {
                if first_error.is_some() {
                    tracing::warn!(file = %file.path.display(), start_lsn = file.start_lsn, "using an older snapshot because a newer one is corrupt");
                }
                return Ok(Some(reader));
            }
            Err(e @ StorageError::CorruptSnapshot { .. }) => {
                if let StorageError::CorruptSnapshot { path, offset, reason } = &e {
                    tracing::warn!(file = %path.display(), offset, reason, "skipping a corrupt snapshot");
                }
                first_error.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// Deletes all but the newest `keep` snapshots (`keep >= 1`, asserted) and
/// fsyncs the directory. Returns the snapshots kept, oldest first.
pub fn prune(dir: &Path, keep: usize) -> Result<Vec<SnapshotFile>, StorageError> {
    assert!(keep >= 1, "prune must keep at least one snapshot");
    let mut files = list(dir)?;
    let excess = files.len().saturating_sub(keep);
    for file in files.drain(..excess) {
        fs::remove_file(&file.path).map_err(io_err("delete snapshot", &file.path))?;
    }
    if excess > 0 {
        sync_dir(dir)?;
    }
    Ok(files)
}

/// Deletes leftover `*.snap.tmp` files of interrupted snapshot writes.
/// Call at startup only, never while a [`SnapshotWriter`] is open.
pub fn remove_temp_files(dir: &Path) -> Result<usize, StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err("list directory", dir)(e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(io_err("list directory", dir))?;
        let name = entry.file_name();
        let is_temp =
            name.to_str().and_then(|n| n.strip_suffix(TEMP_SUFFIX)).is_some_and(|n| parse_snapshot_name(n).is_some());
        if is_temp {
            fs::remove_file(entry.path()).map_err(io_err("delete snapshot temp file", &entry.path()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests;
