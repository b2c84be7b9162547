//! timer: the timers a connection keeps and re-arms for each wait (the next request head, a
//! body, the backend's response head), instead of one made and cancelled per wait. It owns no
//! limit and decides no timeout: callers pass the deadline and act on `None`.
//!
//! Why: re-arming a kept tokio timer to a later deadline is an atomic store, and tokio files it
//! again only when the earlier deadline comes round; a timer made for a wait is filed in the
//! driver's wheel and taken out again, under the driver's lock each time (callgrind: 350–500
//! instructions a wait). A wait that ends first leaves its timer armed: at worst that wakes the
//! connection once, for nothing, when the old deadline comes.
//!
//! A kept timer belongs to one connection's task, so it is always polled on the runtime that
//! made it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::time::Sleep;

/// A timer to keep, armed by the first [`until`] or [`within`] that has to wait on it.
pub fn kept() -> Sleep {
    // Filed nowhere until armed.
    tokio::time::sleep(Duration::ZERO)
}

/// Waits on `timer` until `deadline`; arms it only when first polled, so a wait that another
/// branch ends at once touches no timer.
pub async fn until(mut timer: Pin<&mut Sleep>, deadline: Instant) {
    timer.as_mut().reset(deadline.into());
    timer.await
}

/// Runs `work` until `deadline` on `timer`: `None` when the deadline came first. `work` is
/// polled first, so work done at once arms no timer.
pub fn within<F: Future>(timer: Pin<&mut Sleep>, deadline: Instant, work: F) -> Within<'_, F> {
    Within {
        work,
        timer,
        deadline,
        armed: false,
    }
}

pin_project_lite::pin_project! {
    /// The future of [`within`]: a plain struct rather than an `async fn` and `select!`, which
    /// moved `work` (a backend exchange's whole state) three times more on each request.
    pub struct Within<'t, F> {
        #[pin]
        work: F,
        timer: Pin<&'t mut Sleep>,
        deadline: Instant,
        armed: bool,
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(done) = this.work.poll(cx) {
            return Poll::Ready(Some(done));
        }
        if !*this.armed {
            *this.armed = true;
            this.timer.as_mut().reset((*this.deadline).into());
        }
        this.timer.as_mut().poll(cx).map(|()| None)
    }
}

/// A kept timer on the heap, lent to one HTTP/2 stream at a time (see [`Spares`]).
pub struct StreamTimer(Pin<Box<Sleep>>);

impl StreamTimer {
    pub fn as_mut(&mut self) -> Pin<&mut Sleep> {
        self.0.as_mut()
    }
}

/// An HTTP/2 connection's kept timers for its streams' waits on a backend: a stream takes one
/// when it starts and hands it back when it ends, so a connection keeps as many as it has had
/// streams at once, up to [`MAX_SPARES`].
#[derive(Default)]
pub struct Spares(Vec<StreamTimer>);

/// Spare timers an HTTP/2 connection keeps at most (a timer is ~120 bytes): a connection that
/// once had 200 streams at once does not keep 200 timers for its whole life.
pub const MAX_SPARES: usize = 32;

impl Spares {
    /// A spare timer, or a new one.
    pub fn take(&mut self) -> StreamTimer {
        self.0
            .pop()
            .unwrap_or_else(|| StreamTimer(Box::pin(kept())))
    }

    /// Keeps `timer` for the next stream.
    pub fn give(&mut self, timer: StreamTimer) {
        if self.0.len() < MAX_SPARES {
            self.0.push(timer);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::{pending, ready};
    use std::pin::pin;

    use super::*;

    const STEP: Duration = Duration::from_millis(60);

    /// Runs a wait on `timer` that never finishes, with a deadline `after` from now: the time
    /// it took to time out.
    async fn timed_out_after(timer: Pin<&mut Sleep>, after: Duration) -> Duration {
        let started = Instant::now();
        let outcome = within(timer, started + after, pending::<()>()).await;
        assert_eq!(outcome, None);
        started.elapsed()
    }

    #[tokio::test]
    async fn one_kept_timer_times_each_wait_from_its_own_deadline() {
        let mut timer = pin!(kept());
        // Work done at once is not timed, even with a deadline already past.
        assert_eq!(
            within(timer.as_mut(), Instant::now(), ready(7)).await,
            Some(7)
        );
        // A wait that ends first, then waits with later deadlines (tokio's cheap re-arm), then
        // one that fired, then an earlier deadline than the one armed last.
        let far = Instant::now() + 10 * STEP;
        let quick = within(timer.as_mut(), far, tokio::time::sleep(STEP / 4)).await;
        assert_eq!(quick, Some(()));
        for after in [2 * STEP, STEP] {
            let took = timed_out_after(timer.as_mut(), after).await;
            assert!(
                took >= after && took < after + 10 * STEP,
                "{took:?} for {after:?}"
            );
        }
        // Armed far ahead and left armed (the work ended first), then re-armed to a nearer
        // deadline.
        let _ = within(
            timer.as_mut(),
            Instant::now() + 100 * STEP,
            tokio::time::sleep(STEP / 4),
        )
        .await;
        let took = timed_out_after(timer.as_mut(), STEP).await;
        assert!(took >= STEP && took < 10 * STEP, "{took:?}");
    }

    #[tokio::test]
    async fn a_connection_keeps_at_most_max_spares_timers() {
        let mut spares = Spares::default();
        let lent: Vec<_> = (0..MAX_SPARES + 8).map(|_| spares.take()).collect();
        for timer in lent {
            spares.give(timer);
        }
        assert_eq!(spares.0.len(), MAX_SPARES);
    }
}
