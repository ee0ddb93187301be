//! The AMQP uplink on the real RabbitMQ: events through the spool to a topic exchange of
//! their own (one per test, deleted at the end), read by a queue bound to it as a central
//! consumer would. The outage is a TCP proxy cut between the agent and RabbitMQ (the
//! shared broker must not stop under other tests); the consumer talks to RabbitMQ
//! directly. A queue that refuses messages (`x-overflow = reject-publish`) makes
//! RabbitMQ nack them: only its confirmations may take an event out of the spool.

use std::collections::BTreeSet;

use super::central::Central;
use super::{
    check_order_and_duplicates, health, logged, received_keys, spooled, start, wait_health,
    wait_health_within, LONG,
};
use crate::common::broker::{amqp_url, unique};
use crate::common::proxy::Proxy;
use crate::common::wait;

/// The first connection of a debug agent to RabbitMQ took close to a minute on a
/// loaded 2-core machine: the first wait is longer.
const FIRST: std::time::Duration = std::time::Duration::from_secs(180);

fn rabbit_addr() -> String {
    let url = url::Url::parse(&amqp_url()).unwrap();
    format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5672)
    )
}

/// `amqp_url()` with its host and port replaced by the proxy's.
fn through(proxy: &Proxy) -> String {
    let mut url = url::Url::parse(&amqp_url()).unwrap();
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(proxy.port)).unwrap();
    url.to_string()
}

fn config(device: &str, url: &str, exchange: &str, spool: &std::path::Path) -> String {
    let cam = |id: &str| {
        format!("[[cameras]]\nid = \"{id}\"\nurl = \"demo://{id}?width=160&height=90&fps=10\"\nescalation = {{ enabled = false }}\n")
    };
    format!(
        "[device]\nid = \"{device}\"\nstop_timeout = \"5s\"\n{}{}\
         [telemetry]\nmetrics_listen = \"127.0.0.1:0\"\nheartbeat_interval = \"1s\"\n\
         [uplink]\nkind = \"amqp\"\nurl = \"{url}\"\nexchange = \"{exchange}\"\n\
         [uplink.spool]\ndir = \"{}\"\n",
        cam("gate"),
        cam("yard"),
        spool.display()
    )
}

