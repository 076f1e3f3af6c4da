//! Step 8's counts outlive the process: restored from `<consent.journal>/frequency.state`
//! before the gateway serves, checkpointed while it runs (every
//! `policy.frequency.checkpoint_interval`, 60 s by default), saved once more at a graceful stop. A crash loses at most the counts
//! of one checkpoint interval (those messages may be counted again: a subscriber can get up
//! to one interval's worth of messages over a cap); a graceful stop loses none. Restoring
//! never lowers a count that a running engine holds and never raises one above what was
//! counted (see [`crate::policy::frequency::Frequency::restore`]). Without `consent.journal`
//! there is nowhere durable to keep them and the counts live only as long as the process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::policy::{Engine, EngineCell};
use crate::telemetry::metrics as m;

/// The state file in the journal directory.
pub fn state_path(journal: &Path) -> PathBuf {
    journal.join("frequency.state")
}

/// Restores the counts into `engine`'s tables (at start, before any session). A missing
/// file is a first start; a damaged one or one for other table sizes is logged and skipped.
/// When the file was written (Unix seconds), if it was restored.
pub fn restore(engine: &Engine, path: &Path) -> Option<i64> {
    let f = engine.frequency()?;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "frequency-cap counts not restored");
            return None;
        }
    };
    match f.restore(std::io::BufReader::new(file)) {
        Ok(s) => {
            info!(path = %path.display(), buckets = s.buckets, bytes = s.bytes, saved_at = s.saved_at, "frequency-cap counts restored");
            if let Some(t) = s.skipped {
                warn!(path = %path.display(), table = t, "frequency-cap counts: this table was not restored, its size changed (policy.frequency subscribers, peak_rate or same_text_window)");
            }
            Some(s.saved_at)
        }
        Err(e) => {
            warn!(path = %path.display(), error = %e, "frequency-cap counts not restored");
            None
        }
    }
}

/// Saves the engine's counts to `path` (a temporary file, fsync, rename, fsync of the
/// directory: a crash mid-save leaves the previous file). Blocking: call off the async
/// workers.
pub fn save(engine: &Engine, path: &Path) {
    let Some(f) = engine.frequency() else { return };
    // One save at a time: a checkpoint still running when the stop's final save starts
    // (aborting its task does not stop its blocking closure) would write the same temporary
    // file. A std Mutex: no await inside.
    static SAVING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = SAVING.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = path.with_extension("state.tmp");
    let r = (|| -> std::io::Result<crate::policy::frequency::StateStats> {
        let file = std::fs::File::create(&tmp)?;
        let stats = f.save(&file, crate::time::unix_us() / 1_000_000)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(stats)
    })();
    match r {
        Ok(s) => {
            metrics::counter!(m::FREQUENCY_STATE_SAVES_TOTAL, "result" => "ok").increment(1);
            metrics::gauge!(m::FREQUENCY_STATE_SAVED_TIMESTAMP).set(s.saved_at as f64);
            tracing::debug!(path = %path.display(), buckets = s.buckets, bytes = s.bytes, "frequency-cap counts saved");
        }
        Err(e) => {
            metrics::counter!(m::FREQUENCY_STATE_SAVES_TOTAL, "result" => "failed").increment(1);
            static LIMIT: crate::telemetry::RateLimit = crate::telemetry::RateLimit::new(Duration::from_secs(300));
            if let Some(suppressed) = LIMIT.allow() {
                warn!(path = %path.display(), error = %e, suppressed, "frequency-cap counts not saved");
            }
        }
    }
}

/// Saves the counts of the engine in force every `checkpoint_interval` (read from the
/// engine in force before each wait, so a reload changes it), until aborted.
pub async fn checkpoints(engine: Arc<EngineCell>, path: PathBuf) {
    loop {
        let every = engine.load().frequency().map_or(60, |f| f.config().checkpoint_s);
        tokio::time::sleep(Duration::from_secs(u64::from(every))).await;
        let (e, p) = (engine.load(), path.clone());
        let _ = tokio::task::spawn_blocking(move || save(&e, &p)).await;
    }
}
