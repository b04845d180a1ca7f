//! Admission: what [`Pipeline`] does with a batch an input offers.
//!
//! For each message, in order: match it against the route table (none
//! matched: count it unrouted); if any matching route is `block`, wait for
//! room on every such route, in route order, holding what it got, and only
//! then commit the message to all of them; then add it to the drop-policy
//! routes, where it is always admitted (and perhaps dropped or the cause of
//! an eviction, counted). So a message is admitted to all of its routes or to
//! none.
//!
//! Drop-policy routes are fed in runs: clones of consecutive messages are
//! staged per route and pushed with one lock per route per batch, and always
//! before this offer waits for anything, so earlier messages reach their
//! queues first. Waiting in route order means two producers never hold room
//! the other needs, so block routes cannot deadlock.

use std::future::Future;
use std::pin::Pin;

use smallvec::SmallVec;
use tokio::time::Instant;

use super::queue::WaitError;
use super::route::Route;
use super::runtime::{Inner, Pipeline};
use super::table::Matches;
use crate::ingress::{Offered, Refusal, Sink, Wait};
use crate::message::Message;
use crate::message::request::RequestError;

impl Sink for Pipeline {
    fn offer(
        &self,
        batch: Vec<Message>,
        wait: Wait,
    ) -> Pin<Box<dyn Future<Output = Offered> + Send + '_>> {
        Box::pin(self.inner.offer(batch, wait))
    }
}

/// Past this many staged routes, flush before staging another.
const MAX_RUNS: usize = 32;

/// Clones of messages waiting to be pushed, one run per route.
struct Stage {
    runs: Vec<(u32, Vec<(Message, usize)>)>,
    /// Emptied run buffers kept for reuse within this offer.
    spare: Vec<Vec<(Message, usize)>>,
    /// Size for new run buffers: the batch length, so a run never regrows.
    run_capacity: usize,
}

impl Stage {
    fn add(
        &mut self,
        routes: &[std::sync::Arc<Route>],
        route: usize,
        message: Message,
        size: usize,
    ) {
        let id = route as u32;
        let at = match self.runs.iter().rposition(|(r, _)| *r == id) {
            Some(at) => at,
            None => {
                if self.runs.len() >= MAX_RUNS {
                    self.flush(routes);
                }
                let buf = self
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(self.run_capacity));
                self.runs.push((id, buf));
                self.runs.len() - 1
            }
        };
        self.runs[at].1.push((message, size));
    }

    fn flush(&mut self, routes: &[std::sync::Arc<Route>]) {
        for (route, mut run) in self.runs.drain(..) {
            routes[route as usize].push_run(&mut run);
            self.spare.push(run);
        }
    }
}

/// Releases reserved room if admission of a message is abandoned (timeout,
/// shutdown, or the offer future dropped).
struct Reserved<'a> {
    routes: SmallVec<[&'a Route; 4]>,
    size: usize,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        for route in self.routes.drain(..) {
            route.queue.release(self.size);
        }
    }
}

/// Answers a refused request with why.
fn refuse(message: &Message, why: Refusal) {
    if let Some(request) = &message.request {
        request.fail(match why {
            Refusal::Backpressure { .. } | Refusal::DiskFull { .. } => RequestError::Overloaded,
            Refusal::ShuttingDown => RequestError::ShuttingDown,
        });
    }
}

/// Why `route` refused a message it could not take in time.
fn refusal(err: WaitError, route: &Route) -> Refusal {
    match err {
        WaitError::Timeout { .. } if route.queue.store().is_some_and(|s| s.failing()) => {
            Refusal::DiskFull {
                retry_after: route.block_timeout(),
            }
        }
        WaitError::Timeout { .. } => Refusal::Backpressure {
            retry_after: route.block_timeout(),
        },
        WaitError::Closed { .. } => Refusal::ShuttingDown,
    }
}

