//! In-process lifecycle: `app::run` returns `Ok` soon after its shutdown future resolves,
//! answers queries already in flight first, and has written every event by then.

use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::client::{self, query, rdata_strings};
use crate::daemon::{bounded, zone, Daemon, NO_CACHE};
use crate::fake::{public_table, Behaviour, Fake};

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn shutdown_drains_in_flight_queries() {
    bounded(LIMIT, async {
        let slow = Fake::start(Behaviour::Delay(Duration::from_millis(500)), public_table()).await;
        let d = Daemon::start(&format!(
            "{NO_CACHE}{}",
            zone(".", &[&slow], "timeout_ms = 2000")
        ))
        .await;
        let addr = d.udp;
        let in_flight = tokio::spawn(async move {
            client::udp(addr, &query("www.example.com.", RecordType::A)).await
        });
        slow.wait_until_asked(Duration::from_secs(5)).await;
        let all = d.stop_within(Duration::from_secs(6)).await;
        let r = in_flight.await.expect("client task");
        assert_eq!(rdata_strings(&r.answers), ["93.184.216.34"]);
        assert_eq!(
            all.len(),
            1,
            "the drained query's event is written before run returns"
        );
        assert_eq!(all[0].rcode.as_deref(), Some("NOERROR"));
    });
}

#[test]
fn every_event_is_written_by_the_time_run_returns() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let d = Daemon::start(&format!("{NO_CACHE}{}", zone(".", &[&p], ""))).await;
        for _ in 0..20 {
            let _ = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        }
        let all = d.stop_within(Duration::from_secs(6)).await;
        assert_eq!(
            all.len(),
            20,
            "every event is flushed by the time run returns"
        );
    });
}

#[test]
fn idle_shutdown_is_prompt() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let d = Daemon::start(&format!("{NO_CACHE}{}", zone(".", &[&p], ""))).await;
        let _ = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        let started = Instant::now();
        d.stop_within(Duration::from_secs(3)).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    });
}
