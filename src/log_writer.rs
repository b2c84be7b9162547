//! log_writer: owns the background thread that writes log lines (the process log and the access
//! log) in batches. Never blocks and never makes a system call on the caller's thread; knows
//! nothing about what the lines say.
//!
//! Why not a writer that wakes its thread per line: with one access line per request, a wake per
//! line is a context switch per request, which on one core cost more than the proxying itself
//! (bench/proxy.sh under perf; bench/RESULTS.md). Here the thread sleeps
//! [`BATCH_INTERVAL`] after each batch, so under load lines pile up in the queue and go out in
//! one `write` each interval; idle, it blocks on the queue and the first line wakes it.
//!
//! A full queue (the output cannot keep up) drops lines rather than stall requests; the count of
//! dropped lines is written to the output as soon as it drains.
//!
//! Written lines go back, emptied, to a small lock-free stack of spare buffers that
//! [`BatchWriter::buffer`] hands out again: in steady state an access line costs no `malloc` on
//! the request thread and no `free` here (a free of another thread's chunk takes glibc's arena
//! lock, shared with the request thread on the same core).

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

/// How long the writer sleeps after a batch: the most a line waits under load.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(20);
/// Lines queued at most; beyond that lines are dropped and counted.
const QUEUE_LINES: usize = 16 * 1024;
/// Spare line buffers kept for reuse, and the largest one kept: a few hundred KiB at most.
const SPARE_BUFFERS: usize = 1024;
const SPARE_CAPACITY: usize = 512;
/// How long [`FlushGuard`]'s drop waits for the last lines to be written.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

enum Message {
    Line(Vec<u8>),
    /// Write everything queued before this, flush, then acknowledge.
    Flush(SyncSender<()>),
}

/// A cheap, cloneable handle that queues lines for the writer thread. Implements
/// `tracing_subscriber`'s `MakeWriter` (through `io::Write` on a clone).
#[derive(Clone, Debug)]
pub struct BatchWriter {
    queue: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
    spare: Arc<ArrayQueue<Vec<u8>>>,
}

/// Flushes the queued lines when dropped (at process exit), bounded by a timeout.
pub struct FlushGuard {
    queue: SyncSender<Message>,
    thread: Option<JoinHandle<()>>,
}

impl BatchWriter {
    /// Starts the writer thread over `out`.
    pub fn spawn(
        name: &str,
        out: impl Write + Send + 'static,
    ) -> io::Result<(BatchWriter, FlushGuard)> {
        let (queue, lines) = mpsc::sync_channel(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let spare = Arc::new(ArrayQueue::new(SPARE_BUFFERS));
        let thread = thread::Builder::new().name(name.to_owned()).spawn({
            let (dropped, spare) = (dropped.clone(), spare.clone());
            move || run(lines, out, &dropped, &spare)
        })?;
        let guard = FlushGuard {
            queue: queue.clone(),
            thread: Some(thread),
        };
        Ok((
            BatchWriter {
                queue,
                dropped,
                spare,
            },
            guard,
        ))
    }
}

impl BatchWriter {
    /// An empty buffer for the next line, reused from a written one when there is one.
    pub fn buffer(&self) -> Vec<u8> {
        self.spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(SPARE_CAPACITY / 2))
    }

    /// Queues one whole line (or several), without copying it.
    pub fn send(&self, line: Vec<u8>) {
        match self.queue.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The writer is gone (process exiting): nothing left to write to.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

impl Write for BatchWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut line = self.buffer();
        line.extend_from_slice(buf);
        self.send(line);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        let (ack, acked) = mpsc::sync_channel(1);
        // A full queue still takes the flush request once the writer drains it.
        if self.queue.send(Message::Flush(ack)).is_ok() {
            let _ = acked.recv_timeout(FLUSH_TIMEOUT);
        }
        // The thread ends when every writer is gone; the global subscriber keeps one for the
        // life of the process, so it is detached rather than joined.
        drop(self.thread.take());
    }
}

