//! Polling a real condition with a deadline: the only way tests wait.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// How often [`wait_until`] re-checks its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What a condition polled by [`wait_until`] may return.
///
/// * `bool`: `true` when met.
/// * `Option<T>`: `Some(value)` when met; the value is returned.
/// * `anyhow::Result<bool>` / `anyhow::Result<Option<T>>`: as above, and an
///   error counts as "not yet" (a node that is restarting refuses connections)
///   and is reported if the deadline passes.
pub trait Condition {
    type Output;
    /// `Ok(Some(_))` when met, `Ok(None)` when not yet, `Err(why)` when not yet
    /// because of an error worth reporting.
    fn into_outcome(self) -> Result<Option<Self::Output>, String>;
}

impl Condition for bool {
    type Output = ();
    fn into_outcome(self) -> Result<Option<()>, String> {
        Ok(self.then_some(()))
    }
}

impl<T> Condition for Option<T> {
    type Output = T;
    fn into_outcome(self) -> Result<Option<T>, String> {
        Ok(self)
    }
}

impl Condition for anyhow::Result<bool> {
    type Output = ();
    fn into_outcome(self) -> Result<Option<()>, String> {
        self.map(|met| met.then_some(()))
            .map_err(|error| format!("{error:#}"))
    }
}

impl<T> Condition for anyhow::Result<Option<T>> {
    type Output = T;
    fn into_outcome(self) -> Result<Option<T>, String> {
        self.map_err(|error| format!("{error:#}"))
    }
}

/// Polls `condition` every 50 ms until it is met or `timeout` has passed.
///
/// Returns the condition's value (see [`Condition`]); on timeout, an error
/// naming `what` and the last error the condition returned, if any.
pub async fn wait_until<F, Fut>(
    timeout: Duration,
    what: impl Display,
    mut condition: F,
) -> anyhow::Result<<Fut::Output as Condition>::Output>
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Condition,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match condition().await.into_outcome() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        if Instant::now() >= deadline {
            return Err(match last_error {
                Some(error) => {
                    anyhow::anyhow!(
                        "timed out after {timeout:?} waiting until {what}; last error: {error}"
                    )
                }
                None => anyhow::anyhow!("timed out after {timeout:?} waiting until {what}"),
            });
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - Instant::now())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_the_value_once_the_condition_holds() {
        let calls = AtomicU32::new(0);
        let value = wait_until(Duration::from_secs(5), "the third call", || async {
            let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
            (call >= 3).then_some(call)
        })
        .await
        .expect("the condition holds on the third call");
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn a_timeout_names_the_condition_and_the_last_error() {
        let error = wait_until(Duration::from_millis(120), "the moon is blue", || async {
            anyhow::Result::<bool>::Err(anyhow::anyhow!("connection refused"))
        })
        .await
        .expect_err("the condition never holds");
        let message = error.to_string();
        assert!(message.contains("the moon is blue"), "{message}");
        assert!(message.contains("connection refused"), "{message}");
    }

    #[tokio::test]
    async fn a_bool_condition_that_never_holds_times_out() {
        let error = wait_until(Duration::from_millis(60), "false becomes true", || async {
            false
        })
        .await
        .expect_err("never true");
        assert!(error.to_string().contains("false becomes true"));
    }
}
