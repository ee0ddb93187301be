//! The worker loop with the real model: batching, acks after results, requeue when
//! results fail, privacy on snapshots, ack order, and fuzzed payloads.

use super::*;

#[tokio::test]
async fn worker_batches_waiting_frames_rejects_garbage_and_acks_after_results() {
    let mut c = cfg(&test_model(), Some("models/test.names"));
    c.max_batch = IntIn::new(4).unwrap();
    let pipeline = Pipeline::new(&c).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let events = EventsConfig {
        classes: vec!["fire".into()],
        privacy_classes: vec!["person".into()],
        snapshot_dir: Some(dir.path().to_path_buf()),
        ..EventsConfig::default()
    }
    .snapshots();
    let (tx, rx) = mpsc::channel(16);
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
    let fire = with_person(scene(320, 240, &[(100, 60, 40, RED)]), 200, 120, 64);
    let quiet = scene(320, 240, &[]);
    // Queued before the worker starts, so they wait together: the oldest runs alone (the
    // first call after the session opened), the next 4 are taken as one batch, the
    // garbage one is rejected and frames 3, 4 and 5 run in one call.
    tx.send(item(1, jpeg_of(&fire), &ack_tx)).await.unwrap();
    tx.send(item(2, b"not a jpeg at all".to_vec(), &ack_tx))
        .await
        .unwrap();
    tx.send(item(3, jpeg_of(&quiet), &ack_tx)).await.unwrap();
    tx.send(item(4, jpeg_of(&quiet), &ack_tx)).await.unwrap();
    tx.send(item(5, jpeg_of(&quiet), &ack_tx)).await.unwrap();
    let sink = Recorder::default();
    let stop = CancellationToken::new();
    let task = tokio::spawn(frame_loop::run(
        pipeline,
        events,
        rx,
        sink.clone(),
        stop.clone(),
    ));

    let mut acks = Vec::new();
    while acks.len() < 5 {
        let a = tokio::time::timeout(Duration::from_secs(30), ack_rx.recv())
            .await
            .expect("acks arrive")
            .unwrap();
        acks.push(a);
    }
    // The worker keeps consuming after the garbage frame.
    tx.send(item(6, jpeg_of(&fire), &ack_tx)).await.unwrap();
    let a6 = tokio::time::timeout(Duration::from_secs(30), ack_rx.recv())
        .await
        .unwrap()
        .unwrap();
    acks.push(a6);
    drop(tx);
    task.await.unwrap().unwrap();

    acks.sort_by_key(|a| a.0);
    for (seq, outcome) in &acks {
        match seq {
            2 => assert!(
                matches!(outcome, AckOutcome::Reject(r) if r.contains("no JPEG start-of-image marker")),
                "{outcome:?}"
            ),
            _ => assert_eq!(outcome, &AckOutcome::Done, "frame {seq}"),
        }
    }
    let outs = sink.0.lock().unwrap().clone();
    let dets: Vec<&DetectionsMessage> = outs
        .iter()
        .filter_map(|o| {
            if let Out::Det(d) = o {
                Some(&**d)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        dets.iter().map(|d| d.meta.seq).collect::<Vec<_>>(),
        vec![1, 3, 4, 5, 6]
    );
    assert_eq!(
        dets[0].detections.timings.batch, 1,
        "the oldest frame runs alone in the worker's first call"
    );
    for d in &dets[1..4] {
        assert_eq!(
            d.detections.timings.batch, 3,
            "frames 3, 4, 5 ran in one call (frame {})",
            d.meta.seq
        );
    }
    assert_eq!(dets[4].detections.timings.batch, 1);
    let fire_det = dets[0]
        .detections
        .items
        .iter()
        .find(|d| d.class == "fire")
        .unwrap();
    assert_box(fire_det, "fire", [100.0, 60.0, 40.0, 40.0], 1.0);
    assert!(dets[0].detections.items.iter().any(|d| d.class == "person"));
    assert!(dets[1].detections.items.is_empty());

    // Snapshots for frames 1 and 6 (a fire), each right before the detections that
    // name it; none for the quiet frames. Workers publish no events.
    let order: Vec<String> = outs
        .iter()
        .map(|o| match o {
            Out::Det(d) => format!("det{}", d.meta.seq),
            Out::Snap(s) => format!("snap{}", s.meta.seq),
        })
        .collect();
    let pos = |s: &str| order.iter().position(|o| o == s).unwrap();
    assert!(
        pos("snap1") + 1 == pos("det1") && pos("snap6") + 1 == pos("det6"),
        "{order:?}"
    );
    assert_eq!(order.iter().filter(|o| o.starts_with("snap")).count(), 2);
    let named: Vec<Option<&str>> = dets.iter().map(|d| d.snapshot.as_deref()).collect();
    let snap1 = format!("cam1-{}-1", 1_700_000_000_001u64);
    let snap6 = format!("cam1-{}-6", 1_700_000_000_006u64);
    assert_eq!(
        named,
        [Some(snap1.as_str()), None, None, None, Some(snap6.as_str())]
    );
    let path = dets[0]
        .snapshot_path
        .clone()
        .expect("stored in snapshot_dir");
    assert!(path.is_file(), "{path:?} written before the detections");
    assert_eq!(
        path.file_name().unwrap().to_string_lossy(),
        format!("{snap1}.jpg")
    );

    // Privacy: the person's checkerboard is pixelated in the snapshot; the fire box is
    // drawn around the red square.
    let Some(Out::Snap(snap)) = outs.iter().find(|o| matches!(o, Out::Snap(_))) else {
        panic!()
    };
    let img = decode_jpeg(&snap.jpeg).unwrap();
    let person = dets[0]
        .detections
        .items
        .iter()
        .find(|d| d.class == "person")
        .unwrap();
    let inner = [
        person.x as u32 + 12,
        person.y as u32 + 12,
        (person.x + person.w) as u32 - 12,
        (person.y + person.h) as u32 - 12,
    ];
    let spread = |img: &RgbImage| spread(img, inner);
    assert!(spread(&fire) > 200);
    assert!(
        spread(&img) < 80,
        "person region still detailed: spread {}",
        spread(&img)
    );
}

/// A sink whose detections fail, when handed over or later when the broker would
/// confirm them: either way the frame must be requeued, not acked. A fake on purpose:
/// a real broker cannot be made to refuse one publish, or to lose the confirmation of
/// one message, on cue; the real path is the end-to-end test above.
#[derive(Clone, Default)]
struct FailingDetections {
    snapshots: Arc<Mutex<Vec<String>>>,
    at_confirm: bool,
}

impl ResultSink for FailingDetections {
    async fn detections(&self, _: &DetectionsMessage) -> Result<Confirmation, SinkError> {
        if self.at_confirm {
            Ok(Confirmation::new(async {
                Err(SinkError::Unconfirmed {
                    what: "detections",
                    within: Duration::ZERO,
                })
            }))
        } else {
            Err(TransportError::Closed.into())
        }
    }
    async fn snapshot(&self, s: &Snapshot) -> Result<(), SinkError> {
        self.snapshots
            .lock()
            .unwrap()
            .push(format!("snap{}", s.meta.seq));
        Ok(())
    }
}

#[tokio::test]
async fn frame_is_requeued_when_its_detections_are_not_handed_over_or_not_confirmed() {
    for (at_confirm, reason) in [
        (false, TransportError::Closed.to_string()),
        (
            true,
            "detections not confirmed by the broker within 0ns".to_string(),
        ),
    ] {
        let pipeline = Pipeline::new(&cfg(&test_model(), Some("models/test.names"))).unwrap();
        let (tx, rx) = mpsc::channel(4);
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
        let sink = FailingDetections {
            at_confirm,
            ..Default::default()
        };
        let task = tokio::spawn(frame_loop::run(
            pipeline,
            EventsConfig::default().snapshots(),
            rx,
            sink.clone(),
            CancellationToken::new(),
        ));
        let frame = jpeg_of(&scene(320, 240, &[(100, 60, 40, RED)]));
        tx.send(item(1, frame, &ack_tx)).await.unwrap();
        let (seq, outcome) = tokio::time::timeout(Duration::from_secs(30), ack_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seq, 1);
        assert_eq!(
            outcome,
            AckOutcome::Requeue(reason),
            "at_confirm {at_confirm}"
        );
        assert_eq!(*sink.snapshots.lock().unwrap(), vec!["snap1".to_string()]);
        drop(tx);
        task.await.unwrap().unwrap();
    }
}

/// With crops the model sees only the crops, but the snapshot is the whole frame: a
/// person outside every crop must be pixelated on it all the same.
#[tokio::test]
async fn with_crops_a_privacy_class_outside_every_crop_is_pixelated_on_the_snapshot() {
    use edge_agent::infer::frame_loop::Payload;
    use edge_agent::wire::regions::{Rect, Region};
    let pipeline = Pipeline::new(&cfg(&test_model(), Some("models/test.names"))).unwrap();
    let events = EventsConfig {
        classes: vec!["fire".into()],
        privacy_classes: vec!["person".into()],
        ..EventsConfig::default()
    }
    .snapshots();
    // The whole frame (320x240) on top, one 96x96 crop around the fire below it.
    let whole = with_person(scene(320, 240, &[(100, 60, 40, RED)]), 200, 120, 64);
    let crop = Rect {
        x: 80,
        y: 40,
        w: 96,
        h: 96,
    };
    let mut data = whole.data.clone();
    data.resize((320 * (240 + 96) * 3) as usize, 0);
    for y in 0..crop.h {
        for x in 0..crop.w {
            let from = (((crop.y + y) * 320 + crop.x + x) * 3) as usize;
            let to = (((240 + y) * 320 + x) * 3) as usize;
            data.copy_within(from..from + 3, to);
        }
    }
    let payload_img = RgbImage::new(320, 240 + 96, data).unwrap();
    let mut it = item(1, jpeg_of(&payload_img), &mpsc::unbounded_channel().0);
    it.payload = Payload {
        whole: (320, 240),
        source: (320, 240),
        regions: vec![Region {
            frame: crop,
            at: [0, 240],
        }],
    };
    let (tx, rx) = mpsc::channel(4);
    let sink = Recorder::default();
    let task = tokio::spawn(frame_loop::run(
        pipeline,
        events,
        rx,
        sink.clone(),
        CancellationToken::new(),
    ));
    tx.send(it).await.unwrap();
    drop(tx);
    task.await.unwrap().unwrap();

    let outs = sink.0.lock().unwrap().clone();
    let det = outs
        .iter()
        .find_map(|o| match o {
            Out::Det(d) => Some(d.clone()),
            _ => None,
        })
        .expect("detections");
    assert_eq!(det.detections.regions, 1);
    let classes: Vec<&str> = det
        .detections
        .items
        .iter()
        .map(|d| d.class.as_str())
        .collect();
    assert!(
        classes.contains(&"fire") && !classes.contains(&"person"),
        "only what the crop shows is published: {classes:?}"
    );
    let snap = outs
        .iter()
        .find_map(|o| match o {
            Out::Snap(s) => Some(s.clone()),
            _ => None,
        })
        .expect("a snapshot for the fire");
    let img = decode_jpeg(&snap.jpeg).unwrap();
    let spread = |img: &RgbImage| spread(img, [212, 132, 252, 172]);
    assert!(spread(&whole) > 200);
    assert!(
        spread(&img) < 80,
        "the person outside the crop is still detailed: spread {}",
        spread(&img)
    );
}

/// Confirms each frame's detections later than the next one's. A fake on purpose: a
/// real broker confirms in order, so it cannot provoke the reordering this guards.
#[derive(Clone, Default)]
struct LateConfirms;

impl ResultSink for LateConfirms {
    async fn detections(&self, m: &DetectionsMessage) -> Result<Confirmation, SinkError> {
        let delay = Duration::from_millis(400u64.saturating_sub(m.meta.seq * 100));
        Ok(Confirmation::new(async move {
            tokio::time::sleep(delay).await;
            Ok(())
        }))
    }
    async fn snapshot(&self, _: &Snapshot) -> Result<(), SinkError> {
        Ok(())
    }
}

/// MQTT brokers take QoS 1 acks only in order (rumqttd drops a client that acks out of
/// order), so frames are acked in the order they came, whenever their answers are
/// confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_are_acked_in_the_order_they_came_whatever_order_their_answers_are_confirmed() {
    let pipeline = Pipeline::new(&cfg(&test_model(), Some("models/test.names"))).unwrap();
    let (tx, rx) = mpsc::channel(8);
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(frame_loop::run(
        pipeline,
        EventsConfig::default().snapshots(),
        rx,
        LateConfirms,
        CancellationToken::new(),
    ));
    let frame = jpeg_of(&scene(320, 240, &[(100, 60, 40, RED)]));
    for seq in 1..=4 {
        tx.send(item(seq, frame.clone(), &ack_tx)).await.unwrap();
    }
    let mut acked = Vec::new();
    while acked.len() < 4 {
        let (seq, outcome) = tokio::time::timeout(Duration::from_secs(30), ack_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(outcome, AckOutcome::Done);
        acked.push(seq);
    }
    assert_eq!(acked, vec![1, 2, 3, 4]);
    drop(tx);
    task.await.unwrap().unwrap();
}

/// Bounded fuzzing of the worker loop with a seeded generator: random bytes, JPEG
/// markers around garbage and valid JPEGs with flipped, overwritten or cut bytes. Every
/// frame is acked exactly once, as done or rejected (never requeued, which is what a
/// panic in the decoder would turn into), rejections are counted, and the loop ends
/// cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_loop_rejects_and_counts_arbitrary_payloads_and_never_panics() {
    use edge_agent::telemetry::metrics::{metrics, reject_reason, RejectReason};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    let pipeline = Pipeline::new(&cfg(&test_model(), Some("models/test.names"))).unwrap();
    let valid = jpeg_of(&scene(96, 64, &[(20, 10, 24, RED)]));
    let mut rng = StdRng::seed_from_u64(0x0b5e_55ed);
    let n = 150u64;
    let payloads: Vec<Vec<u8>> = (0..n)
        .map(|_| match rng.random_range(0..4) {
            0 => {
                let mut b = vec![0u8; rng.random_range(0..400)];
                rng.fill(&mut b[..]);
                b
            }
            1 => {
                let mut b = vec![0u8; rng.random_range(4..400)];
                rng.fill(&mut b[..]);
                b[..2].copy_from_slice(&[0xFF, 0xD8]);
                let k = b.len();
                b[k - 2..].copy_from_slice(&[0xFF, 0xD9]);
                b
            }
            2 => {
                let mut b = valid.clone();
                for _ in 0..rng.random_range(1..8) {
                    let i = rng.random_range(0..b.len());
                    b[i] = rng.random();
                }
                b
            }
            _ => {
                let cut = rng.random_range(0..valid.len());
                valid[..cut].to_vec()
            }
        })
        .collect();
    let counted = || {
        metrics()
            .rejected
            .get_or_create(&reject_reason("worker", RejectReason::NotJpeg))
            .get()
    };
    let before = counted();
    let (tx, rx) = mpsc::channel(8);
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(frame_loop::run(
        pipeline,
        EventsConfig::default().snapshots(),
        rx,
        Recorder::default(),
        CancellationToken::new(),
    ));
    let feeder = tokio::spawn(async move {
        for (seq, p) in payloads.into_iter().enumerate() {
            tx.send(item(seq as u64, p, &ack_tx)).await.unwrap();
        }
    });
    let mut outcomes = std::collections::BTreeMap::new();
    while outcomes.len() < n as usize {
        let (seq, o) = tokio::time::timeout(Duration::from_secs(60), ack_rx.recv())
            .await
            .expect("every frame is acked")
            .unwrap();
        assert!(outcomes.insert(seq, o).is_none(), "frame {seq} acked twice");
    }
    feeder.await.unwrap();
    task.await.unwrap().expect("the loop ends without an error");
    let mut rejected = 0;
    for (seq, o) in &outcomes {
        match o {
            AckOutcome::Done => {}
            AckOutcome::Reject(why) => {
                assert!(!why.is_empty(), "frame {seq}: rejected without a reason");
                rejected += 1;
            }
            other => panic!("frame {seq}: {other:?}"),
        }
    }
    assert!(rejected >= n / 2, "only {rejected} of {n} rejected");
    // Other tests in this process may count too, never fewer.
    assert!(
        counted() - before >= rejected,
        "{} counted, {rejected} rejected",
        counted() - before
    );
}
