//! QoS 1 acks of one MQTT consuming connection, sent in the order their publishes came.
//!
//! rumqttd takes a PUBACK only for the oldest publish it is still waiting on; any other
//! is an "out of order ack", logged as an error, and the client's session goes wrong.
//! A worker settles its frames out of order, though: a duplicate, a refused frame or one
//! its full inbox drops is settled at once, while an earlier frame is still being
//! worked on. So a ready ack waits until every earlier publish of its session is
//! settled too, and one flusher at a time hands the ready ones to the client in order.
//! A new session (reconnect with a clean session) forgets the old one's publishes: the
//! broker will not take acks for them.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::error::TransportError;
use crate::sync::lock;

#[derive(Default)]
pub(crate) struct AckOrder {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    session: u64,
    /// Publishes of this session not yet acked, oldest first, with the ones that may
    /// be acked filled in.
    queue: VecDeque<Slot>,
    /// A task is handing acks to the client; others only fill in their slot.
    flushing: bool,
}

struct Slot {
    pkid: u16,
    ready: Option<rumqttc::Publish>,
}

impl AckOrder {
    /// A new session began: the old one's publishes are never acked.
    pub(crate) fn reset(&self) {
        let mut i = lock(&self.inner);
        i.session += 1;
        i.queue.clear();
        i.flushing = false;
    }

    /// A publish arrived; a QoS 1 one's ack will go after every earlier one. Returns
    /// the session to hand to [`AckOrder::ack`].
    pub(crate) fn arrived(&self, publish: &rumqttc::Publish) -> u64 {
        let mut i = lock(&self.inner);
        if publish.qos != rumqttc::QoS::AtMostOnce {
            i.queue.push_back(Slot {
                pkid: publish.pkid,
                ready: None,
            });
        }
        i.session
    }

    /// Acks `publish` of `session` once every earlier publish of it is settled: now,
    /// or later by whichever task settles the last earlier one. A publish of a gone
    /// session, or one never registered (QoS 0), is not acked.
    pub(crate) async fn ack(
        &self,
        client: &rumqttc::AsyncClient,
        session: u64,
        publish: rumqttc::Publish,
    ) -> Result<(), TransportError> {
        {
            let mut i = lock(&self.inner);
            if i.session != session {
                return Ok(());
            }
            let pkid = publish.pkid;
            match i
                .queue
                .iter_mut()
                .find(|s| s.pkid == pkid && s.ready.is_none())
            {
                Some(s) => s.ready = Some(publish),
                None => return Ok(()),
            }
            if i.flushing {
                return Ok(());
            }
            i.flushing = true;
        }
        loop {
            let next = {
                let mut i = lock(&self.inner);
                if i.session != session {
                    return Ok(());
                }
                if i.queue.front().is_some_and(|s| s.ready.is_some()) {
                    i.queue.pop_front().and_then(|s| s.ready)
                } else {
                    i.flushing = false;
                    return Ok(());
                }
            };
            let Some(p) = next else { continue };
            // try first: the event loop drains this channel, never block it needlessly.
            if client.try_ack(&p).is_err() && client.ack(&p).await.is_err() {
                let mut i = lock(&self.inner);
                if i.session == session {
                    i.flushing = false;
                }
                return Err(TransportError::Closed);
            }
        }
    }

    /// Publishes waiting for their ack (tests).
    #[cfg(test)]
    fn pending(&self) -> Vec<(u16, bool)> {
        lock(&self.inner)
            .queue
            .iter()
            .map(|s| (s.pkid, s.ready.is_some()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(pkid: u16) -> rumqttc::Publish {
        let mut p = rumqttc::Publish::new("t", rumqttc::QoS::AtLeastOnce, vec![1u8]);
        p.pkid = pkid;
        p
    }

    /// The acks the client was asked to send, in order, read from its request channel.
    fn sent(rx: &flume::Receiver<rumqttc::Request>) -> Vec<u16> {
        rx.try_iter()
            .filter_map(|r| match r {
                rumqttc::Request::PubAck(a) => Some(a.pkid),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn acks_leave_in_the_order_their_publishes_came_whatever_order_they_are_settled() {
        let (tx, rx) = flume::bounded(16);
        let client = rumqttc::AsyncClient::from_senders(tx);
        let order = AckOrder::default();
        let s = order.arrived(&publish(1));
        order.arrived(&publish(2));
        order.arrived(&publish(3));
        // 3 (a duplicate) and 2 are settled first: nothing may leave before 1.
        order.ack(&client, s, publish(3)).await.unwrap();
        order.ack(&client, s, publish(2)).await.unwrap();
        assert_eq!(sent(&rx), Vec::<u16>::new());
        assert_eq!(order.pending(), vec![(1, false), (2, true), (3, true)]);
        order.ack(&client, s, publish(1)).await.unwrap();
        assert_eq!(sent(&rx), vec![1, 2, 3]);
        assert!(order.pending().is_empty());
    }

    #[tokio::test]
    async fn a_new_session_forgets_the_old_ones_publishes() {
        let (tx, rx) = flume::bounded(16);
        let client = rumqttc::AsyncClient::from_senders(tx);
        let order = AckOrder::default();
        let old = order.arrived(&publish(1));
        order.arrived(&publish(2));
        order.reset();
        let new = order.arrived(&publish(1));
        // The old session's frame 2 is settled late: not acked, and it does not hold
        // back the new session's frame 1.
        order.ack(&client, old, publish(2)).await.unwrap();
        order.ack(&client, new, publish(1)).await.unwrap();
        assert_eq!(sent(&rx), vec![1]);
        assert!(order.pending().is_empty());
    }

    #[tokio::test]
    async fn a_qos0_publish_is_neither_queued_nor_acked() {
        let (tx, rx) = flume::bounded(16);
        let client = rumqttc::AsyncClient::from_senders(tx);
        let order = AckOrder::default();
        let mut p = rumqttc::Publish::new("t", rumqttc::QoS::AtMostOnce, vec![1u8]);
        p.pkid = 0;
        let s = order.arrived(&p);
        order.ack(&client, s, p).await.unwrap();
        assert!(sent(&rx).is_empty());
        assert!(order.pending().is_empty());
    }
}
