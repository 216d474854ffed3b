//! The build's stdout and stderr reach the log through a pipe that forge drains, not as the
//! log file itself: when the store's file system fills up, the build's last words ("No space
//! left on device") are exactly what cannot be written. The pump keeps the last
//! [`TAIL_BYTES`] in memory and remembers the first write error, so the caller can write the
//! tail and the diagnosis once space is back (after the scratch directory is gone).

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::limits::Activity;

/// How much of the end of the output is kept in memory.
pub const TAIL_BYTES: usize = 64 << 10;

/// What the pump saw once the pipe closed.
#[derive(Debug, Default)]
pub struct Pumped {
    /// The last [`TAIL_BYTES`] of output (or all of it).
    pub tail: Vec<u8>,
    /// The first error writing the log, with how many bytes had been written before it.
    pub write_error: Option<(io::Error, u64)>,
}

pub(crate) struct LogPump {
    thread: JoinHandle<Pumped>,
}

impl LogPump {
    /// Copies everything from `pipe` to `log` on a thread of its own.
    /// Each read is noted in `activity` (for the silence limit).
    pub(crate) fn start(pipe: File, log: File, activity: Arc<Activity>) -> io::Result<LogPump> {
        let thread = std::thread::Builder::new().name("forge-log".into()).spawn(move || pump(pipe, log, &activity))?;
        Ok(LogPump { thread })
    }

    /// Waits for the pipe to close (every process of the build has exited).
    pub(crate) fn finish(self) -> Pumped {
        self.thread.join().unwrap_or_default()
    }
}

fn pump(mut pipe: File, mut log: File, activity: &Activity) -> Pumped {
    let mut pumped = Pumped::default();
    let mut written = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        activity.touch();
        let chunk = &buf[..n];
        pumped.tail.extend_from_slice(chunk);
        if pumped.tail.len() > 2 * TAIL_BYTES {
            pumped.tail.drain(..pumped.tail.len() - TAIL_BYTES);
        }
        // Once writing failed, keep draining (the build must never block on a full pipe)
        // but stop trying: the tail is written later.
        if pumped.write_error.is_none() {
            match log.write_all(chunk) {
                Ok(()) => written += n as u64,
                Err(e) => pumped.write_error = Some((e, written)),
            }
        }
    }
    if pumped.tail.len() > TAIL_BYTES {
        pumped.tail.drain(..pumped.tail.len() - TAIL_BYTES);
    }
    pumped
}