impl Inner {
    pub(crate) async fn offer(&self, batch: Vec<Message>, wait: Wait) -> Offered {
        // Each block route's deadline counts from here, for the whole batch.
        let since = Instant::now();
        let Some(_active) = self.intake.enter() else {
            batch.iter().for_each(|m| refuse(m, Refusal::ShuttingDown));
            return Offered {
                admitted: 0,
                refusal: Some(Refusal::ShuttingDown),
            };
        };
        let mut result = Offered {
            admitted: batch.len(),
            refusal: None,
        };
        let mut stage = Stage {
            runs: Vec::new(),
            spare: Vec::new(),
            run_capacity: batch.len(),
        };
        // One generation for the whole offer: a reload swapping routes in
        // meanwhile does not split it.
        let generation = self.current.load_full();
        let routes = &generation.routes;
        let mut matches = Matches::new();
        let mut unrouted = 0u64;
        // Durable routes this offer admitted to: a bounded offer (HTTP)
        // answers only once they have it on disk, any other waits while
        // their disk falls behind.
        let mut durable: SmallVec<[usize; 4]> = SmallVec::new();
        let mut messages = batch.into_iter().enumerate();
        for (i, message) in messages.by_ref() {
            if self.intake.is_closed() {
                result = Offered {
                    admitted: i,
                    refusal: Some(Refusal::ShuttingDown),
                };
                refuse(&message, Refusal::ShuttingDown);
                break;
            }
            generation.table.matches(&message, &mut matches);
            if matches.is_empty() {
                unrouted += 1;
                if let Some(request) = &message.request {
                    request.fail(RequestError::NoRoute {
                        topic: message.topic.to_string(),
                    });
                }
                continue;
            }
            let size = message.size();
            for r in matches.iter() {
                if routes[r].queue.store().is_some() && !durable.contains(&r) {
                    durable.push(r);
                }
            }
            if matches.iter().any(|r| routes[r].blocks()) {
                stage.flush(routes);
                if let Err(why) =
                    admit_blocking(routes, &message, size, &matches, (wait, since)).await
                {
                    result = Offered {
                        admitted: i,
                        refusal: Some(why),
                    };
                    refuse(&message, why);
                    break;
                }
            }
            let mut dropping = matches.iter().filter(|&r| !routes[r].blocks()).peekable();
            while let Some(route) = dropping.next() {
                if dropping.peek().is_some() {
                    stage.add(routes, route, message.clone(), size);
                } else {
                    stage.add(routes, route, message, size);
                    break;
                }
            }
        }
        if let Some(why) = result.refusal {
            for (_, message) in messages {
                refuse(&message, why);
            }
        }
        stage.flush(routes);
        if unrouted > 0 {
            self.metrics.unrouted.inc_by(unrouted);
        }
        if result.admitted > 0 {
            for &r in &durable {
                if let Err(why) = settled(&routes[r], wait, since).await {
                    // Admitted and perhaps written, but not known durable:
                    // the client is told to try again (a duplicate at
                    // worst, never a loss).
                    result = Offered {
                        admitted: 0,
                        refusal: Some(why),
                    };
                    break;
                }
            }
        }
        result
    }
}

impl Pipeline {
    /// Puts `messages` straight into the queue of the route called
    /// `route`, skipping topic matching, under that route's admission: its
    /// `when_full` (a `block` route waits as `wait` says; a drop route
    /// takes them all, perhaps dropping some, counted), and on a durable
    /// route a [`Wait::Bounded`] injection answers once they are on disk.
    /// Used to replay dead letters. Counts them as offered to the route.
    ///
    /// # Errors
    /// [`super::Error::NoSuchRoute`]; refusals (a full block route, the
    /// shutdown) are in the [`Offered`].
    pub async fn inject(
        &self,
        route: &str,
        messages: Vec<Message>,
        wait: Wait,
    ) -> Result<Offered, super::Error> {
        self.inner.inject(route, messages, wait).await
    }
}

