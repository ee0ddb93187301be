//! A full disk under the spool: a small tmpfs that a filler file fills while the uplink
//! is down. Events that cannot be committed are counted (`spool_failed`) and logged, the
//! agent runs on, and once the filler is gone the spool takes events again and they
//! arrive when the broker comes.

use std::collections::BTreeSet;
use std::io::Write;

use super::{
    check_order_and_duplicates, config, health, logged, received_keys, spooled, start, wait_health,
    Consumer, LONG,
};
use crate::common::agent::{http_get, metric};
use crate::common::broker::{free_port, unique, Mosquitto};
use crate::common::{wait, SmallFs};

/// Writes zeros into `path` until the filesystem says it is full.
fn fill(path: &std::path::Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Smaller pieces into what is left.
    for _ in 0..64 {
        if f.write(&[0u8; 512]).is_err() {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_events_counted_and_the_spool_takes_them_again_when_room_returns() {
    let root = tempfile::tempdir().unwrap();
    let Some(fs) = SmallFs::mount(root.path(), "4m") else {
        crate::common::skip("cannot mount a small tmpfs (needs root)");
        return;
    };
    let device = unique("uplink-disk");
    let prefix = unique("central");
    // Nothing listens here yet: every event stays in the spool.
    let port = free_port();
    let spool = fs.0.join("spool");
    let file = root.path().join("agent.toml");
    std::fs::write(&file, config(&device, &prefix, port, &spool, "")).unwrap();
    let (agent, addr) = start(&file);
    wait_health(&agent, &addr, "events spooled", |h| {
        h["uplink"]["spool"]["messages"].as_u64() >= Some(2)
    })
    .await;

    // The disk fills: events fail, counted and logged; the agent runs on.
    let filler = fs.0.join("filler");
    fill(&filler);
    wait_health(&agent, &addr, "events failed on the full disk", |h| {
        h["uplink"]["failed"].as_u64() >= Some(2)
    })
    .await;
    let text = http_get(&addr, "/metrics");
    let counted = text
        .lines()
        .find(|l| {
            l.starts_with("edge_agent_dropped_total{")
                && l.contains("place=\"uplink\"")
                && l.contains("reason=\"spool_failed\"")
        })
        .and_then(|l| metric(l, "edge_agent_dropped_total"));
    assert!(counted >= Some(2.0), "{text}");
    let spool_file = spool.join("spool.redb").display().to_string();
    let said = agent.logs().into_iter().find(|v| {
        v["level"] == "ERROR"
            && v.to_string().contains("No space left on device")
            && v.to_string().contains(&spool_file)
    });
    assert!(
        said.is_some(),
        "an error naming the spool and the full disk: {}",
        agent.log_text()
    );
    let failed = health(&addr)["uplink"]["failed"].as_u64().unwrap();
    let depth = spooled(&addr).unwrap();

    // Room again: the spool takes events (the failures stop growing).
    std::fs::remove_file(&filler).unwrap();
    wait_health(&agent, &addr, "events spooled again", |h| {
        h["uplink"]["spool"]["messages"].as_u64() >= Some(depth + 2)
    })
    .await;
    let recovered: BTreeSet<_> = logged(&agent).into_iter().collect();
    let failed_after = health(&addr)["uplink"]["failed"].as_u64().unwrap();
    let h = wait::value_async("a few more events spooled", LONG, || {
        let h = health(&addr);
        (h["uplink"]["spool"]["messages"].as_u64() >= Some(depth + 4)).then_some(h)
    })
    .await;
    assert_eq!(
        h["uplink"]["failed"].as_u64(),
        Some(failed_after),
        "no failure once there is room: {h}"
    );
    assert!(failed_after >= failed);

    // The broker comes: what the spool holds arrives in order, and every transition
    // logged after the recovery among it.
    let broker = Mosquitto::start_on(port);
    let consumer = Consumer::start(broker.port, format!("{prefix}/{device}/+/motion")).await;
    wait_health(&agent, &addr, "the spool drained", |h| {
        h["uplink"]["connected"] == true && h["uplink"]["spool"]["messages"] == 0
    })
    .await;
    let later: BTreeSet<_> = logged(&agent)
        .into_iter()
        .filter(|t| !recovered.contains(t))
        .collect();
    assert!(!later.is_empty());
    let msgs = wait::value_async_explained(
        "every transition logged after the recovery",
        LONG,
        || {
            let msgs = consumer.messages();
            later.is_subset(&received_keys(&msgs)).then_some(msgs)
        },
        || format!("; got {:?}", received_keys(&consumer.messages())),
    )
    .await;
    check_order_and_duplicates(&msgs);
    let status = agent.stop();
    assert!(status.success(), "{status:?}");
    drop(fs);
}
