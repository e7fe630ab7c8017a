//! Which queue a published message goes to: round-robin over the writable
//! queues the backend routes the topic to (as RocketMQ producers do), with
//! each topic's route kept a few seconds so a publish does not cost a
//! route look-up. A failed look-up (an unknown topic) is not kept: the
//! publish is refused with the backend's answer.

use meridian_face::{Backend, Caller, Refusal};
use meridian_proto::rocketmq::v2::{Permission, Resource};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a topic's route is used before it is looked up again.
const ROUTE_TTL: Duration = Duration::from_secs(5);
/// Most topics whose routes are kept.
const MAX_TOPICS: usize = 4096;

struct Route {
    queue_ids: Vec<i32>,
    fetched_at: Instant,
    next: AtomicUsize,
}

#[derive(Default)]
pub(crate) struct QueuePicker {
    routes: Mutex<HashMap<String, Arc<Route>>>,
}

impl QueuePicker {
    /// The queue for the next message to `topic`.
    pub async fn pick(
        &self,
        backend: &dyn Backend,
        caller: &Caller,
        topic: &Resource,
    ) -> Result<i32, Refusal> {
        let cached = self
            .routes
            .lock()
            .get(&topic.name)
            .filter(|route| route.fetched_at.elapsed() < ROUTE_TTL)
            .cloned();
        let route = match cached {
            Some(route) => route,
            None => {
                let queues = backend.route(caller, "SendMessage", Some(topic)).await?;
                let queue_ids = queues
                    .iter()
                    .filter(|queue| {
                        matches!(
                            queue.permission(),
                            Permission::Write | Permission::ReadWrite
                        )
                    })
                    .map(|queue| queue.id)
                    .collect();
                let route = Arc::new(Route {
                    queue_ids,
                    fetched_at: Instant::now(),
                    next: AtomicUsize::new(0),
                });
                let mut routes = self.routes.lock();
                if routes.len() >= MAX_TOPICS {
                    routes.retain(|_, route| route.fetched_at.elapsed() < ROUTE_TTL);
                    if routes.len() >= MAX_TOPICS {
                        routes.clear();
                    }
                }
                routes.insert(topic.name.clone(), route.clone());
                route
            }
        };
        if route.queue_ids.is_empty() {
            // No writable queue named: let the backend decide (it refuses
            // or places the message).
            return Ok(0);
        }
        let turn = route.next.fetch_add(1, Ordering::Relaxed);
        Ok(route.queue_ids[turn % route.queue_ids.len()])
    }
}
