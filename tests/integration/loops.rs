//! Forwarding-loop detection: two splitdns instances whose default zones point at each
//! other. The one that learns its peer from a servers file probes it, sees its own probe
//! come back, stops using that server, and answers SERVFAIL at once instead of bouncing
//! queries around until the deadline.

use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::client::{self, query};
use crate::daemon::{bounded, toml_str, Daemon, TempDir, NO_CACHE};

#[test]
fn a_loop_between_two_forwarders_is_detected_and_broken() {
    bounded(Duration::from_secs(30), async {
        // B learns its "." server from a file, initially empty.
        let dir = TempDir::new("loop-b");
        let file = dir.write("upstreams.conf", "");
        let body_b = format!(
            "{NO_CACHE}[[zone]]\nname = \".\"\nservers_file = {}\ntimeout_ms = 1000\n",
            toml_str(&file.to_string_lossy())
        );
        let b = Daemon::start_in(dir, &body_b).await;
        // A forwards "." to B.
        let body_a = format!(
            "{NO_CACHE}[[zone]]\nname = \".\"\nservers = [{}]\ntimeout_ms = 1000\n",
            toml_str(&b.udp.to_string())
        );
        let a = Daemon::start(&body_a).await;
        // Now close the loop: B's "." goes to A.
        std::fs::write(&file, format!("nameserver {}\n", a.udp)).unwrap();

        // B polls the file, installs A, probes it; the probe comes back through A. (If B
        // picks up the file before A's own start-up probe has passed through, A sees its
        // probe come back first: either side may be the one that notices.)
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let seen = [&a.events_path, &b.events_path].iter().any(|p| {
                crate::events::read(p)
                    .into_iter()
                    .any(|e| e.error.as_deref() == Some("forwarding loop detected"))
            });
            if seen {
                break;
            }
            assert!(Instant::now() < deadline, "neither side detected the loop");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // A query into the loop now fails fast instead of circling until the deadline.
        let started = Instant::now();
        let reply = client::udp(a.udp, &query("www.example.com.", RecordType::A)).await;
        let took = started.elapsed();
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        assert!(
            took < Duration::from_millis(1500),
            "loop not broken: SERVFAIL took {took:?}"
        );
    });
}
