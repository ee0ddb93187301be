//! The link's outgoing state, shared by the handles and the task that owns the
//! connection: the outbox, the messages handed to the broker and not yet confirmed, the
//! frames still waiting for an answer, and whether the link is up. Its fields are
//! private to this file: the handles (`transport.rs`) and the owner tasks (`mqtt.rs`,
//! `amqp.rs`) change it only through the operations below, under the one lock.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use tokio::sync::oneshot;

use super::buffer::{Class, Due, Outbox, Unanswered};
use crate::telemetry::metrics::{self, metrics};

/// A message waiting for, or on its way to, the broker.
pub(crate) struct Out {
    pub class: Class,
    /// Metric label: frames, detections, events, motion, snapshot, status.
    pub kind: &'static str,
    /// AMQP exchange ("" = default exchange); unused on MQTT.
    pub exchange: String,
    /// MQTT topic or AMQP routing key.
    pub key: String,
    pub retain: bool,
    pub payload: bytes::Bytes,
    pub confirm: Option<oneshot::Sender<()>>,
    /// Submission order, to put unconfirmed messages back in order.
    order: u64,
    /// (camera, seq) of a frame, to forget it when it is dropped unsent.
    pub frame: Option<(String, u64)>,
}

impl Out {
    pub fn new(class: Class, kind: &'static str, exchange: String, key: String) -> Out {
        Out {
            class,
            kind,
            exchange,
            key,
            retain: false,
            payload: bytes::Bytes::new(),
            confirm: None,
            order: 0,
            frame: None,
        }
    }

    /// The broker confirmed it: count it and wake a waiter.
    pub fn confirmed(self) {
        metrics()
            .published
            .get_or_create(&metrics::kind(self.kind))
            .inc();
        if let Some(c) = self.confirm {
            let _ = c.send(());
        }
    }
}

impl Clone for Out {
    /// A copy to send again: without the confirm waiter (the original keeps it).
    fn clone(&self) -> Self {
        Out {
            class: self.class,
            kind: self.kind,
            exchange: self.exchange.clone(),
            key: self.key.clone(),
            retain: self.retain,
            payload: self.payload.clone(),
            confirm: None,
            order: 0,
            frame: self.frame.clone(),
        }
    }
}

/// What a redelivery pass did, for the caller to count outside the lock.
#[derive(Default)]
pub(crate) struct Resent {
    pub sent: usize,
    pub expired: usize,
    /// Classes of messages the full outbox dropped to make room.
    pub dropped: Vec<Class>,
}

pub(crate) struct State {
    connected: bool,
    outbox: Outbox<Out>,
    unanswered: Unanswered<Out>,
    /// MQTT: handed to the event loop, waiting for a packet id.
    submitted: VecDeque<Out>,
    /// MQTT: waiting for PUBACK, by packet id.
    inflight: HashMap<u16, Out>,
    /// AMQP: published, waiting for the broker's confirm (the owner task holds them).
    unconfirmed: usize,
    order: u64,
}

impl State {
    pub fn new(buffer: usize, unanswered: Unanswered<Out>) -> State {
        State {
            connected: false,
            outbox: Outbox::new(buffer),
            unanswered,
            submitted: VecDeque::new(),
            inflight: HashMap::new(),
            unconfirmed: 0,
            order: 0,
        }
    }

    pub fn connected(&self) -> bool {
        self.connected
    }

    /// The connection is up (sessions set up, consumers started).
    pub fn up(&mut self) {
        self.connected = true;
    }

    /// The connection dropped: every message not confirmed (`extra`: those the owner
    /// task held) goes back to the front of the outbox, in order. True when it was up.
    pub fn down(&mut self, mut extra: Vec<Out>) -> bool {
        let was = std::mem::replace(&mut self.connected, false);
        extra.extend(self.submitted.drain(..));
        extra.extend(self.inflight.drain().map(|(_, o)| o));
        extra.sort_by_key(|o| std::cmp::Reverse(o.order));
        for o in extra {
            self.outbox.push_front(o.class, o);
        }
        self.unconfirmed = 0;
        was
    }

    /// The owner task ended for good (closed or cancelled).
    pub fn ended(&mut self) {
        self.connected = false;
    }

    /// Adds a message to the outbox. A frame dropped unsent to make room is forgotten
    /// (no redelivery); a dropped confirm waiter sees the drop. The dropped class.
    pub fn push(&mut self, out: Out) -> Option<Class> {
        let (class, dropped) = self.outbox.push(out.class, out)?;
        if let Some((camera, seq)) = &dropped.frame {
            self.unanswered.answer(camera, *seq);
        }
        Some(class)
    }

    /// Puts a message taken from the outbox back at its front (not sent, or refused).
    pub fn put_back(&mut self, out: Out) {
        self.outbox.push_front(out.class, out);
    }

    /// MQTT: the next message to hand to the event loop while up and fewer than
    /// `window` are on their way.
    pub fn next_within(&mut self, window: usize) -> Option<Out> {
        if !self.connected || self.submitted.len() + self.inflight.len() >= window {
            return None;
        }
        self.outbox.pop().map(|(_, o)| o)
    }

    /// MQTT: the event loop took `out`; it waits for its packet id.
    pub fn submitted(&mut self, mut out: Out) {
        self.order += 1;
        out.order = self.order;
        self.submitted.push_back(out);
    }

    /// MQTT: the oldest submitted message went out as packet `pkid`.
    pub fn sent(&mut self, pkid: u16) {
        if let Some(out) = self.submitted.pop_front() {
            self.inflight.insert(pkid, out);
        }
    }

    /// MQTT: the broker acknowledged packet `pkid`.
    pub fn acked(&mut self, pkid: u16) -> Option<Out> {
        self.inflight.remove(&pkid)
    }

    /// AMQP: the next message to publish, numbered in publishing order.
    pub fn next_numbered(&mut self) -> Option<Out> {
        self.order += 1;
        let order = self.order;
        self.outbox.pop().map(|(_, mut o)| {
            o.order = order;
            o
        })
    }

    /// AMQP: how many published messages wait for the broker's confirm.
    pub fn set_unconfirmed(&mut self, n: usize) {
        self.unconfirmed = n;
    }

    /// True when nothing waits to be sent or confirmed.
    pub fn is_drained(&self) -> bool {
        self.outbox.is_empty()
            && self.submitted.is_empty()
            && self.inflight.is_empty()
            && self.unconfirmed == 0
    }

    /// Remembers a frame sent to the workers until its answer comes; true when a
    /// older one was evicted for it.
    pub fn expect_answer(&mut self, camera: &str, seq: u64, copy: Out, now: Instant) -> bool {
        self.unanswered.insert(camera, seq, copy, now)
    }

    /// The frame `camera`/`seq` was answered; true for its first answer.
    pub fn answered(&mut self, camera: &str, seq: u64) -> bool {
        self.unanswered.answer(camera, seq)
    }

    pub fn unanswered(&self) -> usize {
        self.unanswered.len()
    }

    /// Puts frames waiting for an answer back in the outbox: those due for
    /// redelivery, or with `all` every one of them.
    pub fn resend_unanswered(&mut self, all: bool, now: Instant) -> Resent {
        let due: Due<Out> = if all {
            self.unanswered.resend_all(now)
        } else {
            self.unanswered.due(now)
        };
        let mut r = Resent {
            sent: due.resend.len(),
            expired: due.expired,
            dropped: Vec::new(),
        };
        for out in due.resend {
            r.dropped.extend(self.push(out));
        }
        r
    }
}
