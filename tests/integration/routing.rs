//! Routing by suffix: the Alpine VM setup (consul, the libvirt domain with its reverse zone,
//! `.` for everything else), label boundaries, case, longest match, DS at a zone apex, no
//! `.` zone → REFUSED, and the `allow` list.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, RecordType};

use crate::client::{self, query, rdata_strings};
use crate::daemon::{bounded, zone, Daemon, NO_CACHE};
use crate::fake::{consul_table, libvirt_table, public_table, Fake, Table};

const LIMIT: Duration = Duration::from_secs(20);

/// Consul, libvirt's dnsmasq and a public resolver behind one splitdns.
struct Vm {
    consul: Fake,
    libvirt: Fake,
    public: Fake,
    d: Daemon,
}

impl Vm {
    async fn start() -> Vm {
        let consul = Fake::answering(consul_table()).await;
        let libvirt = Fake::answering(libvirt_table()).await;
        let public = Fake::answering(public_table()).await;
        let body = format!(
            "{NO_CACHE}{}{}{}",
            zone("consul", &[&consul], ""),
            zone(
                "karhu.xyz",
                &[&libvirt],
                "networks = [\"192.168.121.0/24\"]"
            ),
            zone(".", &[&public], "")
        );
        let d = Daemon::start(&body).await;
        Vm {
            consul,
            libvirt,
            public,
            d,
        }
    }

    fn counts(&self) -> (usize, usize, usize) {
        (
            self.consul.count(),
            self.libvirt.count(),
            self.public.count(),
        )
    }
}

#[test]
fn consul_names_go_to_the_consul_zone() {
    bounded(LIMIT, async {
        let vm = Vm::start().await;
        let r = client::udp(vm.d.udp, &query("web.service.consul", RecordType::A)).await;
        let mut got = rdata_strings(&r.answers);
        got.sort();
        assert_eq!(got, ["10.0.0.10", "10.0.0.11"]);
        let r = client::udp(vm.d.udp, &query("WEB.Service.CONSUL.", RecordType::A)).await;
        assert_eq!(r.answers.len(), 2, "routing is case-insensitive");
        assert_eq!(vm.counts(), (2, 0, 0));
    });
}

#[test]
fn libvirt_domain_and_its_reverse_zone_go_to_dnsmasq() {
    bounded(LIMIT, async {
        let vm = Vm::start().await;
        let r = client::udp(vm.d.udp, &query("vm1.karhu.xyz.", RecordType::A)).await;
        assert_eq!(rdata_strings(&r.answers), ["192.168.121.10"]);
        let r = client::udp(
            vm.d.udp,
            &query("10.121.168.192.in-addr.arpa.", RecordType::PTR),
        )
        .await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(rdata_strings(&r.answers), ["vm1.karhu.xyz."]);
        // The apex itself belongs to the zone too.
        let r = client::udp(vm.d.udp, &query("karhu.xyz.", RecordType::A)).await;
        assert_eq!(rdata_strings(&r.answers), ["192.168.121.1"]);
        assert_eq!(vm.counts(), (0, 3, 0));
    });
}

#[test]
fn reverse_names_outside_the_network_go_to_the_default_zone() {
    bounded(LIMIT, async {
        let vm = Vm::start().await;
        let _ = client::udp(
            vm.d.udp,
            &query("34.216.184.93.in-addr.arpa.", RecordType::PTR),
        )
        .await;
        assert_eq!(vm.counts(), (0, 0, 1), "a public address's PTR goes to `.`");
        // 192.168.122.x is not in 192.168.121.0/24: a private range no zone routes is
        // answered NXDOMAIN locally (RFC 6303), never sent to the public upstream.
        let r = client::udp(
            vm.d.udp,
            &query("10.122.168.192.in-addr.arpa.", RecordType::PTR),
        )
        .await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(vm.counts(), (0, 0, 1));
    });
}

