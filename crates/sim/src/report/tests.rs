use super::*;

#[test]
fn percentiles_of_a_known_distribution() {
    let mut h = Hist::default();
    for v in 1..=1000u64 {
        h.record(v * 1000); // 1..1000 ms in microseconds
    }
    let p = h.percentiles(1000.0);
    assert_eq!(p.count, 1000);
    assert!((p.p50 - 500.0).abs() <= 1.0, "{p:?}");
    assert!((p.p90 - 900.0).abs() <= 1.0, "{p:?}");
    assert!((p.p99 - 990.0).abs() <= 1.0, "{p:?}");
    assert!((p.p999 - 999.0).abs() <= 1.0, "{p:?}");
    assert!((p.max - 1000.0).abs() <= 1.0, "{p:?}");
    assert_eq!(Hist::default().percentiles(1.0), Percentiles::default());
}

#[test]
fn histograms_shipped_as_pairs_merge_like_one() {
    let (mut a, mut b, mut both) = (Hist::default(), Hist::default(), Hist::default());
    for v in 0..5000u64 {
        let x = v * 37 % 20_000;
        if v % 3 == 0 {
            a.record(x)
        } else {
            b.record(x)
        }
        both.record(x);
    }
    let mut merged = Hist::default();
    merged.add_pairs(&a.pairs());
    merged.add_pairs(&b.pairs());
    assert_eq!(merged.percentiles(1.0), both.percentiles(1.0));
    assert_eq!(merged.len(), 5000);
}

#[test]
fn reports_add_up_with_rates_over_their_windows() {
    let mut r1 = WorkerReport { worker: 0, ..Default::default() };
    r1.counters.complete = 9;
    r1.counters.deliveries = 1000;
    r1.failures.add(Cause::Duplicate, 1);
    r1.paths.0[0] = PathTally { viewers: 10, complete: 9, failed: 1 };
    r1.connects = 10;
    r1.first_connect_start_ms = Some(1000);
    r1.last_connect_done_ms = Some(1500);
    r1.first_delivery_ms = Some(2000);
    r1.last_delivery_ms = Some(2500);
    r1.samples = vec!["viewer 3: duplicate: seq 4 again".into()];
    let mut r2 = r1.clone();
    r2.worker = 1;
    r2.last_connect_done_ms = Some(2000);
    r2.last_delivery_ms = Some(3000);
    let info = RunInfo {
        system: "matchstream",
        protocol: "v2".into(),
        viewers: 25,
        workers: 3,
        concurrency: 8,
        hold: false,
        latency_resolution_ms: 1,
        elapsed_ms: 4000,
        all_connected_after_ms: None,
    };
    let s = Summary::build(info, &[r1, r2], &[(2, 5)]);
    assert_eq!(s.complete, 18);
    assert_eq!(s.failed, 2 + 5);
    assert_eq!(s.failures.get(Cause::WorkerLost), 5);
    assert_eq!(s.paths.0[0].viewers, 20);
    assert_eq!(s.connects_per_s, 20.0); // 20 connects over 1 s
    assert_eq!(s.deliveries_per_s, 2000.0); // 2000 deliveries over 1 s
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["failures"]["duplicate"], 2);
    assert_eq!(json["failures"]["refused"], 0);
    assert_eq!(json["paths"]["watch"]["complete"], 18);
    assert!(s.text().contains("duplicate 2, worker_lost 5"), "{}", s.text());
    let back: CauseCounts = serde_json::from_value(json["failures"].clone()).unwrap();
    assert_eq!(back, s.failures);
    assert_eq!(json["resumes"], 0);
    assert!(json["drop_first_ms"].is_null() && json["resume_last_ms"].is_null());
    assert!(!s.text().contains("resumed"), "{}", s.text());
}

#[test]
fn resumes_add_up_from_the_first_drop_to_the_last_catch_up() {
    let info = || RunInfo {
        system: "matchstream",
        protocol: "v2".into(),
        viewers: 30,
        workers: 2,
        concurrency: 8,
        hold: true,
        latency_resolution_ms: 1,
        elapsed_ms: 9000,
        all_connected_after_ms: Some(100),
    };
    let r1 = WorkerReport {
        resumes: 12,
        resumed_viewers: 10,
        drop_first_ms: Some(5_000),
        resume_last_ms: Some(5_900),
        drops_at: vec![(5_000, 4), (5_100, 8)],
        resumed_to: vec![("127.0.0.1:7001".into(), 7), ("127.0.0.1:7002".into(), 5)],
        ..Default::default()
    };
    let r2 = WorkerReport {
        worker: 1,
        resumes: 5,
        resumed_viewers: 5,
        drop_first_ms: Some(5_010),
        resume_last_ms: Some(6_250),
        drops_at: vec![(5_000, 1), (5_900, 4)],
        resumes_at: vec![(6_000, 5)],
        resumed_to: vec![("127.0.0.1:7002".into(), 5)],
        ..Default::default()
    };
    let quiet = WorkerReport { worker: 2, ..Default::default() };
    let s = Summary::build(info(), &[r1, r2, quiet], &[]);
    assert_eq!((s.resumes, s.resumed_viewers), (17, 15));
    assert_eq!((s.drop_first_ms, s.resume_last_ms), (Some(5_000), Some(6_250)));
    // Drops add up per 100 ms slot, reconnects per address, across workers.
    assert_eq!(s.drops_at, vec![(5_000, 5), (5_100, 8), (5_900, 4)]);
    assert_eq!(s.resumes_at, vec![(6_000, 5)]);
    let to: Vec<(&str, u64)> = s.resumed_to.iter().map(|(a, n)| (a.as_str(), *n)).collect();
    assert_eq!(to, vec![("127.0.0.1:7001", 7), ("127.0.0.1:7002", 10)]);
    let text = s.text();
    assert!(text.contains("17 drops over 1000 ms"), "{text}");
    assert!(text.contains("reconnects landed on: 127.0.0.1:7001 7, 127.0.0.1:7002 10"), "{text}");
    assert!(
        text.contains(
            "resumed 15 viewers (17 reconnects); the last caught up 1250 ms after the first drop"
        ),
        "{text}"
    );
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["resumes"], 17);
    assert_eq!(json["drop_first_ms"], 5_000);
    assert_eq!(json["resume_last_ms"], 6_250);
    assert_eq!(json["drops_at"][2], serde_json::json!([5_900, 4]));
    assert_eq!(json["resumed_to"]["127.0.0.1:7002"], 10);
    // Reports travel between processes as JSON.
    let back: WorkerReport = serde_json::from_str(
        &serde_json::to_string(&WorkerReport {
            resumes: 3,
            drop_first_ms: Some(1),
            ..Default::default()
        })
        .unwrap(),
    )
    .unwrap();
    assert_eq!((back.resumes, back.drop_first_ms, back.resume_last_ms), (3, Some(1), None));
    // Drops that no viewer came back from say so.
    let lost = WorkerReport { drop_first_ms: Some(5_000), ..Default::default() };
    let text = Summary::build(info(), &[lost], &[]).text();
    assert!(text.contains("no viewer resumed"), "{text}");
}
