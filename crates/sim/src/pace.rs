//! Publishing on a schedule, shared by `sim publish` and `sim redis-publish`: message `i` leaves
//! at `i / rate` seconds whatever became of the earlier ones (open loop), as long as fewer than
//! `in_flight` are unanswered; with `in_flight` 1 each waits for the previous answer (closed
//! loop). It measures each round trip and how far behind its schedule the latest send left.
//!
//! Why both: a closed-loop publisher measures the server's answer time, and when the server is
//! busy fanning out it sends at most one message per answer, so it never lets the server see
//! several messages at once (Redis then writes each to every subscriber with its own syscall).
//! A real match's events come on the match's schedule, not the server's: that is the open loop.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use super::report::{Hist, Percentiles};
use super::SimError;

/// One request: its answer, or why there is none.
pub type Request<'a, T> = Pin<Box<dyn Future<Output = Result<T, SimError>> + Send + 'a>>;

/// What a paced run did.
#[derive(Debug)]
pub struct Paced {
    /// From the first send to the last answer.
    pub elapsed: Duration,
    /// Round trips, send to answer (µs).
    pub round_trips: Hist,
    /// How late the latest send left against its schedule (0: every message on time).
    pub behind: Duration,
}

impl Paced {
    /// Round trips in milliseconds.
    pub fn round_trip_ms(&self) -> Percentiles {
        self.round_trips.percentiles(1000.0)
    }
}

struct Flight<'a, T> {
    index: u64,
    sent: Instant,
    request: Request<'a, T>,
}

/// Sends `count` requests made by `make(i)` (`i` from 0) at `per_s` a second, at most
/// `in_flight` unanswered, and hands each answer to `answered(i, answer)`. The first error (of
/// a request or of `answered`) ends the run.
///
/// Requests are polled oldest first, so a request never starts (is written to its connection)
/// before an older one: on one connection they leave in the order they were made.
pub async fn at_rate<'a, T>(
    count: u64,
    per_s: f64,
    in_flight: usize,
    mut make: impl FnMut(u64) -> Request<'a, T>,
    mut answered: impl FnMut(u64, T) -> Result<(), SimError>,
) -> Result<Paced, SimError> {
    if in_flight == 0 {
        return Err(SimError::Usage("--in-flight must be at least 1".into()));
    }
    let start = Instant::now();
    let mut flights: VecDeque<Flight<'a, T>> = VecDeque::with_capacity(in_flight.min(1024));
    let (mut next, mut behind) = (0u64, Duration::ZERO);
    let mut round_trips = Hist::default();
    while next < count || !flights.is_empty() {
        let due = start + Duration::from_secs_f64(next as f64 / per_s);
        let may_send = next < count && flights.len() < in_flight;
        tokio::select! {
            // Answers first: a freed slot counts before the next send is considered.
            biased;
            (index, took, answer) = std::future::poll_fn(|cx| oldest_first(&mut flights, cx)),
                if !flights.is_empty() =>
            {
                round_trips.record(took.as_micros() as u64);
                answered(index, answer?)?;
            }
            _ = tokio::time::sleep_until(due), if may_send => {
                let now = Instant::now();
                behind = behind.max(now.saturating_duration_since(due));
                flights.push_back(Flight { index: next, sent: now, request: make(next) });
                next += 1;
            }
        }
    }
    Ok(Paced { elapsed: start.elapsed(), round_trips, behind })
}

/// Polls the requests in the order they were made; the first that is done leaves the queue.
fn oldest_first<T>(
    flights: &mut VecDeque<Flight<'_, T>>,
    cx: &mut Context<'_>,
) -> Poll<(u64, Duration, Result<T, SimError>)> {
    for i in 0..flights.len() {
        if let Poll::Ready(answer) = flights[i].request.as_mut().poll(cx) {
            if let Some(f) = flights.remove(i) {
                return Poll::Ready((f.index, f.sent.elapsed(), answer));
            }
        }
    }
    Poll::Pending
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A server that answers after `delay`, recording when each request started.
    fn request(
        i: u64,
        delay: Duration,
        log: &Arc<Mutex<Vec<(u64, Instant)>>>,
    ) -> Request<'static, u64> {
        let log = log.clone();
        Box::pin(async move {
            log.lock().unwrap().push((i, Instant::now()));
            tokio::time::sleep(delay).await;
            Ok(i * 10)
        })
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_sends_on_schedule_while_answers_are_slow() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut answers = Vec::new();
        // 20 a second, each answered after 300 ms: 6 or 7 in flight at a time.
        let paced = at_rate(
            20,
            20.0,
            64,
            |i| request(i, Duration::from_millis(300), &log),
            |i, a| {
                answers.push((i, a));
                Ok(())
            },
        )
        .await
        .unwrap();
        let log = log.lock().unwrap();
        let order: Vec<u64> = log.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, (0..20).collect::<Vec<_>>(), "started in order");
        let t0 = log[0].1;
        assert_eq!(log[19].1 - t0, Duration::from_millis(950), "on schedule");
        assert_eq!(paced.behind, Duration::ZERO);
        assert_eq!(paced.elapsed, Duration::from_millis(1250));
        assert_eq!(answers.len(), 20);
        assert!(answers.iter().all(|(i, a)| *a == i * 10));
        assert_eq!(paced.round_trip_ms().count, 20);
        assert!((paced.round_trip_ms().p50 - 300.0).abs() < 1.0, "{:?}", paced.round_trip_ms());
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_waits_for_each_answer_and_falls_behind() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let paced =
            at_rate(10, 20.0, 1, |i| request(i, Duration::from_millis(100), &log), |_, _| Ok(()))
                .await
                .unwrap();
        let log = log.lock().unwrap();
        let t0 = log[0].1;
        // One every 100 ms (the answer time), not every 50 ms.
        assert_eq!(log[9].1 - t0, Duration::from_millis(900));
        assert_eq!(paced.behind, Duration::from_millis(450));
        assert_eq!(paced.elapsed, Duration::from_millis(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_bounds_the_open_loop_and_errors_end_the_run() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let paced =
            at_rate(8, 100.0, 2, |i| request(i, Duration::from_millis(100), &log), |_, _| Ok(()))
                .await
                .unwrap();
        // Two at a time, 100 ms each: the 8th leaves at 310 ms, when the 6th is answered.
        assert_eq!(paced.elapsed, Duration::from_millis(410));
        let failing = at_rate(
            5,
            100.0,
            4,
            |i| -> Request<'static, u64> {
                Box::pin(async move {
                    if i == 2 {
                        Err(SimError::Server("refused".into()))
                    } else {
                        Ok(i)
                    }
                })
            },
            |_, _| Ok(()),
        )
        .await;
        assert!(matches!(failing, Err(SimError::Server(_))));
        assert!(at_rate(1, 1.0, 0, |i| request(i, Duration::ZERO, &log), |_, _| Ok(()))
            .await
            .is_err());
    }
}