/// Every logged transition arrived; per camera in spool order; duplicates only under
/// one id; every routing key is the device's and the camera's.
async fn all_arrived(
    central: &Central,
    device: &str,
    expected: BTreeSet<(String, String, String)>,
) {
    let msgs = wait::value_async_explained(
        "every logged motion transition on the AMQP uplink",
        LONG,
        || {
            let msgs = central.bodies();
            expected.is_subset(&received_keys(&msgs)).then_some(msgs)
        },
        || {
            let got = received_keys(&central.bodies());
            format!(
                "; missing {:?}",
                expected.difference(&got).collect::<Vec<_>>()
            )
        },
    )
    .await;
    check_order_and_duplicates(&msgs);
    for m in &msgs {
        assert_eq!(
            m["_topic"],
            format!("{device}.{}.motion", m["camera"].as_str().unwrap()).as_str()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_events_spooled_through_an_outage_and_a_sigkill_all_arrive_in_order_per_camera() {
    let device = unique("uplink-amqp");
    let central = Central::start(&unique("uplink-ex"), &format!("{device}.*.motion"), None).await;
    let proxy = Proxy::start(&rabbit_addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(
        &file,
        config(
            &device,
            &through(&proxy),
            &central.exchange,
            &dir.path().join("spool"),
        ),
    )
    .unwrap();

    // Up: events flow, confirmed, and leave the spool.
    let (agent, addr) = start(&file);
    wait_health_within(
        &agent,
        &addr,
        "events sent on the AMQP uplink",
        FIRST,
        |h| {
            h["uplink"]["connected"] == true
                && h["uplink"]["kind"] == "amqp"
                && h["uplink"]["sent"].as_u64() >= Some(2)
        },
    )
    .await;
    wait::until_async("motion events at the central queue", LONG, || {
        central.bodies().len() >= 2
    })
    .await;

    // Cut: events are spooled.
    proxy.cut();
    wait_health(&agent, &addr, "events spooled while the link is cut", |h| {
        h["uplink"]["connected"] == false && h["uplink"]["spool"]["messages"].as_u64() >= Some(3)
    })
    .await;
    let before_kill = logged(&agent);
    let depth = wait::value_async("the spool depth", LONG, || spooled(&addr)).await;
    wait_health(&agent, &addr, "more events spooled", |h| {
        h["uplink"]["spool"]["messages"].as_u64() >= Some(depth + 3)
    })
    .await;
    agent.signal(libc::SIGKILL);
    drop(agent);

    // Restarted while cut: the spool is read back and grows.
    let (agent, addr) = start(&file);
    let reopened = agent.wait_state("spool_opened", 1, LONG);
    assert!(
        reopened["messages"].as_u64() >= Some(depth + 3),
        "{reopened}"
    );
    let at_start = wait::value_async("the spool depth", LONG, || spooled(&addr)).await;
    wait_health(&agent, &addr, "events spooled after the restart", |h| {
        h["uplink"]["connected"] == false
            && h["uplink"]["spool"]["messages"].as_u64() >= Some(at_start + 2)
    })
    .await;

    // Restored: the spool drains on RabbitMQ's confirms, and everything logged arrives.
    proxy.restore();
    wait_health(&agent, &addr, "the spool drained", |h| {
        h["uplink"]["connected"] == true && h["uplink"]["spool"]["messages"] == 0
    })
    .await;
    let sent = health(&addr)["uplink"]["sent"].as_u64().unwrap_or(0);
    wait_health(&agent, &addr, "later events sent", |h| {
        h["uplink"]["sent"].as_u64() >= Some(sent + 2)
    })
    .await;
    let expected: BTreeSet<_> = before_kill.into_iter().chain(logged(&agent)).collect();
    all_arrived(&central, &device, expected).await;

    // A clean stop with an empty spool, then a start: new events get new ids.
    let status = agent.stop();
    assert!(status.success(), "{status:?}");
    let before = central.bodies().len();
    let (agent, addr) = start(&file);
    wait_health(&agent, &addr, "events sent after a clean restart", |h| {
        h["uplink"]["sent"].as_u64() >= Some(3)
    })
    .await;
    wait::until_async("the new events arrived", LONG, || {
        central.bodies().len() >= before + 3
    })
    .await;
    check_order_and_duplicates(&central.bodies());
    let status = agent.stop();
    assert!(status.success(), "{status:?}");
    central.delete(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_events_rabbitmq_nacks_stay_in_the_spool_until_it_confirms_them() {
    let device = unique("uplink-nack");
    // Room for two: RabbitMQ nacks every later publish until the queue is read.
    let central =
        Central::start(&unique("uplink-ex"), &format!("{device}.*.motion"), Some(2)).await;
    let proxy = Proxy::start(&rabbit_addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(
        &file,
        config(
            &device,
            &through(&proxy),
            &central.exchange,
            &dir.path().join("spool"),
        ),
    )
    .unwrap();
    let (agent, addr) = start(&file);
    wait_health_within(
        &agent,
        &addr,
        "events held in the spool while nacked",
        FIRST,
        |h| {
            h["uplink"]["connected"] == true && h["uplink"]["spool"]["messages"].as_u64() >= Some(4)
        },
    )
    .await;
    let h = health(&addr);
    assert_eq!(
        h["uplink"]["sent"], 2,
        "only the confirmed two count as sent: {h}"
    );
    // Still held a while later: nacked events are neither dropped nor counted sent.
    let depth = spooled(&addr).unwrap();
    wait_health(&agent, &addr, "more events held", |h| {
        h["uplink"]["spool"]["messages"].as_u64() >= Some(depth + 2)
    })
    .await;
    assert_eq!(health(&addr)["uplink"]["sent"], 2);

    // The queue is read, while the link is cut (so no publish is in flight when room
    // comes, which could then overtake one refused just before): once it is back, what
    // was nacked goes again, in order, and is confirmed.
    proxy.cut();
    wait_health(&agent, &addr, "the link cut", |h| {
        h["uplink"]["connected"] == false
    })
    .await;
    central.consume().await;
    wait::until_async("the two taken read", LONG, || central.bodies().len() >= 2).await;
    proxy.restore();
    wait_health(&agent, &addr, "the spool drained", |h| {
        h["uplink"]["spool"]["messages"] == 0
    })
    .await;
    let expected: BTreeSet<_> = logged(&agent).into_iter().collect();
    all_arrived(&central, &device, expected).await;
    let h = health(&addr);
    assert_eq!(h["uplink"]["evicted"], 0, "{h}");
    assert_eq!(h["uplink"]["failed"], 0, "{h}");
    let status = agent.stop();
    assert!(status.success(), "{status:?}");
    central.delete(&[]).await;
}
