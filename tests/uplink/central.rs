//! The central side of an AMQP uplink, as a consumer at the centre would run it: the
//! uplink's topic exchange (declared as the uplink declares it, in case we are first), a
//! queue of its own bound to a key, and every message that arrived on it with its AMQP
//! properties.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};

use crate::common::broker::{amqp_url, declare_topic_exchange, unique};

/// One message as the centre got it.
#[derive(Clone, Debug)]
pub struct Got {
    pub key: String,
    pub message_id: Option<String>,
    pub content_type: Option<String>,
    pub delivery_mode: Option<u8>,
    /// JSON, or the text of a body that is not.
    pub body: serde_json::Value,
}

pub struct Central {
    conn: lapin::Connection,
    pub exchange: String,
    queue: String,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Central {
    /// A queue bound to `binding` on `exchange`, consumed at once. With `limit`, the
    /// queue holds at most that many messages and has RabbitMQ nack the rest
    /// (`reject-publish`); it is then not consumed until [`Central::consume`].
    pub async fn start(exchange: &str, binding: &str, limit: Option<i64>) -> Central {
        let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        declare_topic_exchange(&ch, exchange).await;
        let queue = unique("central");
        let mut args = FieldTable::default();
        if let Some(n) = limit {
            args.insert("x-max-length".into(), AMQPValue::LongLongInt(n));
            args.insert(
                "x-overflow".into(),
                AMQPValue::LongString("reject-publish".into()),
            );
        }
        // Exclusive: gone with this connection, whatever happens to the test.
        let options = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        ch.queue_declare(queue.as_str().into(), options, args)
            .await
            .unwrap();
        ch.queue_bind(
            queue.as_str().into(),
            exchange.into(),
            binding.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let central = Central {
            conn,
            exchange: exchange.to_string(),
            queue,
            got: Arc::default(),
        };
        if limit.is_none() {
            central.consume().await;
        }
        central
    }

    /// Starts reading the queue (without acks) into [`Central::messages`].
    pub async fn consume(&self) {
        let ch = self.conn.create_channel().await.unwrap();
        let mut consumer = ch
            .basic_consume(
                self.queue.as_str().into(),
                unique("central").as_str().into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let got = self.got.clone();
        tokio::spawn(async move {
            let _ch = ch;
            while let Some(Ok(d)) = consumer.next().await {
                let p = &d.properties;
                got.lock().unwrap().push(Got {
                    key: d.routing_key.as_str().to_string(),
                    message_id: p.message_id().as_ref().map(|s| s.as_str().to_string()),
                    content_type: p.content_type().as_ref().map(|s| s.as_str().to_string()),
                    delivery_mode: *p.delivery_mode(),
                    body: serde_json::from_slice(&d.data).unwrap_or_else(|_| {
                        serde_json::Value::String(String::from_utf8_lossy(&d.data).into())
                    }),
                });
            }
        });
    }

    /// Everything that arrived, in arrival order.
    pub fn messages(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// The JSON bodies, each with its routing key added as `_topic`.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.messages()
            .into_iter()
            .map(|g| {
                let mut v = g.body;
                v["_topic"] = g.key.into();
                v
            })
            .collect()
    }

    /// What arrived under a routing key ending in `suffix`.
    pub fn with_suffix(&self, suffix: &str) -> Vec<Got> {
        self.messages()
            .into_iter()
            .filter(|g| g.key.ends_with(suffix))
            .collect()
    }

    /// Deletes the queue and the exchange; `others`: more queues to delete (the
    /// uplink's status queue).
    pub async fn delete(self, others: &[&str]) {
        let ch = self.conn.create_channel().await.unwrap();
        for q in std::iter::once(self.queue.as_str()).chain(others.iter().copied()) {
            let _ = ch
                .queue_delete(q.into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = ch
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
        let _ = self.conn.close(200, "OK".into()).await;
    }
}
