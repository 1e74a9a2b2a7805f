//! Waiting for a condition with a deadline, instead of sleeping.
//!
//! The helpers are `#[track_caller]` and return futures, so a timeout names the test line that
//! waited.

use std::future::Future;
use std::panic::Location;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// Long enough for a loaded two-core machine, short enough that a hung test fails visibly.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a polled condition is checked again.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Waits until `check` returns `true`, polling; panics after `timeout` naming `what`.
#[track_caller]
pub fn until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> impl Future<Output = ()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let caller = Location::caller();
    let what = what.to_owned();
    async move {
        let deadline = Instant::now() + timeout;
        loop {
            if check().await {
                return;
            }
            if Instant::now() >= deadline {
                panic!("{caller}: timed out after {timeout:?} waiting for {what}");
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

/// Waits until `check` returns `Some`, polling, and returns the value; panics after `timeout`.
#[track_caller]
pub fn until_some<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> impl Future<Output = T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let caller = Location::caller();
    let what = what.to_owned();
    async move {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if Instant::now() >= deadline {
                panic!("{caller}: timed out after {timeout:?} waiting for {what}");
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

/// Receives the next item; panics when nothing comes within `timeout` or the channel closed.
#[track_caller]
pub fn recv<T>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    timeout: Duration,
) -> impl Future<Output = T> + '_ {
    let caller = Location::caller();
    async move {
        match tokio::time::timeout(timeout, rx.recv()).await {
            Ok(Some(item)) => item,
            Ok(None) => panic!("{caller}: the channel closed while waiting"),
            Err(_) => panic!("{caller}: nothing received within {timeout:?}"),
        }
    }
}

/// Awaits `future` or panics after `timeout` naming `what`.
#[track_caller]
pub fn within<F: Future>(
    what: &str,
    timeout: Duration,
    future: F,
) -> impl Future<Output = F::Output> {
    let caller = Location::caller();
    let what = what.to_owned();
    async move {
        match tokio::time::timeout(timeout, future).await {
            Ok(value) => value,
            Err(_) => panic!("{caller}: {what} did not finish within {timeout:?}"),
        }
    }
}