impl Inner {
    async fn inject(
        &self,
        name: &str,
        batch: Vec<Message>,
        wait: Wait,
    ) -> Result<Offered, super::Error> {
        let since = Instant::now();
        let generation = self.current.load_full();
        let Some(route) = generation.routes.iter().find(|r| r.name == name) else {
            return Err(super::Error::NoSuchRoute {
                route: name.to_owned(),
            });
        };
        let Some(_active) = self.intake.enter() else {
            return Ok(Offered {
                admitted: 0,
                refusal: Some(Refusal::ShuttingDown),
            });
        };
        let mut result = Offered {
            admitted: batch.len(),
            refusal: None,
        };
        if route.blocks() {
            for (i, message) in batch.into_iter().enumerate() {
                let size = message.size();
                if let Err(e) = route
                    .push_waiting(message, size, route.deadline(wait, since))
                    .await
                {
                    result = Offered {
                        admitted: i,
                        refusal: Some(refusal(e, route)),
                    };
                    break;
                }
            }
        } else {
            let mut run: Vec<(Message, usize)> = batch
                .into_iter()
                .map(|m| {
                    let size = m.size();
                    (m, size)
                })
                .collect();
            route.push_run(&mut run);
        }
        if result.admitted > 0
            && let Err(why) = settled(route, wait, since).await
        {
            result = Offered {
                admitted: 0,
                refusal: Some(why),
            };
        }
        Ok(result)
    }
}

/// The least time a bounded offer waits for a durable route's sync.
const MIN_DURABLE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Waits until durable `route` has on disk everything appended to it so
/// far, up to its `block_timeout` (at least [`MIN_DURABLE_WAIT`]) after
/// `since`.
async fn made_durable(route: &Route, since: Instant) -> Result<(), Refusal> {
    let Some(store) = route.queue.store() else {
        return Ok(());
    };
    let seq = store.appended();
    if store.is_durable(seq) {
        return Ok(());
    }
    let wait = route.block_timeout().max(MIN_DURABLE_WAIT);
    match tokio::time::timeout_at(since + wait, store.durable(seq)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Refusal::ShuttingDown),
        Err(_) if store.failing() => Err(Refusal::DiskFull { retry_after: wait }),
        Err(_) => Err(Refusal::Backpressure { retry_after: wait }),
    }
}

/// What an offer `(wait, since)` that admitted messages to `route` waits
/// for before it answers, if the route is durable: a bounded offer (HTTP)
/// for their sync ([`made_durable`]); a [`Wait::Durable`] one (JetStream)
/// for their sync, however long it takes; any other (a ZeroMQ input, with no
/// acknowledgement) while the route has more waiting to be written than
/// its writer takes at once ([`crate::store::Queue::keep_up`]), so it is
/// paced by the disk and what waits in memory stays bounded. A queue
/// closing meanwhile ends that wait: the messages are admitted already.
async fn settled(route: &Route, wait: Wait, since: Instant) -> Result<(), Refusal> {
    match wait {
        Wait::Bounded => made_durable(route, since).await,
        Wait::Durable => match route.queue.store() {
            // No deadline: the input does not fetch more meanwhile.
            Some(store) => store
                .durable(store.appended())
                .await
                .map_err(|_| Refusal::ShuttingDown),
            None => Ok(()),
        },
        Wait::Unbounded => {
            if let Some(store) = route.queue.store() {
                let _ = store.keep_up().await;
            }
            Ok(())
        }
    }
}