fn run(
    lines: Receiver<Message>,
    out: impl Write,
    dropped: &AtomicU64,
    spare: &ArrayQueue<Vec<u8>>,
) {
    let mut out = io::BufWriter::with_capacity(64 * 1024, out);
    let mut reported = 0;
    // Idle, the thread blocks here and the first line wakes it.
    while let Ok(first) = lines.recv() {
        let mut acks = Vec::new();
        for message in std::iter::once(first).chain(lines.try_iter()) {
            match message {
                // A failing output (closed stderr, full disk) must not stop the process: the
                // line is lost, as it would be with a direct write.
                Message::Line(mut line) => {
                    let _ = out.write_all(&line);
                    if line.capacity() <= SPARE_CAPACITY {
                        line.clear();
                        // Full: this one is freed; enough are in circulation.
                        let _ = spare.push(line);
                    }
                }
                Message::Flush(ack) => acks.push(ack),
            }
        }
        let now = dropped.load(Ordering::Relaxed);
        if now > reported {
            let _ = writeln!(
                out,
                "lb: {} log lines dropped: the log output could not keep up",
                now - reported
            );
            reported = now;
        }
        let _ = out.flush();
        for ack in acks {
            let _ = ack.try_send(());
        }
        // Lines that arrive while we sleep queue up without waking us.
        thread::sleep(BATCH_INTERVAL);
    }
}

// NOTE: the tests share their fake output through a std Mutex; never on the request path.
#[allow(clippy::disallowed_types)]
#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    /// An output the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<StdMutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().map_err(|_| io::ErrorKind::Other)?.extend(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_and_the_guard_flushes_them() {
        let out = Shared::default();
        let (writer, guard) = BatchWriter::spawn("test-log", out.clone()).unwrap();
        for i in 0..1000 {
            let mut w = writer.clone();
            w.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let want: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, want);
    }

    #[test]
    fn written_buffers_come_back_empty_for_reuse_and_big_ones_do_not() {
        let out = Shared::default();
        let (writer, guard) = BatchWriter::spawn("test-log", out.clone()).unwrap();
        let mut small = Vec::with_capacity(300);
        small.extend_from_slice(b"small\n");
        writer.send(small);
        let mut big = Vec::with_capacity(SPARE_CAPACITY * 4);
        big.extend_from_slice(b"big\n");
        writer.send(big);
        drop(guard); // returns once both lines are written
        assert_eq!(writer.spare.len(), 1);
        let reused = writer.buffer();
        assert!(reused.is_empty());
        assert_eq!(reused.capacity(), 300);
        // Nothing spare left: a fresh buffer.
        assert_eq!(writer.buffer().capacity(), SPARE_CAPACITY / 2);
        assert_eq!(&*out.0.lock().unwrap(), b"small\nbig\n");
    }

    #[test]
    fn a_full_queue_drops_lines_and_says_how_many() {
        /// An output that says when a write starts and blocks until the test lets it go.
        struct Gate {
            entered: mpsc::Sender<()>,
            open: mpsc::Receiver<()>,
            out: Shared,
        }
        impl Write for Gate {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let _ = self.entered.send(());
                let _ = self.open.recv_timeout(Duration::from_secs(5));
                self.out.write(buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let out = Shared::default();
        let (entered, writing) = mpsc::channel();
        let (open, gate) = mpsc::channel();
        let gate = Gate {
            entered,
            open: gate,
            out: out.clone(),
        };
        let (writer, guard) = BatchWriter::spawn("test-log", gate).unwrap();
        // The thread takes the first line and blocks writing it; then the queue fills.
        writer.clone().write_all(b"first\n").unwrap();
        writing.recv_timeout(Duration::from_secs(5)).unwrap();
        let extra = 10;
        for _ in 0..QUEUE_LINES + extra {
            writer.clone().write_all(b"x\n").unwrap();
        }
        assert_eq!(writer.dropped.load(Ordering::Relaxed), extra as u64);
        // Let every write through, then flush.
        for _ in 0..1000 {
            let _ = open.send(());
        }
        drop(guard);
        let text = String::from_utf8_lossy(&out.0.lock().unwrap()).into_owned();
        assert!(text.contains("10 log lines dropped"), "no drop note");
        assert_eq!(text.matches("x\n").count(), QUEUE_LINES);
    }
}