#[test]
fn everything_else_goes_to_the_default_zone() {
    bounded(LIMIT, async {
        let vm = Vm::start().await;
        let r = client::udp(vm.d.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(rdata_strings(&r.answers), ["93.184.216.34"]);
        // Label boundaries: `notconsul` is not `consul`, `xkarhu.xyz` is not `karhu.xyz`.
        let _ = client::udp(vm.d.udp, &query("web.notconsul.", RecordType::A)).await;
        let _ = client::udp(vm.d.udp, &query("vm1.xkarhu.xyz.", RecordType::A)).await;
        let _ = client::udp(vm.d.udp, &query("consul.example.com.", RecordType::A)).await;
        assert_eq!(vm.counts(), (0, 0, 4));
    });
}

#[test]
fn ds_for_a_zone_apex_goes_to_the_parent_route() {
    bounded(LIMIT, async {
        let vm = Vm::start().await;
        let r = client::udp(vm.d.udp, &query("karhu.xyz.", RecordType::DS)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(vm.counts(), (0, 0, 1), "DS karhu.xyz is the parent's data");
        let _ = client::udp(vm.d.udp, &query("consul.", RecordType::DS)).await;
        assert_eq!(vm.counts(), (0, 0, 2), "DS consul is the parent's data");
        // Below the apex, DS stays in the zone.
        let _ = client::udp(vm.d.udp, &query("sub.karhu.xyz.", RecordType::DS)).await;
        assert_eq!(
            vm.counts(),
            (0, 1, 2),
            "DS sub.karhu.xyz belongs to karhu.xyz"
        );
        // Other types at the apex stay in the zone.
        let _ = client::udp(vm.d.udp, &query("consul.", RecordType::SOA)).await;
        assert_eq!(vm.counts(), (1, 1, 2), "SOA consul belongs to consul");
    });
}

#[test]
fn longest_suffix_wins() {
    bounded(LIMIT, async {
        let mut outer_t = Table::new("example.com", 0);
        outer_t.add("a.sub.example.com", 0, RData::A(A::new(192, 0, 2, 1)));
        let mut inner_t = Table::new("sub.example.com", 0);
        inner_t.add("a.sub.example.com", 0, RData::A(A::new(192, 0, 2, 2)));
        let outer = Fake::answering(outer_t).await;
        let inner = Fake::answering(inner_t).await;
        // The shorter suffix is listed first: order in the file must not matter.
        let body = format!(
            "{NO_CACHE}{}{}",
            zone("example.com", &[&outer], ""),
            zone("sub.example.com.", &[&inner], "")
        );
        let d = Daemon::start(&body).await;
        let r = client::udp(d.udp, &query("a.SUB.example.com.", RecordType::A)).await;
        assert_eq!(rdata_strings(&r.answers), ["192.0.2.2"]);
        let _ = client::udp(d.udp, &query("b.example.com.", RecordType::A)).await;
        assert_eq!((outer.count(), inner.count()), (1, 1));
    });
}

#[test]
fn without_a_root_zone_other_names_are_refused() {
    bounded(LIMIT, async {
        let c = Fake::answering(consul_table()).await;
        let d = Daemon::start(&format!("{NO_CACHE}{}", zone("consul", &[&c], ""))).await;
        let q = query("www.example.com.", RecordType::A);
        let r = client::udp(d.udp, &q).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        assert_eq!(r.metadata.id, q.metadata.id);
        assert_eq!(r.queries.len(), 1, "the question is echoed");
        let r = client::tcp(d.tcp, &q).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        assert_eq!(c.count(), 0);
        // Names in the zone still work.
        let r = client::udp(d.udp, &query("web.service.consul.", RecordType::A)).await;
        assert_eq!(r.answers.len(), 2);
    });
}

#[test]
fn clients_outside_allow_are_refused() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let body = format!(
            "allow = [\"10.0.0.0/8\"]\n{NO_CACHE}{}",
            zone(".", &[&p], "")
        );
        let d = Daemon::start(&body).await;
        let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        let r = client::tcp(d.tcp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        assert_eq!(p.count(), 0, "a refused client's query is never forwarded");
    });
}