/// Admits `message` to every matching block route, or to none, waiting for
/// each until its own deadline for an offer `(wait, since)`; a refusal
/// names the first route that stayed full.
async fn admit_blocking(
    routes: &[std::sync::Arc<Route>],
    message: &Message,
    size: usize,
    matches: &Matches,
    (wait, since): (Wait, Instant),
) -> Result<(), Refusal> {
    {
        let blocking: SmallVec<[&Route; 4]> = matches
            .iter()
            .map(|r| &*routes[r])
            .filter(|r| r.blocks())
            .collect();
        let Some((last, firsts)) = blocking.split_last() else {
            return Ok(());
        };
        let mut reserved = Reserved {
            routes: SmallVec::new(),
            size,
        };
        for route in firsts {
            route
                .reserve(size, route.deadline(wait, since))
                .await
                .map_err(|e| refusal(e, route))?;
            reserved.routes.push(route);
        }
        // The last one takes the message as soon as there is room; the
        // reserved ones cannot fail after that.
        last.push_waiting(message.clone(), size, last.deadline(wait, since))
            .await
            .map_err(|e| refusal(e, last))?;
        for route in reserved.routes.drain(..) {
            route.commit(message.clone(), size);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::egress::Reject;
    use crate::metrics::Registry;
    use crate::pipeline::testing::{
        DEADLINE, FakeOutput, Mode, assert_conserved, msg, msgs, spec, start, wait_idle,
        wait_snapshot,
    };
    use crate::pipeline::{QueueSpec, RouteSnapshot, WhenFull};

    fn all_admitted(n: usize) -> Offered {
        Offered {
            admitted: n,
            refusal: None,
        }
    }

    /// m0 goes in flight to the stalled output, then m1..m9 arrive in one
    /// batch at a route of capacity 4: 3 more fit. Under `block`, a bounded
    /// offer waits 2s.
    async fn fill_against_stalled(when_full: WhenFull) -> (Pipeline, Arc<FakeOutput>, Registry) {
        let out = FakeOutput::stalled("out");
        let mut s = spec("r", "t.>", 4, when_full, &["out"]);
        s.queue.block_timeout = Duration::from_secs(2);
        let (p, reg) = start(vec![s], &[&out]);
        assert_eq!(
            p.offer(vec![msg("t.x", 0)], Wait::Unbounded).await,
            all_admitted(1)
        );
        out.wait_arrived(1).await;
        (p, out, reg)
    }

    /// The exported series agree with the snapshot (conservation holds on
    /// `/metrics` too).
    fn assert_metrics(reg: &Registry, route: &RouteSnapshot) {
        let text = reg.encode();
        let name = &route.name;
        let d = &route.dropped;
        for line in [
            format!(
                "switchyard_route_offered_total{{route=\"{name}\"}} {}",
                route.offered
            ),
            format!(
                "switchyard_route_messages_total{{outcome=\"delivered\",route=\"{name}\"}} {}",
                route.delivered
            ),
            format!(
                "switchyard_route_messages_total{{outcome=\"dropped\",route=\"{name}\"}} {}",
                d.total
            ),
            format!(
                "switchyard_route_dropped_total{{reason=\"queue_full\",route=\"{name}\"}} {}",
                d.queue_full
            ),
            format!(
                "switchyard_route_queue_depth{{route=\"{name}\"}} {}",
                route.queue.depth
            ),
            format!(
                "switchyard_route_queue_bytes{{route=\"{name}\"}} {}",
                route.queue.bytes
            ),
            format!(
                "switchyard_route_backpressure_events_total{{route=\"{name}\"}} {}",
                route.backpressure_events
            ),
        ] {
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
    }

    #[tokio::test]
    async fn drop_newest_against_a_stalled_output() {
        let (p, out, reg) = fill_against_stalled(WhenFull::DropNewest).await;
        assert_eq!(
            p.offer(msgs("t.x", 1..10), Wait::Unbounded).await,
            all_admitted(9)
        );
        let snap = p.snapshot();
        let r = &snap.routes[0];
        assert_eq!((r.offered, r.queue.depth, r.queue.in_flight), (10, 4, 1));
        assert_eq!((r.dropped.queue_full, r.dropped.total), (6, 6));
        assert_eq!(r.backpressure_events, 6);
        assert_conserved(&snap);
        assert_metrics(&reg, r);
        out.release();
        let snap = wait_idle(&p).await;
        assert_eq!(out.taken(), vec![0, 1, 2, 3]);
        assert_eq!(snap.routes[0].delivered, 4);
        assert_conserved(&snap);
        // The gauges follow the queue right after it empties.
        let snap =
            wait_snapshot(&p, |_| reg.encode().contains(r#"queue_depth{route="r"} 0"#)).await;
        assert_metrics(&reg, &snap.routes[0]);
    }

    #[tokio::test]
    async fn drop_oldest_against_a_stalled_output() {
        let (p, out, reg) = fill_against_stalled(WhenFull::DropOldest).await;
        assert_eq!(
            p.offer(msgs("t.x", 1..10), Wait::Unbounded).await,
            all_admitted(9)
        );
        let snap = p.snapshot();
        let r = &snap.routes[0];
        assert_eq!((r.offered, r.queue.depth, r.dropped.queue_full), (10, 4, 6));
        assert_conserved(&snap);
        assert_metrics(&reg, r);
        out.release();
        let snap = wait_idle(&p).await;
        assert_eq!(
            out.taken(),
            vec![0, 7, 8, 9],
            "the in-flight one and the newest three"
        );
        assert_conserved(&snap);
    }

    #[tokio::test]
    async fn block_holds_the_producer_back_with_bounded_memory() {
        let out = FakeOutput::stalled("out");
        let mut s = spec("r", "t.>", 8, WhenFull::Block, &["out"]);
        s.queue.max_batch = 4;
        let (p, _reg) = start(vec![s], &[&out]);
        let producer = {
            let p = p.clone();
            tokio::spawn(async move {
                let mut admitted = 0;
                for chunk in 0..25u8 {
                    let batch = msgs("t.x", chunk * 10..chunk * 10 + 10);
                    let offered = p.offer(batch, Wait::Unbounded).await;
                    assert_eq!(offered.refusal, None);
                    admitted += offered.admitted;
                }
                admitted
            })
        };
        // The producer is held back: the queue is full and it waits.
        let snap = wait_snapshot(&p, |s| s.routes[0].backpressure_events >= 1).await;
        let r = &snap.routes[0];
        assert_eq!(r.queue.depth, 8, "bounded: {r:?}");
        assert!(r.queue.bytes <= 8 * 11);
        assert!(!producer.is_finished());
        assert_eq!(r.dropped.total, 0);
        // Released, everything flows; the depth never passes the bound.
        out.release();
        let mut max_depth = 0;
        while !producer.is_finished() {
            max_depth = max_depth.max(p.snapshot().routes[0].queue.depth);
            tokio::task::yield_now().await;
        }
        assert!(max_depth <= 8);
        let admitted = tokio::time::timeout(DEADLINE, producer)
            .await
            .expect("producer finishes")
            .expect("join");
        assert_eq!(admitted, 250);
        let snap = wait_idle(&p).await;
        let r = &snap.routes[0];
        assert_eq!((r.offered, r.delivered, r.dropped.total), (250, 250, 0));
        assert_eq!(out.taken(), (0..250).map(|n| n as u8).collect::<Vec<_>>());
        assert!(r.blocked_seconds >= 0.0);
        assert_conserved(&snap);
    }

    #[tokio::test(start_paused = true)]
    async fn block_refuses_past_the_deadline() {
        let (p, out, reg) = fill_against_stalled(WhenFull::Block).await;
        let offered = p.offer(msgs("t.x", 1..10), Wait::Bounded).await;
        assert_eq!(
            offered,
            Offered {
                admitted: 3,
                refusal: Some(Refusal::Backpressure {
                    retry_after: Duration::from_secs(2)
                })
            }
        );
        let snap = p.snapshot();
        let r = &snap.routes[0];
        assert_eq!((r.offered, r.queue.depth, r.dropped.total), (4, 4, 0));
        assert_eq!(r.backpressure_events, 1);
        assert!(r.blocked_seconds >= 2.0);
        assert_conserved(&snap);
        assert_metrics(&reg, r);
        out.release();
        let snap = wait_idle(&p).await;
        assert_eq!(out.taken(), vec![0, 1, 2, 3]);
        assert_conserved(&snap);
    }

    #[tokio::test(start_paused = true)]
    async fn each_block_route_gives_up_at_its_own_deadline() {
        let fast_out = FakeOutput::stalled("fast-out");
        let slow_out = FakeOutput::stalled("slow-out");
        let mut fast = spec("fast", "fast.>", 1, WhenFull::Block, &["fast-out"]);
        fast.queue.block_timeout = Duration::from_millis(100);
        let mut slow = spec("slow", "slow.>", 1, WhenFull::Block, &["slow-out"]);
        slow.queue.block_timeout = Duration::from_secs(5);
        let (p, _reg) = start(vec![fast, slow], &[&fast_out, &slow_out]);
        // One message in flight fills each route.
        assert_eq!(
            p.offer(vec![msg("fast.x", 0), msg("slow.x", 1)], Wait::Unbounded)
                .await,
            all_admitted(2)
        );
        let backpressure = |retry_after| Offered {
            admitted: 0,
            refusal: Some(Refusal::Backpressure { retry_after }),
        };
        // Only the fast route is matched: its 100ms, not the slow route's 5s.
        let started = Instant::now();
        assert_eq!(
            p.offer(vec![msg("fast.x", 2)], Wait::Bounded).await,
            backpressure(Duration::from_millis(100))
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(100) && waited < Duration::from_secs(1),
            "{waited:?}"
        );
        // The slow route keeps its own 5s.
        let started = Instant::now();
        assert_eq!(
            p.offer(vec![msg("slow.x", 3)], Wait::Bounded).await,
            backpressure(Duration::from_secs(5))
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
            "{waited:?}"
        );
        // An unbounded offer (a ZeroMQ input) is still waiting long after.
        let p2 = p.clone();
        let waiting =
            tokio::spawn(async move { p2.offer(vec![msg("fast.x", 4)], Wait::Unbounded).await });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiting.is_finished());
        fast_out.release();
        let offered = tokio::time::timeout(DEADLINE, waiting)
            .await
            .expect("admitted once there is room")
            .expect("join");
        assert_eq!(offered, all_admitted(1));
        slow_out.release();
        let snap = wait_idle(&p).await;
        assert_conserved(&snap);
    }

    #[tokio::test]
    async fn one_message_three_routes_shares_the_payload() {
        let outs = [
            FakeOutput::new("a"),
            FakeOutput::new("b"),
            FakeOutput::new("c"),
        ];
        let (p, _reg) = start(
            vec![
                spec("all", "plant.>", 10, WhenFull::DropOldest, &["a"]),
                spec("temps", "plant.*.temp", 10, WhenFull::Block, &["b"]),
                spec(
                    "line1",
                    "plant.line1.temp",
                    10,
                    WhenFull::DropNewest,
                    &["c"],
                ),
                spec("other", "other.>", 10, WhenFull::DropNewest, &["c"]),
            ],
            &[&outs[0], &outs[1], &outs[2]],
        );
        let m = msg("plant.line1.temp", 7);
        let payload = m.payload.as_ptr();
        assert_eq!(p.offer(vec![m], Wait::Unbounded).await, all_admitted(1));
        let snap = wait_idle(&p).await;
        for out in &outs {
            let got = out.messages();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].payload.as_ptr(), payload, "clones share the payload");
        }
        let counts: Vec<_> = snap
            .routes
            .iter()
            .map(|r| (r.offered, r.delivered))
            .collect();
        assert_eq!(counts, vec![(1, 1), (1, 1), (1, 1), (0, 0)]);
        assert_eq!(snap.unrouted, 0);
        assert_conserved(&snap);
    }

    #[tokio::test]
    async fn attribute_conditions_and_unrouted() {
        let out = FakeOutput::new("out");
        let mut site = spec("site42", "t.>", 10, WhenFull::DropNewest, &["out"]);
        site.attributes.insert("site".into(), "42".into());
        let (p, _reg) = start(vec![site], &[&out]);
        let mut yes = msg("t.x", 1);
        yes.attributes.insert("site".into(), "42".into());
        let mut no = msg("t.x", 2);
        no.attributes.insert("site".into(), "43".into());
        let batch = vec![yes, no, msg("t.x", 3), msg("u.x", 4)];
        assert_eq!(p.offer(batch, Wait::Unbounded).await, all_admitted(4));
        let snap = wait_idle(&p).await;
        assert_eq!(out.taken(), vec![1]);
        assert_eq!(snap.unrouted, 3);
        assert_eq!(snap.routes[0].offered, 1);
        assert_conserved(&snap);
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_enters_all_its_block_routes_or_none() {
        let free = FakeOutput::new("free");
        let stuck = FakeOutput::stalled("stuck");
        let (p, _reg) = start(
            vec![
                spec("a", "t.>", 2, WhenFull::Block, &["free"]),
                spec("b", "t.>", 1, WhenFull::Block, &["stuck"]),
                spec("c", "t.>", 10, WhenFull::DropNewest, &["free"]),
            ],
            &[&free, &stuck],
        );
        assert_eq!(
            p.offer(vec![msg("t.x", 0)], Wait::Unbounded).await,
            all_admitted(1)
        );
        stuck.wait_arrived(1).await;
        // Both block routes hold the offer for the default 1s.
        let offered = p.offer(msgs("t.x", 1..3), Wait::Bounded).await;
        assert_eq!(offered.admitted, 0);
        assert_eq!(
            offered.refusal,
            Some(Refusal::Backpressure {
                retry_after: QueueSpec::DEFAULT_BLOCK_TIMEOUT
            })
        );
        let snap = wait_snapshot(&p, |s| s.routes[0].queue.depth == 0).await;
        let offered: Vec<_> = snap.routes.iter().map(|r| r.offered).collect();
        assert_eq!(offered, vec![1, 1, 1], "m1 went nowhere");
        // Route a's reservation was given back: it still takes two at once.
        stuck.release();
        assert_eq!(
            p.offer(msgs("t.x", 1..3), Wait::Unbounded).await,
            all_admitted(2)
        );
        let snap = wait_idle(&p).await;
        assert_eq!(stuck.taken(), vec![0, 1, 2]);
        assert_eq!(free.taken().len(), 6);
        assert_conserved(&snap);
    }

    #[tokio::test]
    async fn output_outcomes_are_exact_per_message() {
        let odd = FakeOutput::with("odd", Mode::RejectOdd(Reject::NoSubscriber), true);
        let all = FakeOutput::new("all");
        let bad = FakeOutput::with("bad", Mode::Fail, true);
        let (p, reg) = start(
            vec![
                spec("two", "t.>", 100, WhenFull::DropNewest, &["odd", "all"]),
                spec("fail", "t.>", 100, WhenFull::DropNewest, &["bad"]),
                spec(
                    "fail-first",
                    "t.>",
                    100,
                    WhenFull::DropNewest,
                    &["bad", "odd"],
                ),
            ],
            &[&odd, &all, &bad],
        );
        assert_eq!(
            p.offer(msgs("t.x", 0..10), Wait::Unbounded).await,
            all_admitted(10)
        );
        let snap = wait_idle(&p).await;
        let [two, fail, first] = &snap.routes[..] else {
            panic!("three routes")
        };
        assert_eq!((two.delivered, two.dropped.no_subscriber), (5, 5));
        assert_eq!((fail.delivered, fail.dropped.output_error), (0, 10));
        assert_eq!(
            (first.dropped.output_error, first.dropped.no_subscriber),
            (10, 0),
            "the first refusing output names the reason"
        );
        assert_eq!(all.taken().len(), 10, "the other output still got all");
        assert_conserved(&snap);
        let text = reg.encode();
        for line in [
            r#"switchyard_route_dropped_total{reason="no_subscriber",route="two"} 5"#,
            r#"switchyard_route_messages_total{outcome="delivered",route="two"} 5"#,
            r#"switchyard_route_messages_total{outcome="dropped",route="two"} 5"#,
            r#"switchyard_route_offered_total{route="two"} 10"#,
            r#"switchyard_route_queue_capacity{route="two"} 100"#,
            r#"switchyard_route_latency_seconds_count{route="two"} 5"#,
            "switchyard_pipeline_unrouted_total 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[tokio::test]
    async fn byte_bounds_apply() {
        let out = FakeOutput::stalled("out");
        let mut s = spec("r", "t.>", 100, WhenFull::DropNewest, &["out"]);
        // Each test message is 3 + 8 = 11 bytes; room for 3.
        s.queue = QueueSpec::new(100, 33, WhenFull::DropNewest);
        let (p, _reg) = start(vec![s], &[&out]);
        assert_eq!(
            p.offer(msgs("t.x", 0..10), Wait::Unbounded).await,
            all_admitted(10)
        );
        let snap = p.snapshot();
        assert_eq!(
            (snap.routes[0].queue.depth, snap.routes[0].queue.bytes),
            (3, 33)
        );
        assert_eq!(snap.routes[0].dropped.queue_full, 7);
        assert_conserved(&snap);
    }
}
