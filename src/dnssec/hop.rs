//! The `DnsHandle` hickory's validator sends its queries through. It owns no sockets: each
//! request is handed, through a per-query channel found in a task-local, to the query's
//! own task, which answers it with splitdns's routing, cache and failover loop
//! (`super::serve`). Outside such a task every request fails at once.

use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use futures_util::stream::{self, Stream};
use hickory_net::xfer::DnsHandle;
use hickory_net::NetError;
use hickory_proto::op::{DnsRequest, DnsResponse};
use tokio::sync::{mpsc, oneshot};

/// One request waiting for the query's task.
pub(super) struct Ask {
    pub(super) request: DnsRequest,
    pub(super) reply: oneshot::Sender<Result<DnsResponse, NetError>>,
}

/// The per-query context: where requests go, and how many may still be sent.
#[derive(Clone)]
pub(super) struct HopCtx {
    pub(super) tx: mpsc::UnboundedSender<Ask>,
    pub(super) budget: Arc<AtomicU16>,
}

tokio::task_local! {
    pub(super) static HOP: HopCtx;
}

/// The handle under `DnssecDnsHandle`. Stateless; see the module doc.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Hop;

type Answer = Pin<Box<dyn Stream<Item = Result<DnsResponse, NetError>> + Send>>;

fn fail(why: &'static str) -> Answer {
    Box::pin(stream::once(std::future::ready(Err(NetError::from(why)))))
}

impl DnsHandle for Hop {
    type Response = Answer;
    type Runtime = super::runtime::Runtime;

    fn send(&self, request: DnsRequest) -> Self::Response {
        let (reply, rx) = oneshot::channel();
        let sent = HOP.try_with(|c| {
            // Every request costs one unit of the query's budget; at zero, fail (bounds the
            // work one query can cause, whatever the zone data says).
            let left = c
                .budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1));
            if left.is_err() {
                return Err("too many chain lookups for one query");
            }
            c.tx.send(Ask { request, reply })
                .map_err(|_| "the query finished")
        });
        match sent {
            Ok(Ok(())) => Box::pin(stream::once(async move {
                rx.await
                    .unwrap_or_else(|_| Err(NetError::from("chain lookup abandoned")))
            })),
            Ok(Err(why)) => fail(why),
            Err(_) => fail("no query context for a chain lookup"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use hickory_proto::op::{DnsRequestOptions, Query};
    use hickory_proto::rr::{Name, RecordType};

    fn ask() -> DnsRequest {
        DnsRequest::from_query(
            Query::query(Name::root(), RecordType::DNSKEY),
            DnsRequestOptions::default(),
        )
    }

    #[tokio::test]
    async fn outside_a_query_every_request_fails() {
        let r = Hop.send(ask()).next().await;
        assert!(matches!(r, Some(Err(_))));
    }

    #[tokio::test]
    async fn the_budget_bounds_the_requests_of_one_query() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ctx = HopCtx {
            tx,
            budget: Arc::new(AtomicU16::new(2)),
        };
        let sent = HOP
            .scope(ctx, async {
                let mut failed = 0;
                for _ in 0..5 {
                    // Requests within the budget are queued (their answer never comes
                    // here: the stream is dropped); the rest fail at once.
                    let mut s = Hop.send(ask());
                    if let Some(Some(Err(_))) = futures_util::FutureExt::now_or_never(s.next()) {
                        failed += 1;
                    }
                }
                failed
            })
            .await;
        assert_eq!(sent, 3, "5 requests, budget 2: 3 refused");
        let mut queued = 0;
        while rx.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, 2);
    }
}
